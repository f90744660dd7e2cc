"""The receivers of the PostgreSQL end-to-end tests: Flask on a sync pool, FastAPI on an async one.

Each customer.created handler inserts one effect row (``webhook-id``, pid) through the
delivery's connection. Faults on the first attempt of an id, by its suffix, decided once
across every worker by a marker file created with O_EXCL in STATE_DIR:

- ``-fail``: the handler raises after its insert (the insert must roll back);
- ``-kill``: the worker SIGKILLs itself after its insert, before the commit.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher, current_delivery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DSN = os.environ["POSTGRES_DSN"]
TABLE = os.environ["STORE_TABLE"]
STATE_DIR = Path(os.environ["STATE_DIR"])
SECRET = os.environ["CARECYCLE_WEBHOOK_SECRET"]
TIMEOUT = datetime.timedelta(seconds=2)
INSERT = f"INSERT INTO {TABLE}_effects (webhook_id, pid) VALUES (%s, %s)"  # noqa: S608 - the test's own table


def first_attempt(webhook_id: str) -> bool:
    try:
        os.close(os.open(STATE_DIR / webhook_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def fault(webhook_id: str) -> None:
    """Called after the handler's insert: the injected failure, on an id's first attempt."""
    if webhook_id.endswith("-fail") and first_attempt(webhook_id):
        raise RuntimeError("injected failure")
    if webhook_id.endswith("-kill") and first_attempt(webhook_id):
        os.kill(os.getpid(), signal.SIGKILL)


def flask_app() -> object:
    from flask import Flask
    from psycopg_pool import ConnectionPool

    from carecycle_webhooks.flask import webhook_view
    from carecycle_webhooks.postgres import PostgresIdempotencyStore, current_connection

    pool = ConnectionPool(DSN, min_size=1, max_size=4, kwargs={"connect_timeout": 2}, open=True)
    webhooks = Dispatcher(
        SECRET, idempotency_store=PostgresIdempotencyStore(pool, table=TABLE, timeout=TIMEOUT)
    )

    @webhooks.on("customer.created")
    def created(event: CustomerCreatedEvent) -> None:
        webhook_id = current_delivery().webhook_id
        current_connection().execute(INSERT, (webhook_id, os.getpid()))
        fault(webhook_id)

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
    webhooks = Dispatcher(
        SECRET, idempotency_store=AsyncPostgresIdempotencyStore(pool, table=TABLE, timeout=TIMEOUT)
    )

    @webhooks.on("customer.created")
    async def created(event: CustomerCreatedEvent) -> None:
        webhook_id = current_delivery().webhook_id
        await current_async_connection().execute(INSERT, (webhook_id, os.getpid()))
        fault(webhook_id)

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
