"""Hypothesis strategies for protocol values, shared by the property tests and the fuzzer."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from replyhq_trio.sansio.socketio import RESERVED_EVENT_NAMES, SocketPacket, SocketPacketType

# JSON scalars as JavaScript produces them: integers within 2**53, finite floats.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def json_values_with_bytes() -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars | st.binary(max_size=64),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )


namespaces = st.just("/") | st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=","),
    min_size=1,
    max_size=20,
).map(lambda tail: "/" + tail)

event_names = st.text(max_size=20).filter(lambda name: name not in RESERVED_EVENT_NAMES)
ack_ids = st.none() | st.integers(min_value=0, max_value=10**15)


@st.composite
def socket_packets(draw: st.DrawFn) -> SocketPacket:
    """A valid packet with its plain type (binary data makes it BINARY_* on the wire)."""
    kind = draw(st.sampled_from(list(SocketPacketType)))
    namespace = draw(namespaces)
    if kind in (SocketPacketType.EVENT, SocketPacketType.BINARY_EVENT):
        args = draw(st.lists(json_values_with_bytes(), max_size=4))
        data: Any = [draw(event_names), *args]
        return SocketPacket(
            type=SocketPacketType.EVENT, namespace=namespace, data=data, id=draw(ack_ids)
        )
    if kind in (SocketPacketType.ACK, SocketPacketType.BINARY_ACK):
        data = draw(st.lists(json_values_with_bytes(), max_size=4))
        ack_id = draw(st.integers(min_value=0, max_value=10**15))
        return SocketPacket(type=SocketPacketType.ACK, namespace=namespace, data=data, id=ack_id)
    if kind is SocketPacketType.CONNECT:
        auth = draw(st.none() | st.dictionaries(st.text(max_size=8), json_values(), max_size=4))
        return SocketPacket(type=kind, namespace=namespace, data=auth)
    if kind is SocketPacketType.CONNECT_ERROR:
        body = {"message": draw(st.text(max_size=20))}
        return SocketPacket(type=kind, namespace=namespace, data=body)
    return SocketPacket(type=SocketPacketType.DISCONNECT, namespace=namespace)
