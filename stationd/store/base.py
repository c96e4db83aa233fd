"""The backend-neutral store interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from stationd.store.outbox import Assignment, Delivery, Settlement
from stationd.store.records import DeviceRecord, EventRecord, JobRecord, Transition


class StoreError(Exception):
    """The store cannot do what was asked (unknown record, broken rule, unusable database)."""


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
        (a key already queued adds nothing), each with a "report.queued" event; and `reader`'s place in the trail
        moves to `read_to`. Returns the new deliveries and their events."""

    @abstractmethod
    async def report_cursor(self, reader: str) -> int | None:
        """The id of the last event `reader` queued reports from; None when it never read the trail."""

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
    """Persistent devices, jobs and events; every method is one atomic transaction."""

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
    ) -> DeviceRecord:
        """Create the device in state "new", or update only the given fields (facts are merged)."""

    @abstractmethod
    async def get_device(self, udid: str) -> DeviceRecord | None:
        """The device with this UDID, if known."""

    @abstractmethod
    async def find_device(
        self, *, udid: str | None = None, serial: str | None = None, ecid: int | None = None
    ) -> DeviceRecord | None:
        """The first device matching the UDID, else the serial, else the ECID."""

    @abstractmethod
    async def list_devices(self) -> list[DeviceRecord]:
        """All devices, oldest first_seen first."""

    @abstractmethod
    async def forget_device(self, udid: str, *, station_id: str) -> bool:
        """Remove the device and its jobs, keep its events and log "device.forgotten"; False if unknown."""

    @abstractmethod
    async def open_job(self, udid: str, station_id: str) -> JobRecord:
        """The device's unfinished job, set (back) to running on this station, or a new one."""

    @abstractmethod
    async def get_job(self, job_id: int) -> JobRecord | None:
        """The job with this id, if any."""

    @abstractmethod
    async def jobs_for(self, udid: str) -> list[JobRecord]:
        """The device's jobs, oldest first."""

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
    ) -> Transition:
        """Persist one pipeline transition of device and job together with its event, in one round trip.

        Sets the device's state (and step and name, when given) and error (cleared when error_code is
        None, on device and job alike); adds completed_step to the job once; deep-merges
        step_data; counts an attempt of attempt_step; sets job_status (finished_at when it
        becomes done or failed); appends an event of `kind` carrying `data`. Returns the event with
        the device and the job as they are afterwards.
        """

    @abstractmethod
    async def allocate_counter(self, name: str) -> int:
        """The next number of a named counter (1, 2, ...): never the same number twice, even across restarts."""

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
    ) -> EventRecord:
        """Append an event; serial, location and port come from the device when it is known."""

    @abstractmethod
    async def last_event_id(self) -> int:
        """The id of the newest event, 0 when there is none: where a new reader of the trail starts."""

    @abstractmethod
    async def list_events(self, *, after_id: int = 0, udid: str | None = None, limit: int = 1000) -> list[EventRecord]:
        """Events with id greater than after_id (optionally of one device), ascending by id."""
