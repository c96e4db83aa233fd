"""Persistence of devices, provisioning jobs and the audit trail, behind one small interface."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from stationd.store.base import Outbox, Store, StoreError
from stationd.store.outbox import Assignment, Delivery, DeliveryStatus, Outcome, Settlement, delivery_key
from stationd.store.records import DeviceRecord, EventRecord, JobRecord, Transition
from stationd.store.sqlite import SQLiteStore

__all__ = [
    "Assignment",
    "Delivery",
    "DeliveryStatus",
    "DeviceRecord",
    "EventRecord",
    "JobRecord",
    "Outbox",
    "Outcome",
    "SQLiteStore",
    "Settlement",
    "Store",
    "StoreError",
    "Transition",
    "delivery_key",
    "open_store",
]

SUPPORTED = "a file path, or sqlite:///absolute/path/to/file.db"


def open_store(url_or_path: str | Path, *, clock: Callable[[], float] = time.time) -> Store:
    """The store for a file path or URL, not yet opened: use `async with open_store(...) as store`.

    A plain path and `sqlite:///absolute/path` (the path is everything after `sqlite://`)
    give an SQLiteStore.
    """
    if isinstance(url_or_path, Path):
        return SQLiteStore(url_or_path, clock=clock)
    scheme, separator, path = url_or_path.partition("://")
    if not separator:
        return SQLiteStore(url_or_path, clock=clock)
    if scheme.lower() != "sqlite":
        raise StoreError(f"unsupported store scheme {scheme!r} in {url_or_path!r}: use {SUPPORTED}")
    if not path.startswith("/"):
        raise StoreError(f"a sqlite URL needs an absolute path, got {url_or_path!r}: use {SUPPORTED}")
    return SQLiteStore(path, clock=clock)
