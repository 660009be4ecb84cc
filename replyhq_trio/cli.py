"""The ``replyhq-trio`` command: serve, manage apps and admin tokens, migrate.

Mistakes (a bad flag, an unreachable database, a port in use) end with one line on
stderr and a non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import orjson
import trio

from ._version import __version__
from .ports import PresenceUnavailable, StoreError, UnknownApp
from .settings import add_database_argument, add_serve_arguments, settings_from

__all__ = ["main"]

PROG = "replyhq-trio"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the usage is one --help away.
        self.exit(2, f"{self.prog}: error: {message}\n")


class CommandError(Exception):
    """A mistake to report in one line."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="ReplyHQ's realtime chat server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the server")
    add_serve_arguments(serve)

    apps = commands.add_parser("apps", help="manage apps")
    apps_commands = apps.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    create = apps_commands.add_parser("create", help="create an app: prints its credentials once")
    create.add_argument("--name", required=True)
    create.add_argument("--json", action="store_true", help="print JSON")
    add_database_argument(create)

    tokens = commands.add_parser("tokens", help="manage admin tokens")
    token_commands = tokens.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    token_create = token_commands.add_parser("create", help="a new admin token for an app")
    token_create.add_argument("--app-id", required=True)
    token_create.add_argument("--json", action="store_true", help="print JSON")
    add_database_argument(token_create)
    revoke = token_commands.add_parser("revoke", help="revoke an admin token")
    revoke.add_argument("token")
    add_database_argument(revoke)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    add_database_argument(migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None or (args.command in ("apps", "tokens") and args.action is None):
        parser.print_help()
        return 2
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, settings)
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Any) -> int:
    from .app import serve
    from .logs import configure_logging

    if args.command == "serve":
        configure_logging(settings.log_level, settings.log_format)
        return _trio(serve, settings)
    if args.command == "migrate":
        return _trio(_with_store, settings.database_url, _migrate)
    if args.command == "apps":
        return _trio(_with_store, settings.database_url, _apps_create(args.name, args.json))
    if args.action == "create":
        return _trio(_with_store, settings.database_url, _tokens_create(args.app_id, args.json))
    return _trio(_with_store, settings.database_url, _tokens_revoke(args.token))


def _trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> int:
    try:
        result = trio.run(fn, *args)
    except BaseException as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, CommandError):
            raise leaf from None
        if isinstance(leaf, StoreError | PresenceUnavailable | OSError | ValueError):
            raise CommandError(str(leaf) or type(leaf).__name__) from None
        raise
    return result if isinstance(result, int) else 0


def _leaf(exc: BaseException) -> BaseException:
    """The exception inside single-exception groups (Trio nurseries wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


StoreAction = Callable[[Any], Awaitable[int]]


async def _with_store(url: str, action: StoreAction) -> int:
    from .backends import open_asyncio_bridge, open_store

    async with open_asyncio_bridge(), open_store(url, migrate=True) as store:
        return await action(store)


async def _migrate(store: Any) -> int:
    print("the schema is up to date")
    return 0


def _apps_create(name: str, as_json: bool) -> StoreAction:
    async def create(store: Any) -> int:
        from .app import print_new_app

        new = await store.create_app(name)
        if as_json:
            print(
                orjson.dumps(
                    {"app_id": new.app.id, "api_key": new.api_key, "admin_token": new.admin_token}
                ).decode()
            )
        else:
            print_new_app(new, title=f"Created app {name!r}:")
        return 0

    return create


def _tokens_create(app_id: str, as_json: bool) -> StoreAction:
    async def create(store: Any) -> int:
        try:
            token = await store.create_admin_token(app_id)
        except UnknownApp:
            raise CommandError(f"no app {app_id!r}") from None
        print(orjson.dumps({"app_id": app_id, "admin_token": token}).decode() if as_json else token)
        return 0

    return create


def _tokens_revoke(token: str) -> StoreAction:
    async def revoke(store: Any) -> int:
        if not await store.revoke_admin_token(token):
            raise CommandError("no such live admin token")
        print("revoked")
        return 0

    return revoke


if __name__ == "__main__":
    sys.exit(main())
