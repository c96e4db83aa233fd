"""The courier: reads finished iPads from the trail into the outbox, and delivers them through their reporters.

- Reading: every `device.reported` event after this station's place in the trail becomes one delivery per reporter
  (the store keys them device × reporter × job, so a report read twice is queued once), and the place moves on in the
  same transaction. A station killed between an iPad's report and its queueing queues it at the next start. A
  station that never had reporters starts at the end of the trail: enabling a reporter reports the iPads finished
  from then on, not every iPad the station ever did.
- Delivering: one task per reporter claims due deliveries (a batch, once the reporter's window has gathered one),
  calls `deliver` bounded by the reporter's lease, and settles each: done, failed with the reason, or retried with
  backoff from the outbox. Nothing here holds a port: the iPads are done before their reports are queued.
- Every settlement is an event on the trail (`report.queued`, `report.done`, `report.retrying`, `report.failed`),
  published on the station's bus, and the station's view keeps each device's report status for the API.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from stationd.redact import redact_text
from stationd.reporting.reporter import DeliveryContext, Reporter, Result
from stationd.store import Delivery, Outcome, Settlement, StoreError

if TYPE_CHECKING:
    from stationd.station import Station

log = structlog.get_logger("stationd.reporting")

IDLE = 30.0  # seconds between looks at the outbox when nothing is due (another station of a fleet may queue)
PAGE = 1000
AWAY = 5.0  # seconds before the outbox is tried again when the store cannot be reached (a fleet's database outage)


class Courier:
    def __init__(self, station: Station, reporters: list[Reporter], *, idle: float = IDLE) -> None:
        self.station = station
        self.store = station.store
        self.station_id = station.station_id
        self.reporters = {reporter.name: reporter for reporter in reporters}
        self.reader = f"courier:{self.station_id}"
        self.idle = idle
        self._trail = anyio.Event()
        self._wake = {name: anyio.Event() for name in self.reporters}

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until `station.stopping`; start it with `await tasks.start(courier.run)` before the station."""
        if await self.store.report_cursor(self.reader) is None:
            last = await self.store.last_seq(self.station_id)
            await self.store.queue_reports([], [], reader=self.reader, read_to=last, station_id=self.station_id)
        released = await self.store.release_deliveries(self.station_id)
        if released:
            log.info("report.resumed", deliveries=released)
        for delivery in await self.store.list_deliveries():
            self.station.view.report(delivery)
        self._trail.set()
        try:
            with self.station.bus.subscribe() as events:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._read_trail)
                    for reporter in self.reporters.values():
                        context = self._context(reporter)
                        tasks.start_soon(self._serve, reporter, context, name=f"reporter {reporter.name}")
                        tasks.start_soon(reporter.background, context, name=f"reporter {reporter.name} background")
                    task_status.started()
                    async for event in events:
                        if event.kind == "device.reported":
                            self._trail.set()
                        elif event.kind == "station.stopping":
                            break
                    tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.release_deliveries(self.station_id)
                for reporter in self.reporters.values():
                    with anyio.move_on_after(5):
                        await reporter.close()

    def _context(self, reporter: Reporter) -> DeliveryContext:
        return DeliveryContext(
            self.store, self.station_id, structlog.get_logger("stationd.reporting", reporter=reporter.name)
        )

    async def _read_trail(self) -> None:
        names = list(self.reporters)
        while True:
            await self._trail.wait()
            self._trail = anyio.Event()
            try:
                await self._queue_reported(names)
            except StoreError as error:  # each page queued moved the place with it: the rest is read again later
                log.warning("report.store_unavailable", error=str(error))
                await anyio.sleep(AWAY)
                self._trail.set()

    async def _queue_reported(self, names: list[str]) -> None:
        cursor = await self.store.report_cursor(self.reader) or 0
        while events := await self.store.station_events(self.station_id, after_seq=cursor, limit=PAGE):
            reported = [event for event in events if event.kind == "device.reported"]
            made, written = await self.store.queue_reports(
                reported, names, reader=self.reader, read_to=events[-1].seq, station_id=self.station_id
            )
            cursor = events[-1].seq
            for delivery in made:
                self.station.view.report(delivery)
                self._wake[delivery.reporter].set()
            await self.station.publish(written)

    async def _serve(self, reporter: Reporter, context: DeliveryContext) -> None:
        while True:
            self._wake[reporter.name] = wake = anyio.Event()
            try:
                claimed = await self.store.claim_deliveries(
                    reporter.name,
                    claimer=self.station_id,
                    limit=reporter.batch,
                    lease=reporter.lease,
                    window=reporter.window,
                )
                if claimed:
                    await self._deliver(reporter, context, claimed)
                    continue
                due = await self.store.next_delivery_at(reporter.name, window=reporter.window)
            except StoreError as error:  # an unsettled claim lapses with its lease: the delivery is tried again
                log.warning("report.store_unavailable", reporter=reporter.name, error=str(error))
                due = time.time() + AWAY
            delay = self.idle if due is None else min(self.idle, max(0.0, due - time.time()))
            with anyio.move_on_after(delay):
                await wake.wait()

    async def _deliver(self, reporter: Reporter, context: DeliveryContext, claimed: list[Delivery]) -> None:
        results: dict[str, Result] = {}
        trouble = f"the {reporter.name} reporter gave no answer for it"
        with anyio.move_on_after(reporter.lease * 0.95) as scope:
            try:
                results = await reporter.deliver(list(claimed), context)
            except Exception as error:  # a reporter's bug fails its try, never the station
                log.exception("report.crashed", reporter=reporter.name)
                trouble = (
                    f"the {reporter.name} reporter failed ({type(error).__name__}); the details are in the "
                    "station's log"
                )
        if scope.cancelled_caught:
            trouble = f"the {reporter.name} reporter took longer than {reporter.lease:g} s and was stopped"
        now = time.time()
        settlements = [self._settlement(reporter, d, results.get(d.key), trouble, now) for d in claimed]
        settled, written = await self.store.settle_deliveries(settlements, station_id=self.station_id)
        for delivery in settled:
            self.station.view.report(delivery)
            log.log(
                40 if delivery.status == "failed" else 20,
                {"done": "report.done", "failed": "report.failed"}.get(delivery.status, "report.retrying"),
                reporter=reporter.name,
                serial=delivery.serial,
                udid=delivery.udid,
                attempts=delivery.attempts,
                message=delivery.message,
            )
        await self.station.publish(written)

    def _settlement(
        self, reporter: Reporter, delivery: Delivery, result: Result | None, trouble: str, now: float
    ) -> Settlement:
        if result is None:
            result = Result.retry(trouble)
        message = redact_text(result.message) if result.message else None
        if result.outcome == Outcome.DEFER:
            return Settlement(delivery.key, Outcome.DEFER, message, now + (result.after or 0.0), result.progress)
        if result.outcome != Outcome.RETRY:
            return Settlement(delivery.key, result.outcome, message, progress=result.progress)
        if now - delivery.created_at >= reporter.patience:
            tries = delivery.attempts + 1
            gave_up = (
                f"{message or 'it kept failing'} (the station gave up after {tries} tries over "
                f"{_span(now - delivery.created_at)}; `stationd reports --retry` sends it again)"
            )
            return Settlement(delivery.key, Outcome.FAILED, gave_up, progress=result.progress)
        delay = (
            result.after
            if result.after is not None
            else min(reporter.backoff_cap, reporter.backoff * 2**delivery.attempts)
        )
        return Settlement(delivery.key, Outcome.RETRY, message, now + delay, result.progress)


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 60:.0f} minutes"
