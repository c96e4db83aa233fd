"""The job rules, in plain Python and once for every backend.

A backend reads the rows (locked, in its transaction), asks these functions what the job must become, and writes
what they return. So SQLite and PostgreSQL cannot disagree on when a step counts as completed, how attempts are
counted, when `finished_at` is set, or who may write a job.

Ownership: a running job belongs to one station, which holds it under a lease (`lease_until`, by the database's
clock) and renews it while it works. Every hand-over to another station raises the job's `fence`; a write carries
the fence its station was given, so a station that lost the job (its lease expired and another station claimed
it) cannot write it any more.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from stationd.store.base import StoreError, deep_merge
from stationd.store.records import (
    FINISHED_STATUSES,
    INTERRUPTED,
    JOB_STATUSES,
    RUNNING,
    UNFINISHED_STATUSES,
    JobRecord,
)

DEFAULT_LEASE = 60.0  # seconds a station holds a running job without renewing it


class JobBusy(StoreError):
    """The device's job runs at another station, whose lease has not expired."""

    def __init__(self, udid: str, owner: str, remaining: float) -> None:
        super().__init__(
            f"device {udid} is being provisioned by station {owner} (its hold on the job ends in {remaining:.0f} s "
            "unless that station renews it)"
        )
        self.udid = udid
        self.owner = owner
        self.remaining = remaining


class LeaseLost(StoreError):
    """This station no longer holds the job: another station took it over."""


@dataclass
class Claim:
    """What a claim does: the job as it must be written (id 0 for a new one) and the event that says so."""

    job: JobRecord
    kind: str | None  # job.started, job.resumed, job.retried; None when the station already held it
    data: dict[str, Any]

    @property
    def new(self) -> bool:
        return self.job.id == 0


def check_status(job_status: str | None) -> None:
    if job_status is not None and job_status not in JOB_STATUSES:
        raise ValueError(f"job_status must be one of {', '.join(JOB_STATUSES)}, not {job_status!r}")


def claim(
    jobs: list[JobRecord],
    udid: str,
    station_id: str,
    now: float,
    lease: float,
    *,
    retry: bool = False,
    reason: str = "replugged",
) -> Claim:
    """What `station_id` gets when it claims the device whose jobs (oldest first) are `jobs`.

    Its unfinished job: kept (it already runs here), resumed (interrupted, or its station's lease expired: handed
    over with a new fence, from its last completed step), or refused with JobBusy while another station holds it.
    Without one: the latest failed job again when `retry` (resumed where it failed), else a new job."""
    unfinished = next((job for job in reversed(jobs) if job.status in UNFINISHED_STATUSES), None)
    latest = jobs[-1] if jobs else None
    if unfinished is not None:
        job = _copy(unfinished)
        if job.status == RUNNING and job.station_id == station_id:
            job.lease_until = now + lease
            return Claim(job, None, {})
        if job.status == RUNNING and job.lease_until is not None and job.lease_until > now:
            raise JobBusy(udid, job.station_id, job.lease_until - now)
        data: dict[str, Any] = {"previous_status": job.status, "previous_station_id": job.station_id}
        if job.status == RUNNING:
            data["reason"] = "lease expired"
        return Claim(_owned(job, station_id, now, lease), "job.resumed", data)
    if retry and latest is not None and latest.status == "failed":
        job = _owned(_copy(latest), station_id, now, lease)
        job.finished_at = None
        return Claim(job, "job.retried", {"reason": reason, "previous_station_id": latest.station_id})
    fresh = JobRecord(
        id=0,
        udid=udid,
        station_id=station_id,
        status=RUNNING,
        completed_steps=[],
        step_data={},
        attempts={},
        started_at=now,
        finished_at=None,
        error_code=None,
        error_message=None,
        fence=1,
        lease_until=now + lease,
    )
    return Claim(fresh, "job.started", {})


def check_write(job: JobRecord, station_id: str, fence: int | None, now: float) -> None:
    """Refuse a write by a station that does not hold the job.

    With a fence (the pipeline's writes): the job must still be this station's, at that fence. Without one (an
    operator's action): the job must not be running under another station's live lease."""
    if fence is not None:
        if job.station_id != station_id or job.fence != fence:
            raise LeaseLost(
                f"job {job.id} of device {job.udid} was taken over by station {job.station_id}: this station no "
                "longer holds it and wrote nothing"
            )
        return
    if job.status == RUNNING and job.station_id != station_id and (job.lease_until or 0) > now:
        raise LeaseLost(f"job {job.id} of device {job.udid} runs at station {job.station_id}: act there")


def transition(
    job: JobRecord,
    station_id: str,
    now: float,
    lease: float,
    *,
    completed_step: str | None = None,
    step_data: dict | None = None,
    attempt_step: str | None = None,
    job_status: str | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> JobRecord:
    """The job after one transition: completed_step recorded once, step_data deep-merged, one attempt of
    attempt_step counted, the status set (finished_at when it becomes done or failed, cleared when it runs again),
    the error set or cleared. A job that starts running again here is this station's, under a new fence."""
    updated = _copy(job)
    if completed_step is not None and completed_step not in updated.completed_steps:
        updated.completed_steps.append(completed_step)
    if step_data:
        updated.step_data = deep_merge(updated.step_data, step_data)
    if attempt_step is not None:
        updated.attempts[attempt_step] = updated.attempts.get(attempt_step, 0) + 1
    status = job_status or updated.status
    if status == RUNNING and job.status != RUNNING:
        updated = _owned(updated, station_id, now, lease)
    elif status != RUNNING:
        updated.lease_until = None
    if status not in FINISHED_STATUSES:
        updated.finished_at = None
    elif not job.finished:
        updated.finished_at = now
    updated.status = status
    updated.error_code, updated.error_message = error_code, error_message if error_code is not None else None
    return updated


def interrupt(job: JobRecord) -> JobRecord:
    """A running job whose station stopped: interrupted, held by nobody, resumed by the next station to claim it."""
    updated = _copy(job)
    updated.status = INTERRUPTED
    updated.lease_until = None
    return updated


def _owned(job: JobRecord, station_id: str, now: float, lease: float) -> JobRecord:
    job.status = RUNNING
    job.station_id = station_id
    job.fence += 1
    job.lease_until = now + lease
    return job


def _copy(job: JobRecord) -> JobRecord:
    return dataclasses.replace(
        job,
        completed_steps=list(job.completed_steps),
        step_data=copy.deepcopy(job.step_data),
        attempts=dict(job.attempts),
    )
