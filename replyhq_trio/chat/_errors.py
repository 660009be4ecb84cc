"""The error codes of the contract (CONTRACT.md "Errors") and how they are raised."""

from __future__ import annotations

import enum

__all__ = ["ChatError", "Code"]


class Code(enum.StrEnum):
    MISSING_PARAMS = "MISSING_PARAMS"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    RATE_LIMITED = "RATE_LIMITED"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    UNKNOWN_EVENT = "UNKNOWN_EVENT"
    CONVERSATION_NOT_FOUND = "CONVERSATION_NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    AUTH_EXPIRED = "AUTH_EXPIRED"
    INVALID_CURSOR = "INVALID_CURSOR"


_MESSAGES = {
    Code.MISSING_PARAMS: "the handshake auth is missing or malformed",
    Code.INVALID_CREDENTIALS: "unknown app or wrong credentials",
    Code.INVALID_PAYLOAD: "the payload does not match the contract",
    Code.UNKNOWN_EVENT: "this namespace has no such event",
    Code.CONVERSATION_NOT_FOUND: "no such conversation here",
    Code.FORBIDDEN: "that belongs to another app",
    Code.STORE_UNAVAILABLE: "the store is unavailable; nothing was stored, retry later",
    Code.INVALID_CURSOR: "the cursor is not a message of this conversation",
}


class ChatError(Exception):
    """An error a client is told about: in its ack, an ``error`` event, or an HTTP body.

    Attributes:
        code: The contract's code.
        field: The failing property, for INVALID_PAYLOAD.
        retry_after_ms: When to retry, for RATE_LIMITED.
    """

    def __init__(
        self,
        code: Code,
        message: str | None = None,
        *,
        field: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        self.code = code
        self.message = message or _MESSAGES.get(code, code.value.lower())
        self.field = field
        self.retry_after_ms = retry_after_ms
        super().__init__(f"{code.value}: {self.message}")

    def details(self) -> dict[str, object]:
        """``field`` and ``retry_after_ms``, each with the code it goes with only."""
        extra: dict[str, object] = {}
        if self.field is not None and self.code is Code.INVALID_PAYLOAD:
            extra["field"] = self.field
        if self.retry_after_ms is not None and self.code is Code.RATE_LIMITED:
            extra["retry_after_ms"] = self.retry_after_ms
        return extra

    def event(self) -> dict[str, object]:
        """The ``error`` event payload."""
        return {"code": self.code.value, "message": self.message, **self.details()}

    def ack(self) -> dict[str, object]:
        """The failure ack."""
        return {
            "success": False,
            "error": self.code.value,
            "message": self.message,
            **self.details(),
        }
