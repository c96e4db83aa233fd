"""What a reporter is: a plugin object that delivers finished iPads, a batch at a time, and says how each went."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from stationd.hooks import hookimpl
from stationd.store import Delivery, Outbox, Outcome


@dataclass(frozen=True)
class Result:
    """How one delivery went: done, failed (a person must act: the message says how), retry (a passing fault:
    the courier waits with backoff, or `after` seconds when the server said so) or defer (not tried: a budget is
    spent; again in `after` seconds, no try counted). `progress` is kept with the delivery."""

    outcome: Outcome
    message: str | None = None
    after: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def done(cls, message: str | None = None, **progress: Any) -> Result:
        return cls(Outcome.DONE, message, progress=progress)

    @classmethod
    def failed(cls, message: str) -> Result:
        return cls(Outcome.FAILED, message)

    @classmethod
    def retry(cls, message: str, after: float | None = None) -> Result:
        return cls(Outcome.RETRY, message, after)

    @classmethod
    def defer(cls, message: str, after: float) -> Result:
        return cls(Outcome.DEFER, message, after)


@dataclass
class DeliveryContext:
    """What a reporter may use besides its settings: the outbox (budgets, write-ahead notes, assignments), the
    station's id and a logger. `clock` is the store's time (budgets and due times are measured by it)."""

    outbox: Outbox
    station_id: str
    log: Any
    clock: Any = time.time

    async def note(self, deliveries: list[Delivery], **progress: Any) -> None:
        """Write progress ahead of acting on it (an activity about to be posted, its id): a restart resumes there."""
        await self.outbox.note_deliveries([d.key for d in deliveries], progress)
        for delivery in deliveries:
            delivery.progress.update(progress)

    async def spend(self, name: str, *, limit: int, period: float, wait: float = 0.0) -> float:
        """Spend one call of a shared budget, waiting up to `wait` seconds for one to free: 0.0 once spent, else
        the seconds still to wait (nothing spent)."""
        deadline = time.monotonic() + wait
        while True:
            pause = await self.outbox.take_budget(name, limit=limit, period=period)
            if pause <= 0:
                return 0.0
            left = deadline - time.monotonic()
            if pause > left:
                return pause
            await anyio.sleep(pause)


class Reporter:
    """Base of every reporter. Subclasses set `name` (the plugin's), their batching and `deliver`.

    - `batch`: at most this many deliveries per `deliver` call; `window`: seconds the oldest waits for others to
      join its batch (Apple School Manager takes many serials in one call; an MDM takes one device at a time).
    - `lease`: how long one `deliver` call may take (its deliveries are claimed that long; past it, it is stopped
      and they are retried).
    - `backoff` (doubling, at most `backoff_cap`) between retries; after `patience` seconds a retry is a failure.
    """

    name = "reporter"
    batch = 20
    window = 0.0
    lease = 600.0
    backoff = 30.0
    backoff_cap = 3600.0
    patience = 3 * 24 * 3600.0

    async def deliver(self, deliveries: list[Delivery], context: DeliveryContext) -> dict[str, Result]:
        """One `Result` per delivery key; a key left out is retried."""
        raise NotImplementedError

    async def background(self, context: DeliveryContext) -> None:
        """A task beside the deliveries, for the station's whole run (the asm reporter checks held serials)."""

    async def close(self) -> None:
        """The station stops: close connections."""


class ReporterPlugin:
    """A plugin that gives one reporter: what a built-in reporter's `make` returns."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    @hookimpl
    def stationd_reporter(self) -> Reporter:
        return self.reporter
