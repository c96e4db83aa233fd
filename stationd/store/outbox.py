"""The outbox's records: one delivery per finished iPad and enabled reporter, and the budgets reporters share.

A delivery is keyed by device × reporter × job (`delivery_key`), so reading the same `device.reported` event twice,
or on two stations of a fleet, queues it once. Its life: pending (due at `due_at`, perhaps claimed by a station for
`lease` seconds) → done, or failed with the reason in plain words. A reporter's write-ahead notes (`progress`, such
as the Apple activity a serial was sent in) survive a restart, so a delivery resumes instead of starting over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    """How one try of a delivery ended."""

    DONE = "done"  # the other system holds what was reported
    FAILED = "failed"  # it never will without a person: the message says what to do
    RETRY = "retry"  # try again at `due_at`; counts as a try
    DEFER = "defer"  # not tried (a budget was spent, a window not over): again at `due_at`, no try counted


def delivery_key(udid: str, reporter: str, job_id: int) -> str:
    """The idempotency key of one report: device × reporter × job (a re-provisioned iPad is a new job)."""
    return f"{udid}/{reporter}/{job_id}"


@dataclass
class Delivery:
    """One finished iPad's report to one reporter."""

    id: int
    key: str
    reporter: str
    udid: str
    serial: str | None
    job_id: int
    station_id: str  # the station that finished the iPad
    payload: dict[str, Any]  # the iPad's row, as `device.reported` carried it
    status: str
    attempts: int
    due_at: float
    claimed_by: str | None
    claimed_until: float | None
    progress: dict[str, Any]
    message: str | None
    created_at: float
    updated_at: float
    done_at: float | None

    def event_data(self) -> dict[str, Any]:
        """What its events on the trail carry (report.queued, report.done, ...)."""
        return {
            "reporter": self.reporter,
            "key": self.key,
            "status": self.status,
            "message": self.message,
            "attempts": self.attempts,
        }

    def summary(self) -> dict[str, Any]:
        """What the API, the dashboard and exports show of it."""
        return {
            "status": self.status,
            "message": self.message,
            "attempts": self.attempts,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Settlement:
    """The end of one try: its outcome, the plain-words message, when to try again (retry, defer) and notes."""

    key: str
    outcome: Outcome
    message: str | None = None
    due_at: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    """Where Apple School/Business Manager has a serial, as last verified (or asked for)."""

    serial: str
    status: str  # assigned, pending (asked, not verified yet), wanted (an iPad waits for it), failed, unknown
    server: str | None = None  # the MDM server's name
    message: str | None = None
    activity: str | None = None
    checked_at: float = 0.0

    @classmethod
    def from_row(cls, row: Any) -> Assignment:
        """From a row of the apple_assignments table (any backend's)."""
        return cls(**{name: row[name] for name in ASSIGNMENT_COLUMNS})


ASSIGNMENT_STATUSES = ("assigned", "pending", "wanted", "failed", "unknown")


def checked_assignments(assignments: Iterable[Assignment]) -> list[Assignment]:
    """The assignments to record, each with a known status (ValueError otherwise)."""
    given = list(assignments)
    for assignment in given:
        if assignment.status not in ASSIGNMENT_STATUSES:
            raise ValueError(f"assignment status must be one of {', '.join(ASSIGNMENT_STATUSES)}")
    return given


ASSIGNMENT_COLUMNS = ("serial", "status", "server", "message", "activity", "checked_at")
