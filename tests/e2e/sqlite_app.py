"""The receiver of the SQLite end-to-end tests: Flask (``flask_app``) and FastAPI (``app``) on one store.

Every worker opens the SQLite file SQLITE_PATH. Every handler that runs appends
``<webhook-id> <pid>`` to EVENTS_LOG (appends of one short line are atomic across
processes), so that a test can count how many times each delivery ran.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from flask import Flask

from carecycle_webhooks import Dispatcher, Event, SQLiteIdempotencyStore, current_delivery
from carecycle_webhooks import fastapi as fastapi_adapter
from carecycle_webhooks import flask as flask_adapter

EVENTS_LOG = Path(os.environ["EVENTS_LOG"])

webhooks = Dispatcher(
    os.environ["CARECYCLE_WEBHOOK_SECRET"],
    idempotency_store=SQLiteIdempotencyStore(os.environ["SQLITE_PATH"]),
)


@webhooks.catch_all
def record(event: Event) -> None:
    with EVENTS_LOG.open("a") as log:
        log.write(f"{current_delivery().webhook_id} {os.getpid()}\n")


flask_app = Flask(__name__)
flask_app.add_url_rule("/webhooks", view_func=flask_adapter.webhook_view(webhooks), methods=["POST"])
flask_app.add_url_rule("/health", view_func=lambda: "ok")

app = FastAPI()
app.add_api_route("/webhooks", fastapi_adapter.webhook_view(webhooks), methods=["POST"])
app.add_api_route("/health", lambda: "ok")
