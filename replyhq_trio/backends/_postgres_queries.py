"""The PostgreSQL store's units of work on apps, conversations and messages: each one
asyncio coroutine of one statement where it can be, run once through the bridge (see
:mod:`.postgres`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ..ports import (
    Conversation,
    InvalidCursor,
    Message,
    MessageStatus,
    StoreError,
    UnknownApp,
    UnknownConversation,
    UnknownMessage,
)
from . import _postgres_pool as pg
from ._common import (
    STATUS_RANK,
    NewMessage,
    conversation_value,
    message_id,
    message_value,
    one_line,
)

MESSAGE_COLUMNS = "seq, local_id, conversation_id, body, sender, status, created_at"
CONVERSATION_COLUMNS = "id, app_id, device_id, created_at, updated_at, last_message_seq"
STATUS_RANK_SQL = "CASE status WHEN 'sent' THEN 0 WHEN 'delivered' THEN 1 ELSE 2 END"


def message(row: Any) -> Message:
    return message_value(
        seq=row["seq"],
        local_id=row["local_id"],
        conversation_id=row["conversation_id"],
        body=row["body"],
        sender=row["sender"],
        status=row["status"],
        created_at=row["created_at"],
    )


def conversation(row: Any) -> Conversation:
    return conversation_value(
        id=row["id"],
        app_id=row["app_id"],
        device_id=row["device_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_message_seq=row["last_message_seq"],
    )


# One statement, so one implicit transaction: nothing to roll back (no round trip to
# wait for) when the call is cut short.
CREATE_APP = """
WITH app AS (
    INSERT INTO apps (id, name, api_key_hash) VALUES ($1, $2, $3) RETURNING id, created_at
), token AS (
    INSERT INTO admin_tokens (token_hash, app_id, created_at)
    SELECT $4, id, created_at FROM app
)
SELECT created_at FROM app
"""


async def unit_create_app(
    pool: pg.Connections, app_id: str, name: str, key_hash: str, token_hash: str
) -> datetime:
    created_at: datetime = await pool.fetchval(CREATE_APP, app_id, name, key_hash, token_hash)
    return created_at


async def unit_count_apps(pool: pg.Connections) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM apps")
    return count


async def unit_api_key_hash(pool: pg.Connections, app_id: str) -> str | None:
    found: str | None = await pool.fetchval("SELECT api_key_hash FROM apps WHERE id = $1", app_id)
    return found


async def unit_create_admin_token(pool: pg.Connections, app_id: str, token_hash: str) -> None:
    created = await pool.fetchval(
        "INSERT INTO admin_tokens (token_hash, app_id) "
        "SELECT $1, id FROM apps WHERE id = $2 RETURNING true",
        token_hash,
        app_id,
    )
    if created is None:
        raise UnknownApp(f"no app {app_id!r}")


async def unit_revoke_admin_token(pool: pg.Connections, token_hash: str) -> bool:
    revoked = await pool.fetchval(
        "UPDATE admin_tokens SET revoked_at = clock_timestamp() "
        "WHERE token_hash = $1 AND revoked_at IS NULL RETURNING true",
        token_hash,
    )
    return revoked is not None


async def unit_live_admin_token(pool: pg.Connections, app_id: str, token_hash: str) -> str | None:
    found: str | None = await pool.fetchval(
        "SELECT token_hash FROM admin_tokens "
        "WHERE token_hash = $1 AND app_id = $2 AND revoked_at IS NULL",
        token_hash,
        app_id,
    )
    return found


async def unit_create_conversation(
    pool: pg.Connections, conversation_id: str, app_id: str, device_id: str
) -> Conversation:
    row = await pool.fetchrow(
        "WITH now AS (SELECT clock_timestamp() AS t) "
        "INSERT INTO conversations (id, app_id, device_id, created_at, updated_at) "
        "SELECT $1, apps.id, $3, now.t, now.t FROM apps, now WHERE apps.id = $2 "
        f"RETURNING {CONVERSATION_COLUMNS}",
        conversation_id,
        app_id,
        device_id,
    )
    if row is None:
        raise UnknownApp(f"no app {app_id!r}")
    return conversation(row)


async def unit_get_conversation(
    pool: pg.Connections, app_id: str, conversation_id: str
) -> Conversation | None:
    row = await pool.fetchrow(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND app_id = $2",
        conversation_id,
        app_id,
    )
    return None if row is None else conversation(row)


async def unit_list_conversations(
    pool: pg.Connections, app_id: str, device_id: str | None, limit: int
) -> list[Conversation]:
    if device_id is None:
        rows = await pool.fetch(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE app_id = $1 "
            "ORDER BY updated_at DESC, id DESC LIMIT $2",
            app_id,
            limit,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations "
            "WHERE app_id = $1 AND device_id = $2 ORDER BY updated_at DESC, id DESC LIMIT $3",
            app_id,
            device_id,
            limit,
        )
    return [conversation(row) for row in rows]


# One statement, so one implicit transaction (one commit, no BEGIN or COMMIT round
# trips) for a whole batch of add_message calls: lock the conversations (in id order),
# insert the messages (seqs drawn in queue order, under the locks), move each
# conversation's updated_at and last_message_seq once. $1-$4: the jobs (the first of
# each key, in queue order); $5: their distinct conversation ids. Returns the inserted
# rows, then one row per conversation that exists (seq NULL). Replays are not read back
# here: joining the batch with all of ``messages`` invites a plan that scans the table
# (a generic plan cached while it was small), slower with every batch; they are read by
# key, separately, when there are any. See the module docstring.
ADD_MESSAGES = f"""
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        WITH ORDINALITY AS b (conversation_id, local_id, body, sender, position)
),
locked AS MATERIALIZED (
    SELECT id FROM conversations WHERE id = ANY ($5::text[]) ORDER BY id FOR NO KEY UPDATE
),
inserted AS (
    INSERT INTO messages (conversation_id, local_id, body, sender, created_at)
    SELECT b.conversation_id, b.local_id, b.body, b.sender, clock_timestamp()
    FROM batch AS b
    WHERE b.conversation_id IN (SELECT id FROM locked)
    ORDER BY b.position
    ON CONFLICT (conversation_id, local_id) DO NOTHING
    RETURNING {MESSAGE_COLUMNS}
),
latest AS (
    UPDATE conversations AS c
    SET updated_at = last.created_at, last_message_seq = last.seq
    FROM (
        SELECT DISTINCT ON (conversation_id) conversation_id, seq, created_at
        FROM inserted
        ORDER BY conversation_id, seq DESC
    ) AS last
    WHERE c.id = last.conversation_id AND c.id = ANY ($5::text[])
)
SELECT {MESSAGE_COLUMNS} FROM inserted
UNION ALL
SELECT NULL, NULL, id, NULL, NULL, NULL, NULL FROM locked
"""

# The messages already stored under some keys (a superset: filtered by the caller).
FIND_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages "
    "WHERE conversation_id = ANY ($1::text[]) AND local_id = ANY ($2::text[])"
)

#: What the batch function gets back for each job: the stored row and whether this job
#: created it, or the error for that job alone.
_Outcome = tuple[Any, bool] | StoreError


async def add_messages(con: asyncpg.Connection, jobs: list[NewMessage]) -> list[_Outcome]:
    """The batch statement for ``jobs`` (distinct keys), then, only if some of them
    were already stored (replays), one more to read those."""
    conversation_ids = [job.conversation_id for job in jobs]
    rows = await con.fetch(
        ADD_MESSAGES,
        conversation_ids,
        [job.local_id for job in jobs],
        [job.body for job in jobs],
        [job.sender for job in jobs],
        sorted(set(conversation_ids)),
    )
    known: set[str] = set()
    found: dict[tuple[str, str], tuple[Any, bool]] = {}
    for row in rows:
        if row["seq"] is None:
            known.add(row["conversation_id"])
        else:
            found[row["conversation_id"], row["local_id"]] = (row, True)
    # In a known conversation and not inserted: the key was taken, by a message that
    # committed before the INSERT (a replay). It is read in a statement of its own:
    # the batch statement's snapshot may predate it (taken before the lock waits).
    replays = {
        (job.conversation_id, job.local_id)
        for job in jobs
        if job.conversation_id in known and (job.conversation_id, job.local_id) not in found
    }
    if replays:
        for row in await con.fetch(
            FIND_MESSAGES,
            sorted({conversation_id for conversation_id, _ in replays}),
            sorted({local_id for _, local_id in replays}),
        ):
            key = (row["conversation_id"], row["local_id"])
            if key in replays:
                found[key] = (row, False)
    outcomes: list[_Outcome] = []
    for job in jobs:
        outcome = found.get((job.conversation_id, job.local_id))
        if outcome is not None:
            outcomes.append(outcome)
        elif job.conversation_id not in known:
            outcomes.append(UnknownConversation(f"no conversation {job.conversation_id!r}"))
        else:  # cannot happen: the INSERT neither stored it nor met a conflict
            outcomes.append(StoreError(f"message {job.local_id!r} was neither stored nor found"))
    return outcomes


async def unit_add_messages(pool: pg.Connections, jobs: list[NewMessage]) -> list[_Outcome]:
    async with pool.acquire() as con:
        try:
            return await add_messages(con, jobs)
        except asyncpg.PostgresError as exc:
            if len(jobs) == 1 or isinstance(exc, pg.UNAVAILABLE):
                raise
        # One job broke the whole statement (e.g. a local_id too long for the unique
        # index): run them one by one, so that it fails alone.
        outcomes: list[_Outcome] = []
        for job in jobs:
            try:
                outcomes.extend(await add_messages(con, [job]))
            except asyncpg.PostgresError as exc:
                if isinstance(exc, pg.UNAVAILABLE):
                    raise
                outcomes.append(StoreError(f"PostgreSQL rejected a statement: {one_line(exc)}"))
        return outcomes


# One statement: the cursor's check and the page. No row: the cursor is not a message of
# the conversation; one row of NULLs: an empty page.
LIST_MESSAGES = f"""
SELECT {", ".join("m." + c for c in MESSAGE_COLUMNS.split(", "))}
FROM (
    SELECT WHERE $4::boolean
        OR EXISTS (SELECT FROM messages WHERE seq = $2 AND conversation_id = $1)
) AS cursor
LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE conversation_id = $1 AND seq > $2
    ORDER BY seq
    LIMIT $3
) AS m ON true
ORDER BY m.seq
"""


async def unit_list_messages(
    pool: pg.Connections, conversation_id: str, after: str | None, after_seq: int, limit: int
) -> tuple[list[Message], bool]:
    rows = await pool.fetch(LIST_MESSAGES, conversation_id, after_seq, limit + 1, after is None)
    if not rows:
        raise InvalidCursor(f"{after!r} is not a message of {conversation_id!r}")
    if rows[0]["seq"] is None:
        return [], False
    return [message(row) for row in rows[:limit]], len(rows) > limit


# One statement: the move forward, or (when the status is already there or beyond) the
# message as it is.
SET_STATUS = f"""
WITH moved AS (
    UPDATE messages SET status = $3
    WHERE seq = $1 AND conversation_id = $2 AND {STATUS_RANK_SQL} < $4
        AND sender IS DISTINCT FROM $5::text
    RETURNING {MESSAGE_COLUMNS}
)
SELECT true AS changed, {MESSAGE_COLUMNS} FROM moved
UNION ALL
SELECT false, {MESSAGE_COLUMNS} FROM messages
WHERE seq = $1 AND conversation_id = $2 AND NOT EXISTS (SELECT FROM moved)
"""


async def unit_set_status(
    pool: pg.Connections,
    conversation_id: str,
    seq: int,
    status: MessageStatus,
    by: str | None,
) -> tuple[Message, bool]:
    rank = STATUS_RANK[status]
    async with pool.acquire() as con:
        row = await con.fetchrow(SET_STATUS, seq, conversation_id, status.value, rank, by)
        unchanged = row is not None and not row["changed"] and row["sender"] != by
        if unchanged and STATUS_RANK[MessageStatus(row["status"])] < rank:
            # Another transaction moved it past ``status`` while the UPDATE waited for
            # it: this statement's snapshot shows it from before. Read it as it is now.
            row = await con.fetchrow(
                f"SELECT false AS changed, {MESSAGE_COLUMNS} FROM messages "
                "WHERE seq = $1 AND conversation_id = $2",
                seq,
                conversation_id,
            )
    if row is None:
        raise UnknownMessage(f"no message {message_id(seq)!r} in {conversation_id!r}")
    return message(row), bool(row["changed"])
