"""Rooms: which members are in which rooms, as two explicit indexes.

Pure and synchronous: no awaits, so no locks, and the tests are plain functions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Set
from typing import Generic, TypeVar

__all__ = ["RoomRegistry"]

M = TypeVar("M", bound=Hashable)


class RoomRegistry(Generic[M]):
    """Room membership of one namespace.

    Both directions are indexed: room -> members (for broadcasts) and member -> rooms
    (for leaving everything at once). An empty room is dropped, so the number of
    rooms never grows past what is in use.
    """

    def __init__(self) -> None:
        self._members: dict[str, set[M]] = {}
        self._rooms: dict[M, set[str]] = {}

    def join(self, member: M, room: str) -> None:
        self._members.setdefault(room, set()).add(member)
        self._rooms.setdefault(member, set()).add(room)

    def leave(self, member: M, room: str) -> None:
        members = self._members.get(room)
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[room]
        rooms = self._rooms.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms[member]

    def leave_all(self, member: M) -> set[str]:
        """Remove ``member`` from every room; returns the rooms it was in."""
        rooms = self._rooms.pop(member, set())
        for room in rooms:
            members = self._members[room]
            members.discard(member)
            if not members:
                del self._members[room]
        return rooms

    def members(self, room: str) -> Set[M]:
        """The members of ``room`` (a live view: copy it before changing rooms while iterating)."""
        members = self._members.get(room)
        return members if members is not None else frozenset()

    def rooms_of(self, member: M) -> frozenset[str]:
        return frozenset(self._rooms.get(member, ()))

    def select(self, rooms: Iterable[str], exclude_rooms: Iterable[str] = ()) -> set[M]:
        """Members of any of ``rooms`` and of none of ``exclude_rooms``, each once."""
        selected: set[M] = set()
        for room in rooms:
            selected.update(self._members.get(room, ()))
        for room in exclude_rooms:
            if selected:
                selected.difference_update(self._members.get(room, ()))
        return selected

    def all_members(self) -> Set[M]:
        return self._rooms.keys()

    @property
    def room_count(self) -> int:
        return len(self._members)

    def room_sizes(self) -> dict[str, int]:
        return {room: len(members) for room, members in self._members.items()}
