"""The wire contract of ``protocol/``, loaded once: payload validators by event.

The server validates every incoming payload with the same JSON Schemas that SDK
authors read (``protocol/schemas/``), so the contract cannot drift from the code.
Validation is compiled (jsonschema-rs): about 0.4 µs for a typical payload.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema_rs

__all__ = ["PROTOCOL_DIR", "Contract", "Violation"]

#: The language-neutral contract, beside the package in the source tree.
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
_BASE_URI = "https://replyhq.dev/protocol/schemas/"


class Violation(Exception):
    """A payload failed its schema.

    Attributes:
        field: The first failing property; None when the payload as a whole is wrong
            (not an object, or missing).
    """

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _refuse(uri: str) -> Any:
    raise ValueError(f"schema {uri!r} is not part of protocol/schemas")


class Contract:
    """Validators for the payloads of ``protocol/schemas/index.json``."""

    def __init__(self, root: Path = PROTOCOL_DIR) -> None:
        schemas = root / "schemas"
        self._docs = {
            path.relative_to(schemas).as_posix(): json.loads(path.read_text(encoding="utf-8"))
            for path in schemas.rglob("*.schema.json")
        }
        self._registry = jsonschema_rs.Registry(
            [(_BASE_URI + name, doc) for name, doc in self._docs.items()], retriever=_refuse
        )
        self.index: dict[str, Any] = json.loads((schemas / "index.json").read_text("utf-8"))
        self.version = (root / "VERSION").read_text(encoding="utf-8").strip()

    @functools.cache  # noqa: B019 - one Contract per process; the cache lives as long
    def validator(self, schema: str) -> jsonschema_rs.Validator:
        return jsonschema_rs.Draft202012Validator(
            self._docs[schema],
            registry=self._registry,
            retriever=_refuse,
            validate_formats=True,
        )

    @functools.cache  # noqa: B019 - as above
    def definition(self, name: str) -> jsonschema_rs.Validator:
        """A validator of one of ``common.schema.json``'s ``$defs`` (``device_id``...)."""
        return jsonschema_rs.Draft202012Validator(
            {"$ref": f"{_BASE_URI}common.schema.json#/$defs/{name}"},
            registry=self._registry,
            retriever=_refuse,
            validate_formats=True,
        )

    def incoming(self, namespace: str, event: str) -> str | None:
        """The payload schema of a client-to-server event, or None if it has none.

        Raises:
            KeyError: the namespace has no such event.
        """
        entry = self.index[namespace.strip("/")]["client_to_server"][event]
        schema: str | None = entry["payload"]
        return schema

    def events(self, namespace: str) -> frozenset[str]:
        return frozenset(self.index[namespace.strip("/")]["client_to_server"])

    def event_names(self, direction: str) -> frozenset[str]:
        """The events of every namespace going ``client_to_server`` or
        ``server_to_client`` (the names metrics count by name)."""
        return frozenset(
            name
            for key, namespace in self.index.items()
            if key != "rest"
            for name in namespace.get(direction, {})
        )

    def check(self, schema: str, instance: Any) -> None:
        """Raise :class:`Violation` naming the first failing field."""
        validator = self.validator(schema)
        if validator.is_valid(instance):
            return
        error = next(iter(validator.iter_errors(instance)))
        prop = getattr(error.kind, "property", None)
        field: str | None
        if isinstance(prop, str):
            field = prop
        elif error.instance_path:
            field = ".".join(str(part) for part in error.instance_path)
        else:
            field = None
        raise Violation(field, _describe(error, field))


def _describe(error: jsonschema_rs.ValidationError, field: str | None) -> str:
    """A short message for a failed check. The library's own message quotes the value,
    which can be a megabyte of the client's text: never echo it."""
    kind = error.kind
    kinds = jsonschema_rs.ValidationErrorKind
    where = field or "the payload"
    if isinstance(kind, kinds.Required):
        return f"{field} is required"
    if isinstance(kind, kinds.Type):
        return f"{where} must be of type {' or '.join(map(str, kind.types))}"
    if isinstance(kind, kinds.MaxLength):
        return f"{where} is longer than {kind.limit} characters"
    if isinstance(kind, kinds.MinLength):
        return f"{where} is shorter than {kind.limit} characters"
    if isinstance(kind, kinds.Pattern):
        return (
            f"{where} must not be blank"
            if kind.pattern == "\\S"
            else (f"{where} does not match {kind.pattern}")
        )
    if isinstance(kind, kinds.Not):
        return f"{where} contains a character that is not allowed"
    return f"{where} is not valid ({type(kind).__name__})"
