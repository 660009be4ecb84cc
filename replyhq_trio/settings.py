"""Every setting of ``replyhq-trio serve``: a flag and a ``REPLYHQ_*`` variable each."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .chat import ChatSettings, RateLimits
from .config import ServerConfig
from .sansio import ProtocolConfig

__all__ = ["Settings", "add_database_argument", "add_serve_arguments", "settings_from"]

DEFAULT_DATABASE_URL = "sqlite:///./replyhq.db"


@attrs.frozen(kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    path: str = "/v1/socket.io"
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    redis_required: bool = True
    redis_key_prefix: str = ""
    redis_channel_key: str | None = None
    node_id: str | None = None
    ping_interval: float = 25.0
    ping_timeout: float = 60.0
    max_payload: int = 1_000_000
    cors_origins: tuple[str, ...] = ()
    grace_period: float = 10.0
    log_level: str = "info"
    log_format: str = "console"
    limit_messages: int = 60
    limit_typing: int = 10
    limit_device_connections: int = 5
    limit_ip_connects: int = 10
    limit_strikes: int = 3
    trusted_proxies: tuple[str, ...] = ()

    @property
    def channel_key(self) -> str:
        """The broadcast channels' key (the Socket.IO Redis adapter's ``key``)."""
        if self.redis_channel_key is not None:
            return self.redis_channel_key
        return f"{self.redis_key_prefix}socket.io"

    def server_config(self) -> ServerConfig:
        return ServerConfig(
            host=self.host,
            port=self.port,
            path=self.path,
            protocol=ProtocolConfig(
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                max_payload=self.max_payload,
            ),
            cors_origins=self.cors_origins,
            grace_period=self.grace_period,
            # one size limit for everything a client sends: a REST body too
            max_request_body=self.max_payload,
        )

    def chat_settings(self) -> ChatSettings:
        return ChatSettings(
            trusted_proxies=self.trusted_proxies,
            limits=RateLimits(
                messages=self.limit_messages,
                typing=self.limit_typing,
                connections=self.limit_device_connections,
                connects=self.limit_ip_connects,
                strikes=self.limit_strikes,
            ),
        )


# (flag, attribute, type, help)
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--host", "host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", "port", int, "TCP port (default 3000)"),
    ("--path", "path", str, "Socket.IO path (default /v1/socket.io)"),
    (
        "--redis-url",
        "redis_url",
        str,
        "Redis (redis://HOST:PORT/DB) for presence and sessions shared by many nodes "
        "(default: none, in memory)",
    ),
    (
        "--redis-key-prefix",
        "redis_key_prefix",
        str,
        "put before every Redis key, for deployments that share one Redis (default none)",
    ),
    (
        "--redis-channel-key",
        "redis_channel_key",
        str,
        "the broadcast channels' key, as the Socket.IO Redis adapter's 'key' option of "
        "every node sharing them (default: the key prefix followed by socket.io)",
    ),
    (
        "--node-id",
        "node_id",
        str,
        "this node's name among the nodes sharing Redis (default: a random one)",
    ),
    ("--ping-interval", "ping_interval", float, "seconds between pings (default 25)"),
    ("--ping-timeout", "ping_timeout", float, "seconds to answer a ping (default 60)"),
    ("--max-payload", "max_payload", int, "largest message or REST body, bytes (default 1000000)"),
    (
        "--cors-origins",
        "cors_origins",
        str,
        "comma-separated browser origins allowed ('*' for any)",
    ),
    (
        "--grace-period",
        "grace_period",
        float,
        "seconds clients get to leave at shutdown (default 10)",
    ),
    ("--log-level", "log_level", str, "debug, info, warning or error (default info)"),
    ("--log-format", "log_format", str, "console or json (default console)"),
    (
        "--trusted-proxies",
        "trusted_proxies",
        str,
        "comma-separated addresses or networks of the proxies in front of this server, whose "
        "X-Forwarded-For gives the client's address (default none: never believed)",
    ),
    (
        "--limit-messages",
        "limit_messages",
        int,
        "messages a device may send a minute, 0 for no limit (default 60)",
    ),
    (
        "--limit-typing",
        "limit_typing",
        int,
        "typing:start events a device may send a minute, 0 for no limit (default 10)",
    ),
    (
        "--limit-device-connections",
        "limit_device_connections",
        int,
        "live /client connections a device may have on all nodes, 0 for no limit (default 5)",
    ),
    (
        "--limit-ip-connects",
        "limit_ip_connects",
        int,
        "/client CONNECT attempts an IP address may make a minute, 0 for no limit (default 10)",
    ),
    (
        "--limit-strikes",
        "limit_strikes",
        int,
        "refusals over a limit within a minute that disconnect a socket, 0 never (default 3)",
    ),
]


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        dest="database_url",
        default=None,
        help=f"sqlite:///PATH or postgresql://... (default {DEFAULT_DATABASE_URL}; "
        "env REPLYHQ_DATABASE_URL)",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_argument(parser)
    for flag, dest, kind, help_text in _OPTIONS:
        env = "REPLYHQ_" + dest.upper()
        parser.add_argument(
            flag, dest=dest, type=kind, default=None, help=f"{help_text}; env {env}"
        )
    redis = parser.add_mutually_exclusive_group()
    redis.add_argument(
        "--redis-required",
        dest="redis_required",
        action="store_const",
        const=True,
        default=None,
        help="with --redis-url: an unreachable Redis at start is fatal (the default); "
        "env REPLYHQ_REDIS_REQUIRED=true",
    )
    redis.add_argument(
        "--redis-optional",
        dest="redis_required",
        action="store_const",
        const=False,
        help="with --redis-url: start alone when Redis is unreachable and join it when "
        "it comes back; env REPLYHQ_REDIS_REQUIRED=false",
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Flags first, then ``REPLYHQ_*`` variables, then the defaults; only for the
    settings ``args`` has flags for (the command's own).

    Raises:
        ValueError: a value of the wrong kind or out of range, with a one-line message.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    fields = {field.name: field for field in attrs.fields(Settings)}
    given = vars(args)
    for name in fields:
        if name not in given:
            continue  # not a setting of this command: its variable does not matter here
        value = given[name]
        if value is None:
            raw = env.get("REPLYHQ_" + name.upper())
            if raw is None or raw == "":
                continue
            value = raw
        values[name] = _convert(name, value)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _convert(name: str, value: Any) -> Any:
    kinds: dict[str, Any] = {
        "port": int,
        "ping_interval": float,
        "ping_timeout": float,
        "max_payload": int,
        "grace_period": float,
        "limit_messages": int,
        "limit_typing": int,
        "limit_device_connections": int,
        "limit_ip_connects": int,
        "limit_strikes": int,
    }
    if name == "redis_required":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"redis-required: expected true or false, got {value!r}")
    if name in ("cors_origins", "trusted_proxies"):
        text = value if isinstance(value, str) else ",".join(value)
        return tuple(origin.strip() for origin in text.split(",") if origin.strip())
    kind = kinds.get(name)
    if kind is None:
        return str(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name.replace('_', '-')}: expected a number, got {value!r}") from None


def _validate(settings: Settings) -> None:
    if not 0 <= settings.port <= 65535:
        raise ValueError(f"port: {settings.port} is not a TCP port")
    for name in ("ping_interval", "ping_timeout", "max_payload"):
        if getattr(settings, name) <= 0:
            raise ValueError(f"{name.replace('_', '-')}: must be positive")
    if settings.grace_period < 0:
        raise ValueError("grace-period: must not be negative")
    for name in (
        "limit_messages",
        "limit_typing",
        "limit_device_connections",
        "limit_ip_connects",
        "limit_strikes",
    ):
        if getattr(settings, name) < 0:
            raise ValueError(f"{name.replace('_', '-')}: must not be negative (0: no limit)")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"log-level: {settings.log_level!r} is not debug, info, warning or error")
    if settings.redis_url is not None and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("redis-url: expected redis://HOST:PORT/DB, rediss://... or unix://PATH")
    if settings.node_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", settings.node_id):
        raise ValueError("node-id: 1 to 64 letters, digits, '_', '.' or '-'")
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(
                f"trusted-proxies: {proxy!r} is not an IP address or network"
            ) from None
    if settings.log_format not in ("console", "json"):
        raise ValueError(f"log-format: {settings.log_format!r} is not console or json")
