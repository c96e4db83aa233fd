"""What the PostgreSQL store and its outbox share: the connection type, the server's clock, and two small reads."""

from __future__ import annotations

from typing import Any

import psycopg

from stationd.store.base import StoreError

Conn = psycopg.AsyncConnection[dict[str, Any]]
NOW = "extract(epoch from now())::float8"  # the server's clock, fixed for the transaction


async def fetch_all(conn: Conn, sql: str, *params: Any) -> list[dict[str, Any]]:
    cursor = await conn.execute(sql, params or None)
    return await cursor.fetchall()


async def fetch_value(conn: Conn, sql: str, *params: Any) -> Any:
    """The column `v` of the one row `sql` returns."""
    rows = await fetch_all(conn, sql, *params)
    if not rows:
        raise StoreError(f"the database returned no row for {sql.split()[0]} ... where one was expected")
    return rows[0]["v"]
