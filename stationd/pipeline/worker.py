"""One device's life at the station: wait for it to attach, run its job's missing steps, survive unplugs and erases.

States a device shows (stored on the device row): "new", "<step>" while a step runs, "waiting" (unplugged or
rebooting between steps), "interrupted", "done", "failed".
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog

from stationd.config import Config
from stationd.device import DeviceFacts, DeviceSession
from stationd.errors import DeviceGone, EraseTimeout, InternalError, StationError, StepTimeout
from stationd.pipeline.steps import STEP_FUNCTIONS, Outcome, erase_proven
from stationd.store import JobRecord

if TYPE_CHECKING:
    from stationd.station import Station

log = structlog.get_logger("stationd.pipeline")


@dataclass
class StepContext:
    """What a step may use: the open device session, the configuration, the job so far."""

    station: Station
    udid: str
    session: DeviceSession
    facts: DeviceFacts
    job: JobRecord
    port_label: str | None

    @property
    def config(self) -> Config:
        return self.station.config

    @property
    def http(self) -> httpx.AsyncClient:
        return self.station.http

    @property
    def plan(self) -> list[str]:
        return self.station.plan

    @property
    def identity_certificate(self) -> bytes:
        """Our supervision certificate (DER); the session refuses to supervise without an identity first."""
        identity = self.station.identity
        return identity.certificate_der if identity is not None else b""

    async def checkpoint(self, step: str, data: dict[str, Any]) -> None:
        """Persist step data before acting on it (write-ahead), e.g. that an erase is about to be sent."""
        self.job = await self.station.transition(
            self.udid, self.job, "step.progress", state=step, step=step, step_data={step: data}, data=data
        )

    async def ordinal(self) -> int:
        """This device's number at the station, for naming patterns with {n}."""
        devices = await self.station.store.list_devices()
        return next((i for i, d in enumerate(devices, 1) if d.udid == self.udid), len(devices) + 1)


class DeviceWorker:
    """Drives one device's jobs; lives from the device's first attach until the station stops or forgets it."""

    def __init__(self, station: Station, udid: str) -> None:
        self.station = station
        self.udid = udid
        self.location_id: int | None = None
        self.device_id: int | None = None  # usbmuxd's id for the current attachment (a new one at every attach)
        self.port_label: str | None = None
        self.attached = anyio.Event()
        self.detached = anyio.Event()
        self.detached.set()
        self.wake = anyio.Event()  # set on detach and by operator actions: look at the device again
        self.scope: anyio.CancelScope | None = None  # the attempt in progress, cancelled by a detach
        self.life = anyio.CancelScope()  # the whole worker, cancelled when the device is forgotten
        self.deadline: float | None = None  # when an erased device must be back
        self.log = log.bind(udid=udid)

    # -- signals from the USB watcher and the operator ------------------------------------------------------------
    def on_attached(self, location_id: int | None, port_label: str | None, device_id: int | None = None) -> None:
        self.location_id, self.port_label, self.device_id = location_id, port_label, device_id
        self.detached = anyio.Event()
        self.attached.set()

    def on_detached(self) -> None:
        self.attached = anyio.Event()
        self.detached.set()
        self.wake.set()
        if self.scope is not None:
            self.scope.cancel()

    def nudge(self) -> None:
        """An operator changed the device's job (retry, skip): run it now if the device is here."""
        self.wake.set()

    # -- the loop -------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        with self.life:
            while True:
                await self._wait_attached()
                self.wake = anyio.Event()
                try:
                    job = await self.station.job_for(self.udid)
                    result = "idle" if job is None else await self._attempt(job)
                except Exception:  # e.g. the database refused a write: this iPad waits, the others carry on
                    self.log.exception("device.worker_error")
                    result = "failed"
                if result in ("idle", "done", "failed"):
                    await self.wake.wait()
                elif result == "waiting":
                    await self._wait_detached(time.monotonic() + self.station.config.timeouts.erase_start)
                elif result == "interrupted":
                    await self._wait_detached(time.monotonic() + self.station.backoff[0])

    async def _wait_detached(self, deadline: float) -> None:
        """Let the device go away (an erasing iPad detaches) before looking for it again."""
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await self.detached.wait()

    async def _wait_attached(self) -> None:
        """Wait for the device; an erased device that is not back by its deadline fails its job, then is awaited."""
        if self.deadline is not None:
            with anyio.move_on_after(max(0.0, self.deadline - time.monotonic())):
                await self.attached.wait()
            if not self.attached.is_set():
                await self._erase_timed_out()
        await self.attached.wait()

    async def _erase_timed_out(self) -> None:
        self.deadline = None
        jobs = await self.station.store.jobs_for(self.udid)
        if jobs and jobs[-1].status == "running":
            await self.station.transition(
                self.udid,
                jobs[-1],
                "step.failed",
                state="failed",
                step="erase",
                job_status="failed",
                error_code=EraseTimeout.code,
                error_message="The iPad did not come back after erasing. Check its screen; when it shows Hello, "
                "replug it.",
            )

    async def _attempt(self, job: JobRecord) -> str:
        """Run the job while the device stays attached: 'done', 'failed', 'waiting' or 'interrupted'."""
        station = self.station
        async with station.limiter:
            with anyio.CancelScope() as scope:
                self.scope = scope
                try:
                    return await self._sessions(job)
                except DeviceGone as e:
                    job = await station.current(job)
                    await station.interrupted(self.udid, job, str(e))
                    return "interrupted"
                finally:
                    self.scope = None
            job = await station.current(job)
            with anyio.CancelScope(shield=True):
                await station.interrupted(self.udid, job, "unplugged")
            return "interrupted"

    async def _sessions(self, job: JobRecord) -> str:
        """Open sessions until the job ends, retrying transient failures with backoff.

        The retry budget (`timeouts.retries` per step, or fewer for an error that caps it) starts afresh each time
        the iPad is plugged in or retried: tries from before stay in the job's attempts, for the record. Anything
        else that escapes a step (a bug) fails this iPad alone as `internal_error`; every other iPad carries on."""
        station = self.station
        step = "identify"
        before = dict(job.attempts)
        while True:
            try:
                return await self._steps(job)
            except StationError as e:
                if isinstance(e, DeviceGone):
                    raise
                error = e
            except Exception as e:  # the failure boundary of one iPad; cancellation is a BaseException
                step = station.running_step.get(self.udid, step)
                self.log.exception("step.crashed", step=step)
                error = InternalError(
                    f"The station hit an internal error in the {step} step ({type(e).__name__}); the details are in "
                    "the station's log (journalctl -u stationd, or the terminal running it). Replug the iPad to try "
                    "again."
                )
            job = await station.current(job)
            step = station.running_step.get(self.udid, step)
            tries = job.attempts.get(step, 0) - before.get(step, 0) + 1
            allowed = station.config.timeouts.retries
            if error.retries is not None:
                allowed = min(allowed, error.retries)
            if error.transient and tries <= allowed:
                delay = station.backoff_delay(tries)
                job = await station.transition(
                    self.udid,
                    job,
                    "step.retrying",
                    state=step,
                    step=step,
                    attempt_step=step,
                    error_code=error.code,
                    error_message=str(error),
                    data={"try": tries, "delay": delay},
                )
                self.log.warning("step.retrying", step=step, error=error.code, delay=delay)
                await anyio.sleep(delay)
                continue
            message = str(error)
            if error.transient:
                message += f" The station tried {tries} times; replug the iPad to try again."
            await station.transition(
                self.udid,
                job,
                "step.failed",
                state="failed",
                step=step,
                attempt_step=step,
                job_status="failed",
                error_code=error.code,
                error_message=message,
            )
            self.log.error("step.failed", step=step, error=error.code, message=message)
            return "failed"

    async def _steps(self, job: JobRecord) -> str:
        station = self.station
        station.running_step[self.udid] = "identify"
        async with contextlib.AsyncExitStack() as stack:
            with _timeout("identify", station.config.timeouts.identify):
                if await erase_proven(self.udid, job, station.usbmux, self.device_id):
                    job = await station.transition(
                        self.udid, job, "step.finished", state="erase", step="erase", completed_step="erase",
                        step_data={"erase": {"confirmed": True, "proof": "pairing forgotten"}},
                    )
                session = await stack.enter_async_context(station.open_session(self.udid, self.device_id))
                facts = await session.facts()
            await station.store.upsert_device(
                self.udid,
                serial=facts.serial,
                ecid=facts.ecid,
                facts=facts.as_dict(),
                location_id=self.location_id,
                port_label=self.port_label,
            )
            self.log = log.bind(udid=self.udid, serial=facts.serial, port=self.port_label)
            ctx = StepContext(station, self.udid, session, facts, job, self.port_label)
            for step in station.plan:
                if step in ctx.job.completed_steps:
                    continue
                station.running_step[self.udid] = step
                ctx.job = await station.transition(self.udid, ctx.job, "step.started", state=step, step=step)
                self.log.info("step.started", step=step)
                with _timeout(step, station.step_timeout(step)):
                    outcome: Outcome = await STEP_FUNCTIONS[step](ctx)
                if outcome.await_reattach:
                    self.deadline = time.monotonic() + station.step_timeout(step)
                    await station.transition(self.udid, ctx.job, "step.waiting", state="waiting", step=step)
                    self.log.info("step.waiting", step=step)
                    return "waiting"
                self.deadline = None
                ctx.job = await station.transition(
                    self.udid,
                    ctx.job,
                    "step.finished",
                    state=step,
                    step=step,
                    completed_step=step,
                    step_data={step: outcome.data} if outcome.data else None,
                )
                self.log.info("step.finished", step=step)
            device = await station.store.get_device(self.udid)
            await station.transition(
                self.udid, ctx.job, "device.done", state="done", step="report", job_status="done",
                data={"name": device.name if device else None},
            )
            await station.report(self.udid)
            self.log.info("device.done")
            return "done"


class _timeout:
    """fail_after that raises our transient StepTimeout."""

    def __init__(self, step: str, seconds: float) -> None:
        self.step = step
        self.seconds = seconds if seconds > 0 else math.inf
        self.scope = anyio.fail_after(self.seconds)

    def __enter__(self) -> None:
        self.scope.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            return bool(self.scope.__exit__(exc_type, exc, tb))
        except TimeoutError as e:
            raise StepTimeout(f"The {self.step} step took longer than {self.seconds:g} s.") from e
