"""``message:new`` leaves in id order, per conversation, however the sends race.

Concurrent sends into one conversation (two connections of a device, a device and an
agent over REST) finish their store calls in any order: the store commits them in id
order, but the tasks that awaited them resume in the scheduler's order. Broadcast as they
resume, a room would see id 11 before id 10, and a client that keeps "the last id I
have" as its sync cursor and drops between the two would skip 10 for good.

So each send takes a ticket before its store call, and its broadcast waits for every
send that could hold a smaller id: those whose tickets were taken before its store call
returned (a send that started after that began its transaction after this one
committed, so its id is larger). Among the sends ready to go, the smallest id goes
first. Nothing waits longer than the slowest of those store calls, which the store's
timeout bounds.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable

import attrs
import trio

__all__ = ["BroadcastOrder"]

Send = Callable[[], Awaitable[None]]


@attrs.define(order=True)
class _Ready:
    message_id: str
    watermark: int = attrs.field(order=False)  # tickets below it must be resolved first
    send: Send = attrs.field(order=False)
    done: bool = attrs.field(order=False, default=False)


@attrs.define
class _Lane:
    next_ticket: int = 0
    outstanding: set[int] = attrs.field(factory=set)
    ready: list[_Ready] = attrs.field(factory=list)  # a heap by message id
    sending: bool = False
    changed: trio.Event = attrs.field(factory=trio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def releasable(self) -> _Ready | None:
        if not self.ready:
            return None
        head = self.ready[0]
        if any(ticket < head.watermark for ticket in self.outstanding):
            return None
        return head

    @property
    def idle(self) -> bool:
        return not self.outstanding and not self.ready and not self.sending


class BroadcastOrder:
    """Per conversation: tickets in, broadcasts out in id order."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}

    def take_ticket(self, conversation_id: str) -> int:
        """Before the store call (no await between this and the call)."""
        lane = self._lanes.get(conversation_id)
        if lane is None:
            lane = self._lanes[conversation_id] = _Lane()
        ticket = lane.next_ticket
        lane.next_ticket += 1
        lane.outstanding.add(ticket)
        return ticket

    def drop_ticket(self, conversation_id: str, ticket: int) -> None:
        """The send failed, or has nothing to broadcast: stop holding the others up."""
        lane = self._lanes[conversation_id]
        lane.outstanding.discard(ticket)
        self._settle(conversation_id, lane)

    async def broadcast(
        self, conversation_id: str, ticket: int, message_id: str, send: Send
    ) -> None:
        """Once the store call returned ``message_id``: run ``send`` in its turn, and
        return once it ran. Cancelled while waiting, the turn is given up."""
        lane = self._lanes[conversation_id]
        lane.outstanding.discard(ticket)
        entry = _Ready(message_id, watermark=lane.next_ticket, send=send)
        heapq.heappush(lane.ready, entry)
        try:
            while not entry.done:
                if not lane.sending and lane.releasable() is not None:
                    await self._send_releasable(lane)
                else:
                    await lane.changed.wait()
        finally:
            if not entry.done:
                lane.ready.remove(entry)
                heapq.heapify(lane.ready)
            self._settle(conversation_id, lane)

    async def _send_releasable(self, lane: _Lane) -> None:
        # One task sends for the whole lane at a time, smallest id first; the others
        # wait for their entries to be marked done.
        lane.sending = True
        try:
            while (head := lane.releasable()) is not None:
                heapq.heappop(lane.ready)
                try:
                    await head.send()
                finally:
                    head.done = True
                    lane.notify()
        finally:
            lane.sending = False
            lane.notify()

    def _settle(self, conversation_id: str, lane: _Lane) -> None:
        lane.notify()
        if lane.idle and self._lanes.get(conversation_id) is lane:
            del self._lanes[conversation_id]
