"""Shared test setup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    """CLI tests configure logging for the whole process (level, renderer); give every test the defaults back."""
    yield
    structlog.reset_defaults()
