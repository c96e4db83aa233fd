"""A virtual iPad's storage: capacity, what iOS and the apps use, and the free space lockdownd reports."""

from __future__ import annotations

from dataclasses import dataclass

GB = 1_000_000_000  # Apple counts capacity in decimal gigabytes
# What iOS itself takes: the sealed system volume and a fresh data volume's own files. Inferred from what iPadOS 17
# devices report (TotalSystemCapacity about 8 GB, a freshly erased iPad using 2 to 3 GB of its data volume).
SYSTEM_BYTES = 8 * GB
FRESH_DATA_BYTES = int(2.5 * GB)
RESERVED_BYTES = 200_000_000  # AmountDataReserved: kept back from AmountDataAvailable for iOS (inferred)


@dataclass
class StorageSpec:
    """What a scenario says (`storage = { capacity_gb = 64, free_gb = 40 }`); free_gb None: a freshly erased iPad."""

    capacity_gb: float = 64
    free_gb: float | None = None

    def __post_init__(self) -> None:
        if self.capacity_gb * GB <= SYSTEM_BYTES + FRESH_DATA_BYTES:
            raise ValueError(f"capacity_gb must be more than {(SYSTEM_BYTES + FRESH_DATA_BYTES) / GB:g} (iOS's own)")
        if self.free_gb is not None and not 0 <= self.free_gb * GB <= self.fresh_free:
            raise ValueError(
                f"free_gb must be from 0 to {self.fresh_free / GB:g}: a {self.capacity_gb:g} GB iPad keeps "
                f"{(SYSTEM_BYTES + FRESH_DATA_BYTES) / GB:g} GB for iOS"
            )

    @property
    def total(self) -> int:
        return int(self.capacity_gb * GB)

    @property
    def data_capacity(self) -> int:
        return self.total - SYSTEM_BYTES

    @property
    def fresh_free(self) -> int:
        """Free bytes on an iPad just erased: everything but iOS."""
        return self.data_capacity - FRESH_DATA_BYTES


class Storage:
    """Bytes in use on the data volume: iOS's own, the apps', and everything else (documents, photos, caches)."""

    def __init__(self, spec: StorageSpec, app_bytes: int) -> None:
        self.spec = spec
        free = spec.fresh_free if spec.free_gb is None else int(spec.free_gb * GB)
        self.other_bytes = max(0, spec.fresh_free - free - app_bytes)

    def free(self, app_bytes: int) -> int:
        return max(0, self.spec.fresh_free - app_bytes - self.other_bytes)

    def wipe(self) -> None:
        """An erase removes every user file."""
        self.other_bytes = 0

    def disk_usage(self, app_bytes: int) -> dict[str, object]:
        """lockdownd's com.apple.disk_usage domain."""
        free = self.free(app_bytes)
        return {
            "AmountDataAvailable": max(0, free - RESERVED_BYTES),
            "AmountDataReserved": RESERVED_BYTES,
            "AmountRestoreAvailable": self.spec.data_capacity,
            "CalculateDiskUsage": "OkilyDokily",
            "MobileApplicationUsage": app_bytes,
            "TotalDataAvailable": free,
            "TotalDataCapacity": self.spec.data_capacity,
            "TotalDiskCapacity": self.spec.total,
            "TotalSystemAvailable": 0,
            "TotalSystemCapacity": SYSTEM_BYTES,
        }

    def snapshot(self, app_bytes: int) -> dict[str, object]:
        return {
            "capacity": self.spec.total,
            "data_capacity": self.spec.data_capacity,
            "free": self.free(app_bytes),
            "apps": app_bytes,
            "other": self.other_bytes,
        }
