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
    """

    def __init__(self, code: Code, message: str | None = None, *, field: str | None = None) -> None:
        self.code = code
        self.message = message or _MESSAGES.get(code, code.value.lower())
        self.field = field
        super().__init__(f"{code.value}: {self.message}")

    def event(self) -> dict[str, str]:
        """The ``error`` event payload."""
        body = {"code": self.code.value, "message": self.message}
        if self.field is not None and self.code is Code.INVALID_PAYLOAD:
            body["field"] = self.field
        return body

    def ack(self) -> dict[str, object]:
        """The failure ack."""
        body: dict[str, object] = {
            "success": False,
            "error": self.code.value,
            "message": self.message,
        }
        if self.field is not None and self.code is Code.INVALID_PAYLOAD:
            body["field"] = self.field
        return body
