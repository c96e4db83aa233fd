"""The `[plugins.asm]` table: the API account and how the station uses it. The asm reporter, `stationd asm` and the
DEP hold read it here, through the configuration's kinds (`Settings`), so each mistake names its key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stationd.apple.client import AppleClient, Budget
from stationd.apple.credentials import (
    API_URLS,
    PRODUCTS,
    TOKEN_URL,
    ApiAccount,
    CredentialsError,
    client_id_problem,
    load_key,
)
from stationd.config import convert
from stationd.config.convert import Invalid
from stationd.plugins import Settings
from stationd.store import Outbox

NAME = "asm"
KEYS = (
    "product",
    "client_id",
    "key_id",
    "key_file",
    "server",
    "api_url",
    "token_url",
    "window",
    "batch",
    "posts_per_hour",
    "gets_per_minute",
    "poll",
    "recheck",
    "assign_held",
    "timeout",
)
MAX_BATCH = 1000


def absolute_path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip() or not Path(value).expanduser().is_absolute():
        raise Invalid("the file's full path in double quotes", value, example='"/etc/stationd/asm-api-key.pem"')
    return Path(value).expanduser()


@dataclass(frozen=True)
class AsmSettings:
    account: ApiAccount
    server: str
    api_url: str
    token_url: str
    window: float
    batch: int
    budget: Budget
    poll: float
    recheck: float
    assign_held: bool
    timeout: float

    def client(self, outbox: Outbox, http: httpx.AsyncClient) -> AppleClient:
        return AppleClient(
            self.account, api_url=self.api_url, token_url=self.token_url, outbox=outbox, http=http, budget=self.budget
        )

    @contextlib.asynccontextmanager
    async def session(self, outbox: Outbox) -> AsyncIterator[AppleClient]:
        """A client with its own connections, for one command."""
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            yield self.client(outbox, http)


def read_settings(table: dict[str, Any], name: str = NAME) -> AsmSettings:
    """The settings, the key file read and checked; raises `PluginConfigError` naming the key."""
    read = Settings(name, table, KEYS)
    product = read.choice("product", "school", PRODUCTS)
    client_id = read.text("client_id", example='client_id = "SCHOOLAPI.27f3c4a5-..."')
    problem = client_id_problem(product, client_id)
    if problem is not None:
        raise read.error("client_id", problem)
    key_id = read.text("key_id", example='key_id = "d136aa66-..."')
    key_file = read.read("key_file", None, absolute_path, 'key_file = "/etc/stationd/asm-api-key.pem"')
    if key_file is None:
        raise read.error("key_file", 'is missing; write the API key\'s full path: key_file = "/etc/stationd/asm.pem"')
    try:
        key = load_key(key_file)
    except CredentialsError as error:
        raise read.error("key_file", str(error)) from None
    return AsmSettings(
        account=ApiAccount(product, client_id, key_id, key),
        server=read.text("server", example='server = "Lincoln Jamf"'),
        api_url=read.read("api_url", API_URLS[product], convert.url),
        token_url=read.read("token_url", TOKEN_URL, convert.url),
        window=read.number("window", 300.0),
        batch=read.read("batch", MAX_BATCH, convert.whole(1, MAX_BATCH)),
        budget=Budget(
            posts_per_hour=read.integer("posts_per_hour", 10, minimum=1),
            gets_per_minute=read.integer("gets_per_minute", 20, minimum=1),
        ),
        poll=read.read("poll", 60.0, convert.number(0.0, 3600.0)),
        recheck=read.read("recheck", 60.0, convert.number(0.0, 3600.0)),
        assign_held=read.flag("assign_held", False),
        timeout=read.read("timeout", 30.0, convert.number(0.1, 600.0, above=True)),
    )
