"""PostgreSQL stores given the other kind of pool: each line marked ``# E:`` must be a mypy error."""

from __future__ import annotations

from typing import Any

import psycopg_pool

from carecycle_webhooks.postgres import AsyncPostgresIdempotencyStore, PostgresIdempotencyStore


def build(
    sync_pool: psycopg_pool.ConnectionPool[Any], async_pool: psycopg_pool.AsyncConnectionPool[Any]
) -> None:
    PostgresIdempotencyStore(sync_pool, table="deliveries")
    AsyncPostgresIdempotencyStore(async_pool, table="deliveries")
    PostgresIdempotencyStore(async_pool)  # E: arg-type
    AsyncPostgresIdempotencyStore(sync_pool)  # E: arg-type
    PostgresIdempotencyStore(sync_pool, tabel="deliveries")  # E: call-arg
