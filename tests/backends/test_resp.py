"""RESP2 as the backplane speaks it: replies split anywhere parse the same, and a real
Redis answers commands and delivers pub/sub pushes through :class:`RespConnection`."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from replyhq_trio.backends._resp import (
    Address,
    Reply,
    RespConnection,
    RespError,
    RespReader,
    encode_command,
    parse_redis_url,
)


def _encode(reply: Reply) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, RespError):
        return b"-" + str(reply).encode() + b"\r\n"
    if isinstance(reply, str):
        return b"+" + reply.encode() + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(_encode(item) for item in reply)


_simple = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=20
)
_replies = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=64) | _simple,
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@given(st.lists(_replies, max_size=6), st.lists(st.integers(1, 7), max_size=40))
def test_replies_split_anywhere_parse_the_same(replies: list[Reply], cuts: list[int]) -> None:
    data = b"".join(_encode(reply) for reply in replies)
    reader = RespReader()
    got: list[Reply] = []
    position = 0
    for cut in cuts:
        reader.feed(data[position : position + cut])
        position += cut
        got += reader.replies()
    reader.feed(data[position:])
    got += reader.replies()
    assert got == replies


def test_error_replies_and_nil_arrays() -> None:
    reader = RespReader()
    reader.feed(b"-ERR unknown command\r\n*-1\r\n*2\r\n$-1\r\n:7\r\n")
    error, nil, array = reader.replies()
    assert isinstance(error, RespError)
    assert str(error) == "ERR unknown command"
    assert nil is None
    assert array == [None, 7]


@pytest.mark.parametrize("garbage", [b"?what\r\n", b"$-5\r\n", b"*-2\r\n"])
def test_what_is_not_resp_is_refused(garbage: bytes) -> None:
    reader = RespReader()
    reader.feed(garbage)
    with pytest.raises(RespError):
        reader.replies()


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command("PUBLISH", "ch", b"\x00\xff", 3) == (
        b"*4\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\n\x00\xff\r\n$1\r\n3\r\n"
    )


def test_urls() -> None:
    assert parse_redis_url("redis://127.0.0.1:6380/2") == Address(port=6380)
    secret = parse_redis_url("rediss://me:p%40ss@cache.example:6390")
    assert (secret.host, secret.tls, secret.username, secret.password) == (
        "cache.example",
        True,
        "me",
        "p@ss",
    )
    assert "p@ss" not in repr(secret)
    assert parse_redis_url("unix:///run/redis.sock").unix_path == "/run/redis.sock"
    with pytest.raises(ValueError, match="expected redis://"):
        parse_redis_url("http://x")


async def test_pushes_from_a_real_redis(redis_url: str) -> None:
    address = parse_redis_url(redis_url)
    with trio.fail_after(10):
        subscriber = await RespConnection.open(address, name="test-sub")
        publisher = await RespConnection.open(address)
        try:
            await subscriber.send(encode_command("SUBSCRIBE", "resp-test-channel"))
            assert await subscriber.read() == [b"subscribe", b"resp-test-channel", 1]
            payload = bytes(range(256)) * 40  # binary, and more than one read
            await publisher.send(
                encode_command("PUBLISH", "resp-test-channel", payload) + encode_command("PING")
            )
            assert await publisher.read() == 1
            assert await publisher.read() == "PONG"
            assert await subscriber.read() == [b"message", b"resp-test-channel", payload]
            await publisher.send(encode_command("NO-SUCH-COMMAND"))
            assert isinstance(await publisher.read(), RespError)
        finally:
            await subscriber.aclose()
            await publisher.aclose()
