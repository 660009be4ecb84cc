"""ServerConnection and EngineConnection behaviour beyond the scripted exchanges."""

from __future__ import annotations

import pytest

from replyhq_trio.sansio import (
    Ack,
    CloseConnection,
    Connect,
    ConnectAccepted,
    ConnectionClosed,
    Disconnect,
    DisconnectReason,
    Emit,
    EngineConnection,
    LocalProtocolError,
    Message,
    ProtocolConfig,
    ProtocolError,
    RemoteProtocolError,
    ServerConnection,
    Transport,
    UpgradeState,
    prepare_emit,
)
from replyhq_trio.sansio.websocket import FrameDecoder, Role

CONFIG = ProtocolConfig(ping_interval=25, ping_timeout=20)


def _connected(*namespaces: str, transport: Transport = Transport.WEBSOCKET) -> ServerConnection:
    conn = ServerConnection(sid="s", transport=transport, config=CONFIG, now=0)
    conn.frames_to_send()
    for index, namespace in enumerate(namespaces):
        head = "40" if namespace == "/" else f"40{namespace},"
        assert conn.receive_frame(head, 0) == Connect(namespace=namespace)
        conn.send(ConnectAccepted(namespace=namespace, sid=f"sock{index}"))
    return conn


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("nope")
    assert not LocalProtocolError("x").fatal
    assert RemoteProtocolError("x").fatal


def test_prepared_emit_is_encoded_once_and_checked_per_connection() -> None:
    prepared = prepare_emit("/client", "message:new", ({"id": "m1", "body": "hé"},))
    assert prepared.frames == ('42/client,["message:new",{"id":"m1","body":"hé"}]',)
    decoder = FrameDecoder(role=Role.CLIENT)
    decoder.receive_data(prepared.websocket_bytes)
    assert list(decoder.events()) == list(prepared.frames)

    joined = _connected("/client")
    elsewhere = _connected("/admin")
    assert joined.send_prepared(prepared) == list(prepared.frames)
    assert elsewhere.send_prepared(prepared) == []
    joined.receive_frame("41/client,", 1)
    assert joined.send_prepared(prepared) == []


def test_prepared_binary_emit_carries_its_attachments_in_order() -> None:
    prepared = prepare_emit("/", "file", (b"\x01\x02", {"thumb": b"\x03"}))
    assert prepared.frames == (
        '452-["file",{"_placeholder":true,"num":0},{"thumb":{"_placeholder":true,"num":1}}]',
        b"\x01\x02",
        b"\x03",
    )
    decoder = FrameDecoder(role=Role.CLIENT)
    decoder.receive_data(prepared.websocket_bytes)
    assert list(decoder.events()) == list(prepared.frames)


def test_a_prepared_emit_on_a_closed_connection_sends_nothing() -> None:
    conn = _connected("/")
    conn.transport_closed()
    assert conn.send_prepared(prepare_emit("/", "x")) == []


def test_queued_frames_go_out_before_a_send() -> None:
    conn = _connected("/")
    conn.handle_timer(25)  # a ping is queued, not yet drained
    assert conn.send(Emit(namespace="/", name="after")) == ["2", '42["after"]']
    assert conn.frames_to_send() == []


def test_forgotten_ack_is_ignored_when_it_arrives_late() -> None:
    conn = _connected("/")
    first = conn.allocate_ack_id("/")
    second = conn.allocate_ack_id("/")
    assert (first, second) == (0, 1)
    conn.forget_ack("/", first)
    assert conn.receive_frame('430["late"]', 1) is None
    assert conn.receive_frame('431["on time"]', 1) == Ack(
        namespace="/", ack_id=1, args=("on time",)
    )


def test_acks_pending_on_a_namespace_are_dropped_when_it_disconnects() -> None:
    conn = _connected("/", "/admin")
    ack_id = conn.allocate_ack_id("/admin")
    conn.receive_frame("41/admin,", 1)
    conn.receive_frame("40/admin,", 1)
    conn.send(ConnectAccepted(namespace="/admin", sid="again"))
    assert conn.receive_frame(f'43/admin,{ack_id}["stale"]', 2) is None


def test_emitting_with_an_ack_id_that_was_not_allocated_is_refused() -> None:
    conn = _connected("/")
    with pytest.raises(LocalProtocolError):
        conn.send(Emit(namespace="/", name="x", ack_id=5))
    with pytest.raises(LocalProtocolError):
        conn.allocate_ack_id("/elsewhere")


def test_unencodable_data_is_a_local_error_and_changes_nothing() -> None:
    conn = _connected("/")
    with pytest.raises(LocalProtocolError):
        conn.send(Emit(namespace="/", name="x", args=(object(),)))
    assert conn.send(Emit(namespace="/", name="ok")) == ['42["ok"]']


def test_connect_accepted_without_a_connect_is_refused() -> None:
    conn = _connected()
    with pytest.raises(LocalProtocolError):
        conn.send(ConnectAccepted(namespace="/", sid="x"))


def test_transport_loss_and_failed_writes_close_once() -> None:
    conn = _connected("/")
    assert conn.send_failed() == ConnectionClosed(reason=DisconnectReason.TRANSPORT_ERROR)
    assert conn.send_failed() is None
    assert conn.transport_closed() is None
    assert conn.close_reason is DisconnectReason.TRANSPORT_ERROR
    assert conn.connected_namespaces == ["/"]  # what was joined when it ended
    assert conn.send(CloseConnection()) == []
    with pytest.raises(LocalProtocolError):
        conn.receive_frame("3", 1)
    assert conn.get_timer() is None
    assert conn.handle_timer(100) is None


def test_a_websocket_close_sends_disconnects_and_no_engine_packet() -> None:
    conn = _connected("/", "/admin")
    assert conn.send(CloseConnection(reason=DisconnectReason.SERVER_SHUTDOWN)) == [
        "41",
        "41/admin,",
    ]
    assert conn.close_reason is DisconnectReason.SERVER_SHUTDOWN


def test_events_are_validated_on_construction() -> None:
    with pytest.raises(TypeError):
        Emit(namespace="client", name="x")
    with pytest.raises(TypeError):
        Emit(namespace="/", name="x", args=["list"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Ack(namespace="/", ack_id=-1)
    with pytest.raises(TypeError):
        ConnectAccepted(namespace="/", sid="")
    with pytest.raises(TypeError):
        Disconnect(namespace="")


def test_connection_after_a_remote_error_fails_fast() -> None:
    conn = _connected("/")
    with pytest.raises(RemoteProtocolError):
        conn.receive_frame("4zz", 1)
    for call in (
        lambda: conn.receive_frame('42["x"]', 1),
        lambda: conn.send(Emit(namespace="/", name="x")),
        conn.begin_upgrade,
    ):
        with pytest.raises(LocalProtocolError):
            call()


def test_an_upgrade_in_progress_is_dropped_when_the_session_closes() -> None:
    conn = _connected("/", transport=Transport.POLLING)
    conn.begin_upgrade()
    conn.transport_closed()
    assert conn.upgrade_state is UpgradeState.NONE
    conn.abort_upgrade()  # idempotent


def test_engine_connection_alone_echoes_messages() -> None:
    engine = EngineConnection(sid="e", transport=Transport.POLLING, config=CONFIG, now=0)
    assert engine.frames_to_send() == [
        '0{"sid":"e","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,'
        '"maxPayload":1000000}'
    ]
    assert engine.receive_frame("4hello", 1) == Message(data="hello")
    assert engine.receive_frame(b"\x01\x02", 1) == Message(data=b"\x01\x02")
    assert engine.send(Message(data="hello")) == ["4hello"]
    assert engine.send(Message(data=b"\x01\x02")) == [b"\x01\x02"]
    assert engine.receive_frame("3", 1) is None
    assert engine.receive_frame("1", 2) == ConnectionClosed(reason=DisconnectReason.CLIENT_CLOSE)
    assert engine.frames_to_send() == ["6"]
    with pytest.raises(LocalProtocolError):
        engine.send(Message(data="late"))


def test_engine_connection_refuses_socketio_events() -> None:
    engine = EngineConnection(sid="e", transport=Transport.WEBSOCKET, config=CONFIG, now=0)
    with pytest.raises(LocalProtocolError):
        engine.send(Emit(namespace="/", name="x"))  # type: ignore[arg-type]
