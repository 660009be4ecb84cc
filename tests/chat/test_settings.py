"""Settings come from flags, then ``REPLYHQ_*`` variables, then the defaults; logs are
readable lines or one JSON object per line."""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import attrs
import orjson
import pytest

from replyhq_trio.logs import configure_logging
from replyhq_trio.settings import Settings, add_serve_arguments, settings_from


def _parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(flags))


def test_flags_win_over_variables_which_win_over_defaults() -> None:
    env = {"REPLYHQ_PORT": "4000", "REPLYHQ_HOST": "0.0.0.0", "REPLYHQ_CORS_ORIGINS": "a, b,"}
    settings = settings_from(_parse("--port", "5000"), env)
    assert (settings.port, settings.host, settings.cors_origins) == (5000, "0.0.0.0", ("a", "b"))
    assert settings.database_url == Settings().database_url == "sqlite:///./replyhq.db"
    config = settings_from(_parse("--max-payload", "2048", "--ping-interval", "5"), {})
    server = config.server_config()
    assert (server.protocol.max_payload, server.max_request_body) == (2048, 2048)
    assert server.protocol.ping_interval == 5


@pytest.mark.parametrize(
    ("flags", "env", "complaint"),
    [
        (("--port", "70000"), {}, "port: 70000 is not a TCP port"),
        ((), {"REPLYHQ_PING_TIMEOUT": "soon"}, "ping-timeout: expected a number, got 'soon'"),
        (("--grace-period", "-1"), {}, "grace-period: must not be negative"),
        (("--log-format", "xml"), {}, "log-format: 'xml' is not console or json"),
        ((), {"REPLYHQ_LOG_LEVEL": "loud"}, "log-level: 'loud' is not debug"),
        (("--redis-url", "localhost:6379"), {}, "redis-url: expected redis://"),
        ((), {"REPLYHQ_REDIS_REQUIRED": "maybe"}, "redis-required: expected true or false"),
        (("--node-id", "node one"), {}, "node-id: 1 to 64 letters"),
        (("--limit-messages", "-1"), {}, "limit-messages: must not be negative"),
        ((), {"REPLYHQ_LIMIT_IP_CONNECTS": "lots"}, "limit-ip-connects: expected a number"),
    ],
)
def test_bad_values_are_one_line_errors(
    flags: tuple[str, ...], env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValueError, match="^" + complaint) as raised:
        settings_from(_parse(*flags), env)
    assert "\n" not in str(raised.value)


def test_rate_limits_default_to_the_contracts_and_each_can_be_switched_off() -> None:
    limits = settings_from(_parse(), {}).chat_settings().limits
    assert (limits.messages, limits.typing, limits.connections, limits.connects) == (60, 10, 5, 10)
    assert limits.strikes == 3
    env = {"REPLYHQ_LIMIT_TYPING": "0", "REPLYHQ_LIMIT_MESSAGES": "5"}
    flags = ("--limit-messages", "120", "--limit-ip-connects", "0", "--limit-strikes", "0")
    limits = settings_from(_parse(*flags), env).chat_settings().limits
    assert (limits.messages, limits.typing, limits.connects, limits.strikes) == (120, 0, 0, 0)
    assert limits.connections == 5


def test_redis_is_required_unless_said_optional() -> None:
    assert Settings().redis_url is None
    assert settings_from(_parse("--redis-url", "redis://127.0.0.1:6379/0"), {}).redis_required
    optional = settings_from(_parse("--redis-optional"), {"REPLYHQ_REDIS_REQUIRED": "true"})
    assert optional.redis_required is False  # the flag wins over the variable
    from_env = settings_from(
        _parse(), {"REPLYHQ_REDIS_REQUIRED": "false", "REPLYHQ_NODE_ID": "n-1"}
    )
    assert (from_env.redis_required, from_env.node_id) == (False, "n-1")
    with pytest.raises(SystemExit):  # argparse: the two flags exclude each other
        _parse("--redis-required", "--redis-optional")


def test_json_logs_are_one_object_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", "json")
        logging.getLogger("replyhq_trio.test").info("hello %s", "world")
        logging.getLogger("replyhq_trio.test").debug("not at info")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("replyhq_trio.test").exception("failed")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(entry["level"], entry["message"]) for entry in lines] == [
        ("info", "hello world"),
        ("error", "failed"),
    ]
    assert "RuntimeError: boom" in lines[1]["exception"]
    assert all(entry["logger"] == "replyhq_trio.test" for entry in lines)


def test_a_command_reads_only_its_own_variables() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", dest="database_url", default=None)
    settings = settings_from(
        parser.parse_args([]), {"REPLYHQ_PORT": "abc", "REPLYHQ_DATABASE_URL": "sqlite:///x.db"}
    )
    assert (settings.database_url, settings.port) == ("sqlite:///x.db", 3000)


def test_the_guides_list_every_setting() -> None:
    # docs/deploy.md lists every variable, docs/operating.md every flag.
    root = Path(__file__).resolve().parents[2]
    deploy = (root / "docs" / "deploy.md").read_text()
    operating = (root / "docs" / "operating.md").read_text()
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    for flag in sorted(flags):
        assert f"`{flag}`" in operating, f"docs/operating.md does not list {flag}"
        assert f"`{flag}`" in deploy or flag.startswith("--redis-optional"), flag
    for name in attrs.fields_dict(Settings):
        variable = "REPLYHQ_" + name.upper()
        assert f"`{variable}`" in deploy, f"docs/deploy.md does not list {variable}"
