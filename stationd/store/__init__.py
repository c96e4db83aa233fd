"""Persistence of devices, provisioning jobs and the audit trail, behind one small interface.

SQLite (a file) is the embedded store of one station; PostgreSQL (a URL) is shared by the stations of a fleet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from stationd.redact import redact_url
from stationd.store.base import Outbox, Store, StoreError, StoreUnavailable
from stationd.store.outbox import Assignment, Delivery, DeliveryStatus, Outcome, Settlement, delivery_key
from stationd.store.records import (
    BlueprintRecord,
    DeviceRecord,
    EventRecord,
    JobRecord,
    StationRecord,
    Transition,
    WorkItem,
)
from stationd.store.rules import DEFAULT_LEASE, JobBusy, LeaseLost
from stationd.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_LEASE",
    "Assignment",
    "BlueprintRecord",
    "Delivery",
    "DeliveryStatus",
    "DeviceRecord",
    "EventRecord",
    "JobBusy",
    "JobRecord",
    "LeaseLost",
    "Outbox",
    "Outcome",
    "SQLiteStore",
    "Settlement",
    "StationRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Transition",
    "WorkItem",
    "delivery_key",
    "is_shared",
    "open_store",
]

SUPPORTED = "a file path, sqlite:///absolute/path/to/file.db, or postgresql://user@host/database"
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_shared(url_or_path: str | Path) -> bool:
    """Whether this store is a fleet's shared database (PostgreSQL), not one station's file."""
    return isinstance(url_or_path, str) and url_or_path.partition("://")[0].lower() in POSTGRES_SCHEMES


def open_store(
    url_or_path: str | Path,
    *,
    clock: Callable[[], float] = time.time,
    lease: float = DEFAULT_LEASE,
    password: str | None = None,
    pool_size: int = 8,
    timeout: float = 5.0,
    application: str = "stationd",
) -> Store:
    """The store for a file path or URL, not yet opened: use `async with open_store(...) as store`.

    A plain path and `sqlite:///absolute/path` (the path is everything after `sqlite://`) give an SQLiteStore
    (with `clock`); `postgresql://...` a PostgresStore (the database's clock; `password` when the URL has none,
    `pool_size` connections, `timeout` seconds to wait for the server)."""
    if isinstance(url_or_path, Path):
        return SQLiteStore(url_or_path, clock=clock, lease=lease)
    scheme, separator, path = url_or_path.partition("://")
    if not separator:
        return SQLiteStore(url_or_path, clock=clock, lease=lease)
    if scheme.lower() in POSTGRES_SCHEMES:
        from stationd.store.postgres import PostgresStore

        return PostgresStore(
            url_or_path, password=password, lease=lease, pool_size=pool_size, timeout=timeout, application=application
        )
    if scheme.lower() != "sqlite":
        raise StoreError(f"unsupported store scheme {scheme!r} in {redact_url(url_or_path)!r}: use {SUPPORTED}")
    if not path.startswith("/"):
        raise StoreError(f"a sqlite URL needs an absolute path, got {url_or_path!r}: use {SUPPORTED}")
    return SQLiteStore(path, clock=clock, lease=lease)
