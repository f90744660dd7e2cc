"""An in-memory store under a server with several workers: it must log a warning that says so."""

from __future__ import annotations

import os

from fastapi import FastAPI
from flask import Flask

from carecycle_webhooks import Dispatcher, InMemoryIdempotencyStore

webhooks = Dispatcher(os.environ["CARECYCLE_WEBHOOK_SECRET"], idempotency_store=InMemoryIdempotencyStore())

flask_app = Flask(__name__)
flask_app.add_url_rule("/health", view_func=lambda: "ok")

app = FastAPI()
app.add_api_route("/health", lambda: "ok")
