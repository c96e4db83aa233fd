"""How long a step may take, how long to wait before a retry, and how often to retry."""

from __future__ import annotations

import random
from dataclasses import dataclass

from stationd.config import TimeoutsConfig


@dataclass(frozen=True)
class Timing:
    timeouts: TimeoutsConfig
    backoff: tuple[float, float] = (1.0, 30.0)  # first retry delay, longest delay (seconds)

    def step_timeout(self, step: str) -> float:
        return float(getattr(self.timeouts, step))

    def backoff_delay(self, tries: int) -> float:
        base, cap = self.backoff
        return min(cap, base * 2 ** (tries - 1)) * (0.75 + random.random() / 2)

    @property
    def erase_start(self) -> float:
        return self.timeouts.erase_start

    @property
    def retries(self) -> int:
        return self.timeouts.retries
