"""What both stores share: ids, secrets, the status order, value construction.

Pure functions, no I/O. The formats are part of the contract (CONTRACT.md, REST):
message ids sort in creation order as plain strings across the whole store, so they
are ``msg_`` + the store-wide sequence number zero-padded to 20 digits (a PostgreSQL
``bigint`` has at most 19).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

import attrs

from ..ports import Conversation, Message, MessageStatus, Sender, StoreError

__all__ = [
    "STATUS_RANK",
    "NewMessage",
    "conversation_value",
    "first_of_each",
    "hash_secret",
    "message_id",
    "message_value",
    "new_admin_token",
    "new_api_key",
    "new_app_id",
    "new_conversation_id",
    "one_line",
    "parse_message_id",
    "require_text",
    "secret_matches",
    "storable",
    "utc_now",
]

_MESSAGE_ID = re.compile(r"msg_([0-9]{20})", re.ASCII)

#: Statuses only move forward: a status may replace another of a lower rank.
STATUS_RANK: dict[MessageStatus, int] = {
    MessageStatus.SENT: 0,
    MessageStatus.DELIVERED: 1,
    MessageStatus.READ: 2,
}

_MAX_SEQ = 2**63 - 1  # SQLite INTEGER and PostgreSQL bigint

# A digest compared against when the app is unknown, so that an unknown app id costs
# the same comparison as a wrong key.
_NO_DIGEST = "0" * 64


def one_line(exc: BaseException) -> str:
    """An exception as one line of a log or an error message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_app_id() -> str:
    return "app_" + secrets.token_hex(8)


def new_conversation_id() -> str:
    return "conv_" + secrets.token_hex(10)


def new_api_key() -> str:
    """A client API key: 32 random bytes, urlsafe base64, with a readable prefix."""
    return "rk_" + secrets.token_urlsafe(32)


def new_admin_token() -> str:
    """An admin token: 32 random bytes, urlsafe base64, with a readable prefix."""
    return "rat_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What is stored for a key or token: its SHA-256, hex. The secrets carry 256 bits
    of randomness, so a fast unsalted hash is enough (no password stretching needed)."""
    # surrogatepass: any str hashes (a lone surrogate cannot be a real key anyway)
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, in constant time; False for None."""
    expected = _NO_DIGEST if stored_hash is None else stored_hash
    same = hmac.compare_digest(hash_secret(secret), expected)
    return same and stored_hash is not None


def storable(*values: str) -> bool:
    """Whether both stores can hold these strings: PostgreSQL text cannot contain
    U+0000, and neither store can encode a lone surrogate. An identifier that is not
    storable names nothing stored (a lookup with it finds nothing)."""
    for value in values:
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def require_text(field: str, value: str) -> None:
    """Refuse text that a store cannot hold, the same way in both stores.

    Raises:
        StoreError: naming the field (the caller's input was invalid; nothing stored).
    """
    if not storable(value):
        raise StoreError(f"{field} contains U+0000 or a lone surrogate: the store cannot hold it")


def message_id(seq: int) -> str:
    return f"msg_{seq:020d}"


def parse_message_id(value: str) -> int | None:
    """The sequence number behind a message id, or None if ``value`` is not one (20
    digits can exceed a 64-bit integer, which no stored seq does)."""
    match = _MESSAGE_ID.fullmatch(value)
    if match is None:
        return None
    seq = int(match.group(1))
    return seq if seq <= _MAX_SEQ else None


def message_value(
    *,
    seq: int,
    local_id: str,
    conversation_id: str,
    body: str,
    sender: str,
    status: str,
    created_at: datetime,
) -> Message:
    return Message(
        id=message_id(seq),
        local_id=local_id,
        conversation_id=conversation_id,
        body=body,
        sender=Sender(sender),
        status=MessageStatus(status),
        created_at=created_at,
    )


def conversation_value(
    *,
    id: str,
    app_id: str,
    device_id: str,
    created_at: datetime,
    updated_at: datetime,
    last_message_seq: int | None,
) -> Conversation:
    return Conversation(
        id=id,
        app_id=app_id,
        device_id=device_id,
        created_at=created_at,
        updated_at=updated_at,
        last_message_id=None if last_message_seq is None else message_id(last_message_seq),
    )


@attrs.frozen
class NewMessage:
    """An ``add_message`` call waiting in a group-commit queue (its text already
    checked with :func:`require_text`)."""

    conversation_id: str
    local_id: str
    body: str
    sender: str  # Sender.value


def first_of_each(jobs: list[NewMessage]) -> tuple[list[NewMessage], list[int]]:
    """The jobs of a batch to insert, and for each job the index of the one that stands
    for it: the first, in queue order, with its ``(conversation_id, local_id)``. The
    others are replays of it (``created`` is False for them)."""
    first: dict[tuple[str, str], int] = {}
    unique: list[NewMessage] = []
    slots: list[int] = []
    for job in jobs:
        key = (job.conversation_id, job.local_id)
        slot = first.get(key)
        if slot is None:
            slot = first[key] = len(unique)
            unique.append(job)
        slots.append(slot)
    return unique, slots
