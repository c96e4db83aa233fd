"""structlog setup: key=value on a terminal, JSON lines otherwise; secrets are masked by one small processor."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_WORDS = ("password", "secret", "token", "private", "key_pem", "passphrase", "authorization")


def mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name looks like a secret."""
    for key in list(event):
        if any(word in key.lower() for word in SECRET_WORDS):
            event[key] = "***"
    return event


class _Stderr:
    """Whatever sys.stderr is when a line is written (test runners and daemons swap it)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(fmt: str = "auto", level: int = logging.INFO, stream: Any = None) -> None:
    """Configure structlog for the process; `fmt` is auto, json or console."""
    stream = stream or _Stderr()
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(
        colors=stream.isatty()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    logging.getLogger("pymobiledevice3").setLevel(logging.WARNING)
