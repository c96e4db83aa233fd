"""The backend-neutral store interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import anyio

from stationd.store.outbox import Assignment, Delivery, Settlement
from stationd.store.records import (
    BlueprintRecord,
    DeviceRecord,
    EventRecord,
    JobRecord,
    StationRecord,
    Transition,
    WorkItem,
)


class StoreError(Exception):
    """The store cannot do what was asked (unknown record, broken rule, unusable database)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (a network or server outage): trying again later can succeed."""


def deep_merge(base: dict, update: dict) -> dict:
    """A copy of base with update merged in; nested dicts merge, any other value replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Outbox(ABC):
    """The outbox: deliveries of finished iPads to reporters, and the budgets reporters share (one group of
    methods, each one atomic transaction). On a store shared by a fleet, claims and budgets are fleet-wide."""

    @abstractmethod
    async def queue_reports(
        self, events: Sequence[EventRecord], reporters: Sequence[str], *, reader: str, read_to: int, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        """One pending delivery per `device.reported` event in `events` and reporter, keyed device × reporter × job
        (a key already queued adds nothing), each with a "report.queued" event; and `reader`'s place in its
        station's trail moves to seq `read_to`. Returns the new deliveries and their events."""

    @abstractmethod
    async def report_cursor(self, reader: str) -> int | None:
        """The seq of the last event `reader` queued reports from; None when it never read the trail."""

    @abstractmethod
    async def claim_deliveries(
        self, reporter: str, *, claimer: str, limit: int, lease: float, window: float = 0.0
    ) -> list[Delivery]:
        """Claim up to `limit` due, unclaimed (or lease-expired) pending deliveries of `reporter`, oldest first, for
        `lease` seconds. With a `window`, nothing is claimed until the oldest has waited that long or `limit` are
        due: a batch gathers. Two claimers never hold the same delivery."""

    @abstractmethod
    async def release_deliveries(self, claimer: str) -> int:
        """Drop every claim `claimer` holds (a station restarting after a crash); how many."""

    @abstractmethod
    async def note_deliveries(self, keys: Iterable[str], progress: dict[str, Any]) -> None:
        """Merge `progress` into each delivery's write-ahead notes (kept across restarts)."""

    @abstractmethod
    async def settle_deliveries(
        self, settlements: Sequence[Settlement], *, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        """End a try of each delivery (done, failed, retry or defer), release its claim, and append its event
        ("report.done", "report.failed", "report.retrying"; a deferral has none). Returns them as they are after."""

    @abstractmethod
    async def requeue_deliveries(
        self, *, station_id: str, reporter: str | None = None, udid: str | None = None
    ) -> tuple[list[Delivery], list[EventRecord]]:
        """Make failed deliveries (of one reporter, one device, or all) pending and due now, tries reset."""

    @abstractmethod
    async def list_deliveries(
        self, *, udid: str | None = None, reporter: str | None = None, status: str | None = None
    ) -> list[Delivery]:
        """Deliveries, oldest first."""

    @abstractmethod
    async def next_delivery_at(self, reporter: str, *, window: float = 0.0) -> float | None:
        """When a delivery of `reporter` may next be claimed (its due time, window or lease end), or None."""

    @abstractmethod
    async def take_budget(self, name: str, *, limit: int, period: float) -> float:
        """Spend one of `limit` calls per `period` seconds of budget `name`: 0.0 when spent, else the seconds until
        one is free (or until a hold ends), with nothing spent."""

    @abstractmethod
    async def hold_budget(self, name: str, until: float) -> None:
        """Spend nothing from budget `name` before `until` (a server answered 429 with Retry-After)."""

    @abstractmethod
    async def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        """Keep where each serial was last found (or asked to be) in Apple School/Business Manager."""

    @abstractmethod
    async def get_assignments(
        self, serials: Iterable[str] | None = None, *, status: str | None = None
    ) -> dict[str, Assignment]:
        """The kept assignments (of these serials, or with this status), by serial."""


class Store(Outbox):
    """Persistent devices, jobs and events; every method is one atomic transaction.

    One contract for every backend (SQLite for one station, PostgreSQL for a fleet), tested once for all of them
    (tests/test_store.py). The job rules live in `stationd.store.rules`, not in SQL. Times come from the database's
    clock (`now`). `lease` is how long a station holds a running job without renewing it (`renew_leases`)."""

    lease: float

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date; does nothing if already open."""

    @abstractmethod
    async def close(self) -> None:
        """Wait for running calls and disconnect; does nothing if already closed."""

    @abstractmethod
    async def upsert_device(
        self,
        udid: str,
        *,
        serial: str | None = None,
        ecid: int | None = None,
        facts: dict | None = None,
        location_id: int | None = None,
        port_label: str | None = None,
        name: str | None = None,
        station_id: str | None = None,
    ) -> DeviceRecord:
        """Create the device in state "new", or update only the given fields (facts are merged).

        The port (location_id, port_label) is station-local: it is kept for `station_id`, which it needs. A device
        record shows the port it was placed on last, at any station."""

    @abstractmethod
    async def get_device(self, udid: str) -> DeviceRecord | None:
        """The device with this UDID, if known."""

    @abstractmethod
    async def find_device(
        self, *, udid: str | None = None, serial: str | None = None, ecid: int | None = None
    ) -> DeviceRecord | None:
        """The first device matching the UDID, else the serial, else the ECID."""

    @abstractmethod
    async def list_devices(self, *, station_id: str | None = None) -> list[DeviceRecord]:
        """All devices (or those ever placed at one station), oldest first_seen first."""

    @abstractmethod
    async def forget_device(self, udid: str, *, station_id: str) -> bool:
        """Remove the device and its jobs, keep its events and log "device.forgotten"; False if unknown."""

    @abstractmethod
    async def claim_job(
        self, udid: str, station_id: str, *, retry: bool = False, reason: str = "replugged", lease: float | None = None
    ) -> JobRecord:
        """The job this station works on for the device, held under a lease (`rules.claim`): its unfinished job
        kept or handed over (with a new fence and a "job.resumed" event), the failed one again when `retry`
        ("job.retried"), or a new one ("job.started"). Raises `rules.JobBusy` while another station holds it."""

    @abstractmethod
    async def renew_leases(self, station_id: str, *, lease: float | None = None) -> list[int]:
        """Extend this station's hold on its running jobs; the ids of the jobs it still holds."""

    @abstractmethod
    async def expire_leases(self, station_id: str, *, limit: int = 100) -> list[JobRecord]:
        """Turn running jobs whose station let its lease lapse into interrupted ones, each with a "job.expired"
        event in this station's trail: the fleet shows them as waiting for their iPad, not as running at a station
        that is gone."""

    @abstractmethod
    async def get_job(self, job_id: int) -> JobRecord | None:
        """The job with this id, if any."""

    @abstractmethod
    async def jobs_for(self, udid: str) -> list[JobRecord]:
        """The device's jobs, oldest first."""

    @abstractmethod
    async def latest_jobs(self) -> dict[str, JobRecord]:
        """Each device's latest job, by UDID, in one read."""

    @abstractmethod
    async def unfinished_jobs(self, *, station_id: str | None = None) -> list[JobRecord]:
        """Running and interrupted jobs (optionally of one station), oldest first."""

    @abstractmethod
    async def record_transition(
        self,
        *,
        udid: str,
        job_id: int,
        station_id: str,
        kind: str,
        state: str,
        step: str | None = None,
        completed_step: str | None = None,
        step_data: dict | None = None,
        attempt_step: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        job_status: str | None = None,
        name: str | None = None,
        data: dict | None = None,
        fence: int | None = None,
        key: str | None = None,
    ) -> Transition:
        """Persist one pipeline transition of device and job together with its event, in one round trip.

        The job changes by `rules.transition`, once `rules.check_write` let this station write it (`fence`: the
        one the station's claim gave; raises `rules.LeaseLost` when another station took the job over). `key`
        makes the call idempotent (a journal delivering it again): a key already recorded changes nothing and
        returns what is stored.

        Sets the device's state (and step and name, when given) and error (cleared when error_code is
        None, on device and job alike); adds completed_step to the job once; deep-merges
        step_data; counts an attempt of attempt_step; sets job_status (finished_at when it
        becomes done or failed); appends an event of `kind` carrying `data`. Returns the event with
        the device and the job as they are afterwards.
        """

    @abstractmethod
    async def allocate_counter(self, name: str) -> int:
        """The next number of a named counter (1, 2, ...): never the same number twice, even across restarts."""

    def health(self) -> dict[str, Any]:
        """Whether the database can be reached now ({"reachable": True, "waiting": 0}); a store that keeps a journal
        through outages says since when it cannot ("since") and how many writes wait for it ("waiting")."""
        return {"reachable": True, "waiting": 0}

    @abstractmethod
    async def now(self) -> float:
        """The database's clock (seconds since the epoch): one clock for every station of a fleet."""

    @abstractmethod
    async def mark_interrupted(self, station_id: str) -> list[JobRecord]:
        """Turn this station's running jobs (and their devices) to interrupted, each with an event."""

    @abstractmethod
    async def add_event(
        self,
        kind: str,
        *,
        station_id: str,
        udid: str | None = None,
        step: str | None = None,
        data: dict | None = None,
        job_id: int | None = None,
        key: str | None = None,
    ) -> EventRecord:
        """Append an event to `station_id`'s trail; serial comes from the device and the port from where the device
        was placed at that station. A `key` already recorded adds nothing and returns the stored event."""

    @abstractmethod
    async def last_event_id(self) -> int:
        """The id of the newest event of the whole trail, 0 when there is none."""

    @abstractmethod
    async def list_events(self, *, after_id: int = 0, udid: str | None = None, limit: int = 1000) -> list[EventRecord]:
        """Events of every station with id greater than after_id (optionally of one device), ascending by id: the
        audit trail, for reading. A reader following the trail as it grows uses `station_events`."""

    @abstractmethod
    async def last_seq(self, station_id: str) -> int:
        """The place of the station's newest event in its trail, 0 when it has none: where a new reader starts."""

    @abstractmethod
    async def station_events(self, station_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        """The station's events after `after_seq`, in commit order (`seq` counts 1, 2, ... without gaps): a
        reader that follows this cursor never skips an event, even when transactions commit out of order."""

    async def listen(self, on_notice: Callable[[dict[str, Any]], None], *, poll: float) -> None:
        """Until cancelled, call `on_notice` when something may have changed for other readers: a backend shared by
        several stations passes on its notifications ({"c": "event", "station": ..., "seq": ...}, {"c":
        "blueprint", ...}, {"c": "worklist"}); every backend calls it with {"c": "poll"} every `poll` seconds."""
        while True:
            on_notice({"c": "poll"})
            await anyio.sleep(poll)

    # -- the fleet ------------------------------------------------------------------------------------------------
    @abstractmethod
    async def heartbeat(self, station_id: str, *, fleet: str, info: dict, stopped: bool = False) -> None:
        """Say this station is alive (or, with `stopped`, that it stopped), with what it says of itself."""

    @abstractmethod
    async def list_stations(self, *, fleet: str | None = None) -> list[StationRecord]:
        """Stations that sent a heartbeat (optionally of one fleet), by id."""

    # -- the work list --------------------------------------------------------------------------------------------
    @abstractmethod
    async def import_worklist(self, items: list[WorkItem]) -> tuple[int, int]:
        """Add the items, or update those already listed, all in one transaction: (added, updated)."""

    @abstractmethod
    async def work_item(self, serial: str) -> WorkItem | None:
        """The work list's entry for this serial, if it is listed."""

    @abstractmethod
    async def list_worklist(self) -> list[WorkItem]:
        """The whole work list, by serial."""

    # -- blueprints -----------------------------------------------------------------------------------------------
    @abstractmethod
    async def push_blueprint(self, name: str, content: dict, *, station_id: str) -> BlueprintRecord:
        """Store `content` as the next version of blueprint `name` (1, 2, ...)."""

    @abstractmethod
    async def get_blueprint(self, name: str, version: int | None = None) -> BlueprintRecord | None:
        """One version of a blueprint (the newest when version is None)."""

    @abstractmethod
    async def list_blueprints(self) -> list[BlueprintRecord]:
        """Every version of every blueprint, by name and version."""
