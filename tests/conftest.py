"""Shared test setup."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgcluster
import pytest
import structlog
from browser import CHROMIUM


@pytest.fixture
def anyio_backend() -> str:
    """pymobiledevice3 is asyncio-only, so every async test runs on asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pymobiledevice3 keeps pair records under ~/.pymobiledevice3: give every test its own home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    """CLI tests configure logging for the whole process (level, renderer); give every test the defaults back."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def async_playwright() -> Any:
    """playwright's async entry point for Debian's Chromium; the test is skipped, saying why, without them."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    api = pytest.importorskip("playwright.async_api", reason="playwright is missing: pip install playwright")
    return api.async_playwright


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgcluster.Cluster]:
    """One throw-away PostgreSQL cluster for the whole session (started once, stopped at the end). Without
    PostgreSQL installed the test is skipped, saying how to install it; in CI it fails instead."""
    if pgcluster.binaries() is None:
        if os.environ.get("CI"):
            pytest.fail(pgcluster.MISSING)
        pytest.skip(pgcluster.MISSING)
    with pgcluster.cluster() as running:
        yield running


@pytest.fixture
def pg_url(postgres: pgcluster.Cluster) -> str:
    """The URL of a new, empty database in the session's cluster."""
    return postgres.create_database()
