"""Plain records returned by every store backend."""

from __future__ import annotations

from dataclasses import dataclass

from stationd.states import JobStatus

RUNNING = JobStatus.RUNNING
INTERRUPTED = JobStatus.INTERRUPTED
DONE = JobStatus.DONE
FAILED = JobStatus.FAILED
JOB_STATUSES = tuple(JobStatus)
UNFINISHED_STATUSES = (RUNNING, INTERRUPTED)
FINISHED_STATUSES = (DONE, FAILED)


@dataclass
class DeviceRecord:
    """One device the station has seen, with its pipeline state."""

    udid: str
    serial: str | None
    ecid: int | None
    facts: dict
    state: str
    step: str | None
    error_code: str | None
    error_message: str | None
    location_id: int | None
    port_label: str | None
    name: str | None
    first_seen: float
    updated_at: float


@dataclass
class JobRecord:
    """One provisioning run of one device."""

    id: int
    udid: str
    station_id: str
    status: str
    completed_steps: list[str]
    step_data: dict
    attempts: dict[str, int]
    started_at: float
    finished_at: float | None
    error_code: str | None
    error_message: str | None
    fence: int = 0  # raised at every hand-over: a station holding an older fence can no longer write the job
    lease_until: float | None = None  # while running: until when its station holds it (the database's clock)

    @property
    def finished(self) -> bool:
        """True once the job is done or failed."""
        return self.status in FINISHED_STATUSES


@dataclass
class Transition:
    """What one transition leaves: its event, and the device and job as they are after it."""

    event: EventRecord
    device: DeviceRecord
    job: JobRecord


@dataclass
class EventRecord:
    """One entry of the append-only audit trail."""

    id: int
    ts: float
    station_id: str
    kind: str
    udid: str | None
    serial: str | None
    location_id: int | None
    port_label: str | None
    step: str | None
    data: dict
    job_id: int | None = None
    seq: int = 0  # the event's place in its station's trail: 1, 2, ... in commit order, without gaps


@dataclass
class StationRecord:
    """One station of a fleet, as its last heartbeat left it."""

    id: str
    fleet: str
    info: dict  # host, API URL, version, counts: what the station says of itself (never a secret)
    last_seen: float
    age: float  # seconds since its last heartbeat, by the database's clock
    stopped: bool  # it said goodbye when it stopped


@dataclass(frozen=True)
class WorkItem:
    """One serial on the work list, with what the school's list says of it."""

    serial: str
    name: str | None = None
    group: str | None = None
    notes: str | None = None


@dataclass
class BlueprintRecord:
    """One numbered version of a fleet's provisioning settings."""

    name: str
    version: int
    created_at: float
    station_id: str
    content: dict
