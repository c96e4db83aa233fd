"""The station's event stream: every transition the store records is published here, in order, to subscribers.

An event's `seq` is its place in this station's trail (1, 2, ... in commit order): the cursor of every reader that
follows the stream (the API's event stream, a subscriber catching up). Its `id` is its row in the whole trail.

Data flows one way: pipeline → store (the durable audit trail, with its id) → this bus → plugins, dashboard, CLI.
A slow subscriber never blocks a device: its buffer is bounded and, when full, it loses the oldest events and is told
how many it missed (it can re-read them from the store by id).
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from stationd.store import EventRecord


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    station_id: str
    kind: str
    udid: str | None = None
    serial: str | None = None
    location_id: int | None = None
    port_label: str | None = None
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    @classmethod
    def from_record(cls, record: EventRecord) -> Event:
        return cls(
            id=record.id,
            ts=record.ts,
            station_id=record.station_id,
            kind=record.kind,
            udid=record.udid,
            serial=record.serial,
            location_id=record.location_id,
            port_label=record.port_label,
            step=record.step,
            data=dict(record.data),
            seq=record.seq,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Subscription:
    """One subscriber's bounded queue; iterate it with `async for`. `start_seq`: the last event published before it
    subscribed (the events it gets, or missed, come after that seq)."""

    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self.start_seq = bus.last_seq
        self._queue: collections.deque[Event] = collections.deque(maxlen=size)
        self._ready = anyio.Event()
        self.missed = 0

    def _put(self, event: Event) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.missed += 1
        self._queue.append(event)
        self._ready.set()

    async def get(self) -> Event:
        while not self._queue:
            self._ready = anyio.Event()
            await self._ready.wait()
        return self._queue.popleft()

    def ready(self) -> list[Event]:
        """Every event already waiting, without waiting for more."""
        waiting = list(self._queue)
        self._queue.clear()
        return waiting

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """`last_seq` is the seq of the last event published (the station sets it to its trail's last when it starts),
    so each subscription knows where its events begin."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self.last_seq = 0

    def subscribe(self, size: int = 10_000) -> Subscription:
        subscription = Subscription(self, size)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        self.last_seq = event.seq
        for subscription in list(self._subscriptions):
            subscription._put(event)
