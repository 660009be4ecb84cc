"""The SQLite store's rows and its batched writes: times and values read back from rows,
and a group commit's messages inserted in one transaction (each in a savepoint when one
of them fails), on the store's worker thread (see :mod:`.sqlite`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, cast

from ..ports import (
    Conversation,
    Message,
    StoreError,
    StoreUnavailable,
    UnknownConversation,
)
from ._common import (
    NewMessage,
    conversation_value,
    first_of_each,
    message_value,
    utc_now,
)

MESSAGE_COLUMNS = "seq, local_id, conversation_id, body, sender, status, created_at"
CONVERSATION_COLUMNS = "id, app_id, device_id, created_at, updated_at, last_message_seq"
STATUS_RANK_SQL = "CASE status WHEN 'sent' THEN 0 WHEN 'delivered' THEN 1 ELSE 2 END"


def iso(moment: datetime) -> str:
    # Fixed width, UTC, "+00:00": text order is time order.
    return moment.isoformat(timespec="microseconds")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def message(row: sqlite3.Row) -> Message:
    return message_value(
        seq=row["seq"],
        local_id=row["local_id"],
        conversation_id=row["conversation_id"],
        body=row["body"],
        sender=row["sender"],
        status=row["status"],
        created_at=when(row["created_at"]),
    )


def conversation(row: sqlite3.Row) -> Conversation:
    return conversation_value(
        id=row["id"],
        app_id=row["app_id"],
        device_id=row["device_id"],
        created_at=when(row["created_at"]),
        updated_at=when(row["updated_at"]),
        last_message_seq=row["last_message_seq"],
    )


#: A queued write: a new message (group-committed with the batch's other new messages,
#: in a few statements) or any function of the connection (run in its own savepoint).
Write = NewMessage | Callable[[sqlite3.Connection], Any]


def item(index: int) -> str:
    """SQL for item ``index`` of the JSON array ``j.value`` (json_extract rather than
    ``->>``, which needs SQLite 3.38)."""
    return f"json_extract(j.value, '$[{index}]')"


# The new messages of a batch go in as ONE JSON text, ``[[conversation_id, local_id,
# body, sender, created_at], ...]`` (the first of each key, in queue order): a statement
# over json_each() is one sqlite3_step() whatever the number of rows, and every step
# releases and re-takes the GIL, which the Trio thread holds most of the time under load
# (a step per row made the worker thread wait for the GIL once per row).
INSERT_MESSAGES = (
    "INSERT INTO messages (conversation_id, local_id, body, sender, status, created_at) "
    f"SELECT {item(0)}, {item(1)}, {item(2)}, {item(3)}, 'sent', {item(4)} "
    f"FROM json_each(?1) AS j WHERE {item(0)} IN (SELECT id FROM conversations) "
    "ORDER BY j.key "
    "ON CONFLICT (conversation_id, local_id) DO NOTHING"
)
# The messages stored under the batch's keys (new or not), as one JSON text.
FIND_MESSAGES = (
    "SELECT json_group_array(json_array(m.seq, m.local_id, m.conversation_id, m.body, "
    "m.sender, m.status, m.created_at)) "
    "FROM json_each(?1) AS j "
    f"JOIN messages AS m ON m.conversation_id = {item(0)} AND m.local_id = {item(1)}"
)
# ``[[conversation_id, updated_at, last_message_seq], ...]``
TOUCH_CONVERSATIONS = (
    f"UPDATE conversations SET updated_at = {item(1)}, last_message_seq = {item(2)} "
    f"FROM json_each(?1) AS j WHERE conversations.id = {item(0)}"
)


def unavailable(exc: sqlite3.Error) -> StoreError:
    """The store error for a sqlite3 error: trouble with the file (locked, I/O, full,
    corrupt, cannot open) is StoreUnavailable; a broken statement is a StoreError."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return StoreError(f"SQLite rejected a statement: {exc}")
    return StoreUnavailable(f"SQLite is unavailable: {exc}")


def in_savepoint(con: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any]) -> Any:
    """In a write transaction: ``work`` alone in a savepoint; its value, or the
    exception it raised (after undoing what it did). A sqlite3 error other than a
    constraint violation propagates: the transaction itself may be gone."""
    con.execute("SAVEPOINT job")
    try:
        value = work(con)
    except Exception as exc:
        if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
            raise
        # this write's own failure (a StoreError, a refused statement, a bug): it is
        # undone alone and the others go on
        con.execute("ROLLBACK TO job")
        con.execute("RELEASE job")
        return unavailable(exc) if isinstance(exc, sqlite3.Error) else exc
    con.execute("RELEASE job")
    return value


def add_messages(con: sqlite3.Connection, jobs: list[NewMessage]) -> list[Any]:
    """In a write transaction: the new messages of a batch in four statements whatever
    their number (each one step of SQLite's, see ``INSERT_MESSAGES``): the highest
    seq so far, one INSERT of every distinct key (in queue order, so that seqs follow
    it; a key already taken is left alone), one SELECT of what is stored under the
    batch's keys (new rows and replays alike), one UPDATE of the conversations that got
    a message. If a row is refused (a constraint), the jobs run again one by one, each
    in a savepoint, so that it fails alone.

    Returns each job's ``(message, created)`` or its exception (UnknownConversation).
    """
    try:
        # No savepoint needed: a statement that fails is undone on its own, and only
        # the INSERT can fail on a row (a constraint), before anything else was done.
        return insert_messages(con, jobs)
    except sqlite3.IntegrityError:
        return [in_savepoint(con, partial(insert_one, job)) for job in jobs]


def insert_one(job: NewMessage, con: sqlite3.Connection) -> tuple[Message, bool]:
    (outcome,) = insert_messages(con, [job])
    if isinstance(outcome, Exception):
        raise outcome
    return cast("tuple[Message, bool]", outcome)


def insert_messages(con: sqlite3.Connection, jobs: list[NewMessage]) -> list[Any]:
    unique, slots = first_of_each(jobs)
    batch = json.dumps(
        [
            [job.conversation_id, job.local_id, job.body, job.sender, iso(utc_now())]
            for job in unique
        ],
        ensure_ascii=False,  # require_text() let no lone surrogate through
    )
    (before,) = con.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
    con.execute(INSERT_MESSAGES, (batch,))
    (stored,) = con.execute(FIND_MESSAGES, (batch,)).fetchone()
    found: dict[tuple[str, str], tuple[Message, bool]] = {}
    latest: dict[str, tuple[int, str]] = {}
    for seq, local_id, conversation_id, body, sender, status, created_at in json.loads(stored):
        # A single writer: the rows past the highest seq before are this INSERT's.
        new = seq > before
        message = message_value(
            seq=seq,
            local_id=local_id,
            conversation_id=conversation_id,
            body=body,
            sender=sender,
            status=status,
            created_at=when(created_at),
        )
        found[conversation_id, local_id] = (message, new)
        if new and seq > latest.get(conversation_id, (0, ""))[0]:
            latest[conversation_id] = (seq, created_at)
    if latest:
        touched = [[conversation, at, seq] for conversation, (seq, at) in latest.items()]
        con.execute(TOUCH_CONVERSATIONS, (json.dumps(touched, ensure_ascii=False),))
    outcomes: list[Any] = []
    replayed: set[int] = set()
    for job, slot in zip(jobs, slots, strict=True):
        outcome = found.get((job.conversation_id, job.local_id))
        if outcome is None:  # neither inserted nor there before: no such conversation
            outcomes.append(UnknownConversation(f"no conversation {job.conversation_id!r}"))
        else:
            message, created = outcome
            outcomes.append((message, created and slot not in replayed))
        replayed.add(slot)
    return outcomes
