"""Rooms as two indexes: plain synchronous tests."""

from __future__ import annotations

from replyhq_trio.hub import RoomRegistry


def test_join_leave_and_both_indexes() -> None:
    rooms: RoomRegistry[str] = RoomRegistry()
    rooms.join("a", "r1")
    rooms.join("a", "r2")
    rooms.join("b", "r1")
    assert set(rooms.members("r1")) == {"a", "b"}
    assert rooms.rooms_of("a") == {"r1", "r2"}
    rooms.leave("a", "r1")
    assert set(rooms.members("r1")) == {"b"}
    assert rooms.rooms_of("a") == {"r2"}
    assert rooms.room_count == 2


def test_empty_rooms_and_members_are_dropped() -> None:
    rooms: RoomRegistry[str] = RoomRegistry()
    rooms.join("a", "r1")
    rooms.leave("a", "r1")
    assert rooms.room_count == 0
    assert set(rooms.all_members()) == set()
    assert set(rooms.members("r1")) == set()
    rooms.leave("ghost", "nowhere")  # harmless


def test_leave_all_returns_the_rooms_left() -> None:
    rooms: RoomRegistry[str] = RoomRegistry()
    for room in ("r1", "r2", "r3"):
        rooms.join("a", room)
    rooms.join("b", "r2")
    assert rooms.leave_all("a") == {"r1", "r2", "r3"}
    assert rooms.room_sizes() == {"r2": 1}
    assert rooms.leave_all("a") == set()


def test_select_is_a_union_minus_exclusions_each_member_once() -> None:
    rooms: RoomRegistry[str] = RoomRegistry()
    rooms.join("a", "r1")
    rooms.join("b", "r1")
    rooms.join("b", "r2")
    rooms.join("c", "r2")
    rooms.join("a", "a")  # a member's own room
    assert rooms.select(["r1", "r2"]) == {"a", "b", "c"}
    assert rooms.select(["r1", "r2"], exclude_rooms=["a"]) == {"b", "c"}
    assert rooms.select(["r1"], exclude_rooms=["r2"]) == {"a"}
    assert rooms.select(["nothing"]) == set()
