"""The FastAPI receiver of the hostile-load tests: default limits, one handler."""

from __future__ import annotations

import os

from fastapi import FastAPI

from carecycle_webhooks import CustomerCreatedEvent, Dispatcher
from carecycle_webhooks.fastapi import webhook_view

webhooks = Dispatcher(os.environ["CARECYCLE_WEBHOOK_SECRET"])


@webhooks.on("customer.created")
def created(event: CustomerCreatedEvent) -> None:
    print("received", event.id, flush=True)  # noqa: T201 - the test reads the server's log


app = FastAPI()
app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])


@app.get("/health")
def health() -> str:
    return "ok"
