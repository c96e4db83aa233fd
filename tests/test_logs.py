"""Log lines: JSON off a terminal, one line per event, secrets masked whatever the caller passes."""

from __future__ import annotations

import io
import json

import structlog

from stationd import logs


def test_json_lines_mask_secret_fields() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    log = structlog.get_logger("test").bind(serial="F9FXK2", port="Hub A · 1")
    log.info("wifi.installing", ssid="SchoolNet", wifi_password="hunter2-secret", api_token="tok-123456789abcdef")
    log.warning("identity.loaded", private_key_pem="-----BEGIN PRIVATE KEY-----", authorization="Bearer x")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "wifi.installing" and first["serial"] == "F9FXK2" and first["port"] == "Hub A · 1"
    assert first["ssid"] == "SchoolNet" and first["level"] == "info" and "timestamp" in first
    assert first["wifi_password"] == "***" and first["api_token"] == "***"
    assert second["private_key_pem"] == "***" and second["authorization"] == "***"
    assert "hunter2" not in stream.getvalue() and "BEGIN PRIVATE" not in stream.getvalue()


def test_console_format_is_key_value() -> None:
    stream = io.StringIO()
    logs.configure("console", stream=stream)
    structlog.get_logger("test").info("step.started", step="erase", serial="F9FXK2")
    line = stream.getvalue()
    assert "step.started" in line and "step=erase" in line and "serial=F9FXK2" in line
