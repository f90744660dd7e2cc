"""The receivers of the PostgreSQL customer-order end-to-end test (``skip_out_of_order``).

Flask on a sync pool (gunicorn) or FastAPI on an async one (uvicorn). The customer.updated
handler writes, through the delivery's connection, the updatedAt it applies: a row in
``<table>_applied`` (in the order applied) and the customer's state in ``<table>_state``,
last writer wins, as a naive integrator would. A short pause inside the handler keeps the
two deliveries of a round overlapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time
from typing import TYPE_CHECKING

from carecycle_webhooks import CustomerUpdatedEvent, Dispatcher, current_delivery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DSN = os.environ["POSTGRES_DSN"]
TABLE = os.environ["STORE_TABLE"]
SECRET = os.environ["CARECYCLE_WEBHOOK_SECRET"]
PAUSE = 0.02  # seconds inside the handler, its transaction open
TIMEOUT = datetime.timedelta(seconds=2)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# The test's own tables, never input.
APPLY = f"INSERT INTO {TABLE}_applied (customer, updated_at_us, webhook_id) VALUES (%s, %s, %s)"  # noqa: S608
STATE = (
    f"INSERT INTO {TABLE}_state (customer, updated_at_us) VALUES (%s, %s) "  # noqa: S608
    "ON CONFLICT (customer) DO UPDATE SET updated_at_us = EXCLUDED.updated_at_us"
)


def rows(event: CustomerUpdatedEvent) -> tuple[tuple[str, int, str], tuple[str, int]]:
    position = (event.updated_at - EPOCH) // datetime.timedelta(microseconds=1)
    return (str(event.id), position, current_delivery().webhook_id), (str(event.id), position)


def flask_app() -> object:
    from flask import Flask
    from psycopg_pool import ConnectionPool

    from carecycle_webhooks.flask import webhook_view
    from carecycle_webhooks.postgres import PostgresIdempotencyStore, current_connection

    pool = ConnectionPool(DSN, min_size=1, max_size=4, kwargs={"connect_timeout": 2}, open=True)
    store = PostgresIdempotencyStore(pool, table=TABLE, timeout=TIMEOUT)
    webhooks = Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)

    @webhooks.on("customer.updated")
    def apply(event: CustomerUpdatedEvent) -> None:
        applied, state = rows(event)
        conn = current_connection()
        conn.execute(APPLY, applied)
        time.sleep(PAUSE)
        conn.execute(STATE, state)

    app = Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])
    app.add_url_rule("/health", view_func=lambda: "ok")
    return app


def fastapi_app() -> object:
    from fastapi import FastAPI
    from psycopg_pool import AsyncConnectionPool

    from carecycle_webhooks.fastapi import webhook_view
    from carecycle_webhooks.postgres import AsyncPostgresIdempotencyStore, current_async_connection

    pool = AsyncConnectionPool(DSN, min_size=1, max_size=4, kwargs={"connect_timeout": 2}, open=False)
    store = AsyncPostgresIdempotencyStore(pool, table=TABLE, timeout=TIMEOUT)
    webhooks = Dispatcher(SECRET, idempotency_store=store, skip_out_of_order=True)

    @webhooks.on("customer.updated")
    async def apply(event: CustomerUpdatedEvent) -> None:
        applied, state = rows(event)
        conn = current_async_connection()
        await conn.execute(APPLY, applied)
        await asyncio.sleep(PAUSE)
        await conn.execute(STATE, state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)
    app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])
    app.add_api_route("/health", lambda: "ok")
    return app


app = fastapi_app() if os.environ.get("E2E_FRAMEWORK") == "fastapi" else flask_app()
