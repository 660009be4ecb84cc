"""The JSON Schemas of protocol/schemas/, loaded once for the tests that use them.

References between schemas resolve through a local registry; nothing is fetched over
the network (the retriever refuses every URI).
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import jsonschema_rs

SCHEMAS_DIR = pathlib.Path(__file__).resolve().parents[2] / "protocol" / "schemas"
BASE_URI = "https://replyhq.dev/protocol/schemas/"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
COMMON = "common.schema.json"


def _load_json(path: pathlib.Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


SCHEMA_FILES: list[str] = sorted(
    path.relative_to(SCHEMAS_DIR).as_posix() for path in SCHEMAS_DIR.rglob("*.schema.json")
)
DOCS: dict[str, dict[str, Any]] = {rel: _load_json(SCHEMAS_DIR / rel) for rel in SCHEMA_FILES}
INDEX: dict[str, Any] = _load_json(SCHEMAS_DIR / "index.json")
COMMON_DEFS: dict[str, Any] = DOCS[COMMON]["$defs"]


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"schema {uri!r} is not in protocol/schemas; refusing to fetch it")


REGISTRY = jsonschema_rs.Registry(
    [(BASE_URI + rel, doc) for rel, doc in DOCS.items()], retriever=_refuse_retrieval
)


def _compile(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        schema, registry=REGISTRY, retriever=_refuse_retrieval, validate_formats=True
    )


@functools.cache
def validator(rel: str) -> jsonschema_rs.Validator:
    return _compile(DOCS[rel])


@functools.cache
def def_validator(name: str) -> jsonschema_rs.Validator:
    return _compile({"$schema": DRAFT_2020_12, "$ref": f"{BASE_URI}{COMMON}#/$defs/{name}"})
