"""One device's life at the station: wait for it to attach, run its job's missing steps, survive unplugs and erases.

A worker knows nothing of the station around it: it gets a `Pipeline` (the plan, the configuration, the job log it
writes through, the session opener, the timing) and the signals of its device (attached, detached, nudged).

States a device shows (stored on the device row): "new", "<step>" while a step runs, "waiting" (unplugged or
rebooting between steps), "interrupted", "done", "failed".
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import httpx
import structlog

from stationd.config import Config
from stationd.device import DeviceFacts, DeviceSession, SessionOpener
from stationd.errors import DeviceGone, EraseTimeout, Held, InternalError, StationError, StepTimeout
from stationd.pipeline.joblog import JobLog, unreachable
from stationd.pipeline.steps import STEP_FUNCTIONS, Outcome, erase_proven
from stationd.pipeline.timing import Timing
from stationd.states import DeviceState, JobStatus
from stationd.store import JobRecord, LeaseLost, StoreError, StoreUnavailable

log = structlog.get_logger("stationd.pipeline")


class Settings(Protocol):
    """Where a job's settings come from when they are not the station's own (a fleet's blueprint)."""

    async def for_job(self, job: JobRecord) -> tuple[Config, list[str], dict[str, Any]]:
        """The configuration and plan the job runs with, and what to record of them in the job."""
        ...


@dataclass(frozen=True)
class Pipeline:
    """What every device worker shares: nothing of the station but these."""

    plan: list[str]
    config: Config
    jobs: JobLog
    sessions: SessionOpener
    timing: Timing
    http: httpx.AsyncClient
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(8))
    settings: Settings | None = None  # a blueprint's, per job; None: `config` and `plan` for every job


@dataclass
class StepContext:
    """What a step may use: the open device session, the job's configuration and plan, the job so far."""

    pipeline: Pipeline
    udid: str
    session: DeviceSession
    facts: DeviceFacts
    job: JobRecord
    port_label: str | None
    config: Config
    plan: list[str]

    @property
    def http(self) -> httpx.AsyncClient:
        return self.pipeline.http

    @property
    def identity_certificate(self) -> bytes:
        return self.pipeline.sessions.certificate_der

    async def checkpoint(self, step: str, data: dict[str, Any]) -> None:
        """Persist step data before acting on it (write-ahead), e.g. that an erase is about to be sent."""
        self.job = await self.pipeline.jobs.checkpoint(self.udid, self.job, step, data)

    async def record_facts(self, facts: dict[str, Any]) -> None:
        """Merge what a step read from the iPad into its device record (on the trail, as device.identified)."""
        await self.pipeline.jobs.identified(self.udid, facts, None, None)

    async def number(self, step: str, counter: str) -> int:
        """This job's number from the station's counter `counter` (kept in the job: a retry keeps it)."""
        value, self.job = await self.pipeline.jobs.number(self.udid, self.job, step, counter)
        return value


class DeviceWorker:
    """Drives one device's jobs; lives from the device's first attach until the station stops or forgets it."""

    def __init__(self, pipeline: Pipeline, udid: str) -> None:
        self.pipeline = pipeline
        self.jobs = pipeline.jobs
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
        self.running_step = "identify"
        self.recheck = 0.0  # when held: seconds until the step is tried again
        self.held_step: str | None = None  # the step a hold is on: looked at again without a step.started
        self.held: str | None = None  # the code of what it waits for (outside the station), while it waits
        self.known = anyio.Event()  # the store has the device's record: its job can be claimed
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
        timing = self.pipeline.timing
        with self.life:
            while True:
                await self._wait_attached()
                await self.known.wait()
                self.wake = anyio.Event()
                try:
                    job = await self.jobs.job_for(self.udid)
                    result = "idle" if job is None else await self._attempt(job)
                except (Held, StoreUnavailable) as waiting:
                    # Before any job is this station's (busy elsewhere, fleet unreachable), or the fleet's database
                    # went away mid-job: it goes on from its last completed step once it is back.
                    if isinstance(waiting, StoreUnavailable):
                        self.log.warning("device.store_unavailable", error=str(waiting))
                    held = waiting if isinstance(waiting, Held) else unreachable("goes on from its last completed step")
                    self.log.info("device.held", reason=held.code)
                    with contextlib.suppress(StoreError):  # its port shows why when it can; it waits either way
                        await self.jobs.held(self.udid, held)
                    self.recheck, self.held, result = held.recheck, held.code, "held"
                except LeaseLost as lost:  # another station took the iPad over: nothing more to do here
                    self.log.warning("job.lease_lost", reason=str(lost))
                    result = "idle"
                except Exception:  # e.g. the database refused a write: this iPad waits, the others carry on
                    self.log.exception("device.worker_error")
                    result = "failed"
                if result != "held":
                    self.held = None
                if result in ("idle", "done", "failed"):
                    await self.wake.wait()
                elif result == "waiting":
                    await self._wait_detached(time.monotonic() + timing.erase_start)
                elif result == "interrupted":
                    await self._wait_detached(time.monotonic() + timing.backoff[0])
                elif result == "held":  # no concurrency slot is kept while it waits
                    with anyio.move_on_after(self.recheck):
                        await self.wake.wait()

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
        job = await self.jobs.latest(self.udid)
        if job is not None and job.status == JobStatus.RUNNING:
            await self.jobs.transition(
                self.udid,
                job,
                "step.failed",
                state=DeviceState.FAILED,
                step="erase",
                job_status=JobStatus.FAILED,
                error_code=EraseTimeout.code,
                error_message="The iPad did not come back after erasing. Check its screen; when it shows Hello, "
                "replug it.",
            )

    async def _attempt(self, job: JobRecord) -> str:
        """Run the job while the device stays attached: 'done', 'failed', 'waiting', 'held' or 'interrupted'."""
        async with self.pipeline.limiter:
            with anyio.CancelScope() as scope:
                self.scope = scope
                try:
                    return await self._sessions(job)
                except DeviceGone as e:
                    await self.jobs.interrupted(self.udid, await self.jobs.current(job), self.running_step, str(e))
                    return "interrupted"
                finally:
                    self.scope = None
            with anyio.CancelScope(shield=True):
                await self.jobs.interrupted(self.udid, await self.jobs.current(job), self.running_step, "unplugged")
            return "interrupted"

    async def _sessions(self, job: JobRecord) -> str:
        """Open sessions until the job ends, retrying transient failures with backoff.

        The retry budget (`timeouts.retries` per step, or fewer for an error that caps it) starts afresh each time
        the iPad is plugged in or retried: tries from before stay in the job's attempts, for the record. Anything
        else that escapes a step (a bug) fails this iPad alone as `internal_error`; every other iPad carries on."""
        timing = self.pipeline.timing
        before = dict(job.attempts)
        while True:
            try:
                return await self._steps(job)
            except Held as held:
                await self.jobs.transition(
                    self.udid,
                    await self.jobs.current(job),
                    "step.held",
                    state=DeviceState.HELD,
                    step=self.running_step,
                    error_code=held.code,
                    error_message=str(held),
                )
                self.log.info("step.held", step=self.running_step, reason=held.code)
                self.recheck, self.held, self.held_step = held.recheck, held.code, self.running_step
                return "held"
            except StationError as e:
                if isinstance(e, DeviceGone):
                    raise
                error, self.held_step = e, None
            except (LeaseLost, StoreUnavailable):  # not the iPad's failure: the worker's loop deals with them
                raise
            except Exception as e:  # the failure boundary of one iPad; cancellation is a BaseException
                self.log.exception("step.crashed", step=self.running_step)
                error = InternalError(
                    f"The station hit an internal error in the {self.running_step} step ({type(e).__name__}); the "
                    "details are in the station's log (journalctl -u stationd, or the terminal running it). Replug "
                    "the iPad to try again."
                )
            job = await self.jobs.current(job)
            step = self.running_step
            tries = job.attempts.get(step, 0) - before.get(step, 0) + 1
            allowed = timing.retries if error.retries is None else min(timing.retries, error.retries)
            if error.transient and tries <= allowed:
                delay = timing.backoff_delay(tries)
                job = await self.jobs.transition(
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
            await self.jobs.transition(
                self.udid,
                job,
                "step.failed",
                state=DeviceState.FAILED,
                step=step,
                attempt_step=step,
                job_status=JobStatus.FAILED,
                error_code=error.code,
                error_message=message,
            )
            self.log.error("step.failed", step=step, error=error.code, message=message)
            return "failed"

    async def _settings(self, job: JobRecord) -> tuple[Config, list[str], dict[str, Any]]:
        """The job's configuration and plan: the station's, or the blueprint version the job started with."""
        if self.pipeline.settings is None:
            return self.pipeline.config, self.pipeline.plan, {}
        return await self.pipeline.settings.for_job(job)

    async def _steps(self, job: JobRecord) -> str:
        pipeline, jobs = self.pipeline, self.jobs
        self.running_step = "identify"
        async with contextlib.AsyncExitStack() as stack:
            with _timeout("identify", pipeline.timing.step_timeout("identify")):
                if await erase_proven(pipeline.sessions, self.udid, job, self.device_id):
                    job = await jobs.transition(
                        self.udid,
                        job,
                        "step.finished",
                        state="erase",
                        step="erase",
                        completed_step="erase",
                        step_data={"erase": {"confirmed": True, "proof": "pairing forgotten"}},
                    )
                session = await stack.enter_async_context(pipeline.sessions.open(self.udid, self.device_id))
                facts = await session.facts()
            await jobs.identified(self.udid, facts.as_dict(), self.location_id, self.port_label)
            self.log = log.bind(udid=self.udid, serial=facts.serial, port=self.port_label)
            config, steps, settings = await self._settings(job)
            ctx = StepContext(pipeline, self.udid, session, facts, job, self.port_label, config, steps)
            if settings and job.step_data.get("blueprint") != settings:
                ctx.job = await jobs.transition(
                    self.udid,
                    ctx.job,
                    "job.blueprint",
                    state="identify",
                    step="identify",
                    step_data={"blueprint": settings},
                    data=settings,
                )
            for step in steps:
                if step in ctx.job.completed_steps:
                    continue
                self.running_step = step
                if step != self.held_step:  # a held step is looked at again without leaving "held"
                    ctx.job = await jobs.transition(self.udid, ctx.job, "step.started", state=step, step=step)
                    self.log.info("step.started", step=step)
                with _timeout(step, pipeline.timing.step_timeout(step)):
                    outcome: Outcome = await STEP_FUNCTIONS[step](ctx)
                if outcome.await_reattach:
                    self.deadline = time.monotonic() + pipeline.timing.step_timeout(step)
                    await jobs.transition(self.udid, ctx.job, "step.waiting", state=DeviceState.WAITING, step=step)
                    self.log.info("step.waiting", step=step)
                    return "waiting"
                self.deadline, self.held_step = None, None
                ctx.job = await jobs.transition(
                    self.udid,
                    ctx.job,
                    "step.finished",
                    state=step,
                    step=step,
                    completed_step=step,
                    step_data={step: outcome.data} if outcome.data else None,
                    name=outcome.name,
                )
                self.log.info("step.finished", step=step)
            await jobs.finish(self.udid, ctx.job)
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
