"""structlog setup: key=value on a terminal, JSON lines otherwise; secrets are masked by one small processor
(secret fields by name, credentials inside URLs wherever they appear)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from stationd.redact import MASK, is_secret_key, redact

QUIET_LIBRARIES = ("pymobiledevice3", "httpx", "httpcore")


def mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name looks like a secret, and redact every URL in the others."""
    for key, value in list(event.items()):
        event[key] = MASK if is_secret_key(key) else redact(value)
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
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # a traceback is text too: masked like the rest
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    for library in QUIET_LIBRARIES:  # httpx logs every request's full URL at INFO
        logging.getLogger(library).setLevel(logging.WARNING)
