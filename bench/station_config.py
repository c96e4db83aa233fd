"""The configuration both station benches run the daemon with (a module beside them, imported by path)."""

from __future__ import annotations

from pathlib import Path

from stationd.config import (
    ActivationConfig,
    ApiConfig,
    Config,
    EnrollmentConfig,
    OrganizationConfig,
    StationConfig,
    WifiConfig,
)
from stationd.identity import Identity

ORG = "Bench School"


def bench_config(
    workdir: Path, identity: Identity, *, devices: int, activation_url: str, mdm_url: str, listen: str | None = None
) -> Config:
    """Every step on, all iPads at once, the fake servers' URLs; the API on `listen` (None: off)."""
    return Config(
        organization=OrganizationConfig(name=ORG, identity=identity.path),
        station=StationConfig(id="bench", database=workdir / "stationd.db", concurrency=max(devices, 1)),
        wifi=WifiConfig(ssid="BenchNet", password="bench-password"),
        enrollment=EnrollmentConfig(mode="url", url=f"{mdm_url}/enroll"),
        activation=ActivationConfig(url=activation_url),
        api=ApiConfig(listen=listen),
    )
