"""The receiver of the many-tenant end-to-end tests: Flask (``flask_app``) and FastAPI (``app``).

Each tenant's secret is read from the JSON file TENANTS_FILE (``{"acme": "whsec_..."}``)
by the secret resolver, whose answers every worker keeps for SECRET_CACHE_TTL seconds:
a test rewrites the file to rotate a secret, and no server restarts. Every worker opens
the SQLite file SQLITE_PATH; every handler that runs appends ``<tenant> <webhook-id> <pid>``
to EVENTS_LOG (appends of one short line are atomic across processes).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from fastapi import FastAPI
from flask import Flask

from carecycle_webhooks import Dispatcher, Event, SQLiteIdempotencyStore, current_delivery
from carecycle_webhooks import fastapi as fastapi_adapter
from carecycle_webhooks import flask as flask_adapter

EVENTS_LOG = Path(os.environ["EVENTS_LOG"])
TENANTS_FILE = Path(os.environ["TENANTS_FILE"])


def tenant_secret(tenant: str) -> str | None:
    """The tenant's secret, as the file says now (a database query, in a real application)."""
    secrets: dict[str, str] = json.loads(TENANTS_FILE.read_text())
    return secrets.get(tenant)


webhooks = Dispatcher(
    tenant_secret,
    idempotency_store=SQLiteIdempotencyStore(os.environ["SQLITE_PATH"]),
    secret_cache_ttl=datetime.timedelta(seconds=float(os.environ["SECRET_CACHE_TTL"])),
)


@webhooks.catch_all
def record(event: Event) -> None:
    delivery = current_delivery()
    with EVENTS_LOG.open("a") as log:
        log.write(f"{delivery.tenant} {delivery.webhook_id} {os.getpid()}\n")


flask_app = Flask(__name__)
flask_app.add_url_rule("/webhooks/<tenant>", view_func=flask_adapter.webhook_view(webhooks))
flask_app.add_url_rule("/health", view_func=lambda: "ok")

app = FastAPI()
app.include_router(fastapi_adapter.webhook_router(webhooks, path="/webhooks/{tenant}"))
app.add_api_route("/health", lambda: "ok")
