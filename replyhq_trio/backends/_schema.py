"""The schema, as numbered migrations for each dialect.

A migration is applied once, in its own transaction, together with the row that
records it in ``schema_migrations``; ``migrate()`` applies the missing ones in order.
The two dialects keep the same version numbers and the same tables:

- ``apps``, ``admin_tokens``: secrets are stored as SHA-256 hex, never in the clear.
- ``conversations``: ``last_message_seq`` names the latest message (its public id is
  derived from it), ``updated_at`` is the time of that message (or of the creation).
- ``messages``: ``seq`` is the store-wide creation order and the public id;
  ``UNIQUE (conversation_id, local_id)`` makes sending idempotent; the
  ``(conversation_id, seq)`` index serves cursor paging.

Never edit a migration that has shipped: add the next one.
"""

from __future__ import annotations

import attrs

__all__ = [
    "POSTGRES_CREATE_MIGRATIONS_TABLE",
    "POSTGRES_MIGRATIONS",
    "POSTGRES_MIGRATION_LOCK",
    "SQLITE_CREATE_MIGRATIONS_TABLE",
    "SQLITE_MIGRATIONS",
    "Migration",
]


@attrs.frozen(kw_only=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


SQLITE_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""

POSTGRES_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# SQLite keeps timestamps as ISO 8601 text in UTC with microseconds and a fixed
# "+00:00" offset, so that text order is time order.
SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="apps, admin tokens, conversations, messages",
        statements=(
            """
            CREATE TABLE apps (
                id           TEXT PRIMARY KEY,
                name         TEXT NOT NULL,
                api_key_hash TEXT NOT NULL,
                created_at   TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE admin_tokens (
                token_hash TEXT PRIMARY KEY,
                app_id     TEXT NOT NULL REFERENCES apps (id),
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )
            """,
            "CREATE INDEX admin_tokens_app ON admin_tokens (app_id)",
            """
            CREATE TABLE conversations (
                id               TEXT PRIMARY KEY,
                app_id           TEXT NOT NULL REFERENCES apps (id),
                device_id        TEXT NOT NULL,
                created_at       TEXT NOT NULL,
                updated_at       TEXT NOT NULL,
                last_message_seq INTEGER
            )
            """,
            "CREATE INDEX conversations_app_recent ON conversations (app_id, updated_at, id)",
            """
            CREATE INDEX conversations_device_recent
                ON conversations (app_id, device_id, updated_at, id)
            """,
            # AUTOINCREMENT: a seq is never reused, even after the highest row is deleted.
            """
            CREATE TABLE messages (
                seq             INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id TEXT NOT NULL REFERENCES conversations (id),
                local_id        TEXT NOT NULL,
                body            TEXT NOT NULL,
                sender          TEXT NOT NULL CHECK (sender IN ('user', 'agent', 'system')),
                status          TEXT NOT NULL DEFAULT 'sent'
                                CHECK (status IN ('sent', 'delivered', 'read')),
                created_at      TEXT NOT NULL,
                UNIQUE (conversation_id, local_id)
            )
            """,
            "CREATE INDEX messages_conversation_seq ON messages (conversation_id, seq)",
        ),
    ),
)

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="apps, admin tokens, conversations, messages",
        statements=(
            """
            CREATE TABLE apps (
                id           text PRIMARY KEY,
                name         text NOT NULL,
                api_key_hash text NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """,
            """
            CREATE TABLE admin_tokens (
                token_hash text PRIMARY KEY,
                app_id     text NOT NULL REFERENCES apps (id),
                created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                revoked_at timestamptz
            )
            """,
            "CREATE INDEX admin_tokens_app ON admin_tokens (app_id)",
            """
            CREATE TABLE conversations (
                id               text PRIMARY KEY,
                app_id           text NOT NULL REFERENCES apps (id),
                device_id        text NOT NULL,
                created_at       timestamptz NOT NULL,
                updated_at       timestamptz NOT NULL,
                last_message_seq bigint
            )
            """,
            "CREATE INDEX conversations_app_recent ON conversations (app_id, updated_at, id)",
            """
            CREATE INDEX conversations_device_recent
                ON conversations (app_id, device_id, updated_at, id)
            """,
            # An identity sequence (CACHE 1): values are handed out in increasing order
            # across all sessions. Gaps are possible (rolled-back inserts) and harmless.
            """
            CREATE TABLE messages (
                seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                conversation_id text NOT NULL REFERENCES conversations (id),
                local_id        text NOT NULL,
                body            text NOT NULL,
                sender          text NOT NULL CHECK (sender IN ('user', 'agent', 'system')),
                status          text NOT NULL DEFAULT 'sent'
                                CHECK (status IN ('sent', 'delivered', 'read')),
                created_at      timestamptz NOT NULL,
                UNIQUE (conversation_id, local_id)
            )
            """,
            "CREATE INDEX messages_conversation_seq ON messages (conversation_id, seq)",
        ),
    ),
)

#: The key of the PostgreSQL advisory lock that serialises migrate() across processes
#: (an arbitrary constant, the same in every release).
POSTGRES_MIGRATION_LOCK = 0x2F6B_46E1_9A3C_5D07
