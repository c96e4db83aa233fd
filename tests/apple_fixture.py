"""The fake Apple School Manager API on loopback, an API key file for it, and an asm reporter's settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stationd.emulator.apple_api import FakeAppleApi
from stationd.files import write_private_file
from stationd.httpserve import HTTPServer


@dataclass
class FakeApple:
    api: FakeAppleApi
    url: str
    key_file: Path

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A [plugins.asm] table for this fake."""
        return {
            "client_id": self.api.client_id,
            "key_id": self.api.key_id,
            "key_file": str(self.key_file),
            "server": "Lincoln MDM",
            "api_url": f"{self.url}/v1/",
            "token_url": f"{self.url}/auth/oauth2/token",
            "window": 0,
            "poll": 0,
            **overrides,
        }

    def toml(self, **overrides: Any) -> str:
        lines = []
        for key, value in self.settings(**overrides).items():
            literal = (
                str(value).lower()
                if isinstance(value, bool)
                else repr(value)
                if isinstance(value, (int, float))
                else f'"{value}"'
            )
            lines.append(f"{key} = {literal}")
        return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def fake_apple(tmp: Path, **options: Any) -> AsyncIterator[FakeApple]:
    api = FakeAppleApi(**options)
    key_file = tmp / "keys" / "asm.pem"
    write_private_file(key_file, api.key_pem())
    server = HTTPServer(api.app())
    await server.start()
    try:
        yield FakeApple(api, server.url, key_file)
    finally:
        await server.stop()
