"""A FastAPI receiver whose deliveries are traced and measured (console exporters).

Run it (from the repository root)::

    pip install 'carecycle-webhooks[fastapi,otel]' opentelemetry-sdk uvicorn
    CARECYCLE_WEBHOOK_SECRET=whsec_... \\
        uvicorn --app-dir examples/observability fastapi_otel:app

Each delivery prints a span ``process customer.created`` (and one per handler); the
metrics print every minute and when the server stops. FastAPI 0.142 and later trace each
request themselves: the delivery's span is a child of the request's. With an older
FastAPI, ``opentelemetry-instrumentation-fastapi``'s
``FastAPIInstrumentor.instrument_app(app)`` does that.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from otel_setup import configure_opentelemetry

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
)
from carecycle_webhooks.fastapi import webhook_view

configure_opentelemetry("webhooks-fastapi")  # before the first delivery

log = logging.getLogger("example.otel")
# The secret from CARECYCLE_WEBHOOK_SECRET.
webhooks = Dispatcher(idempotency_store=InMemoryIdempotencyStore())


@webhooks.on("customer.created")
async def customer_created(event: CustomerCreatedEvent) -> None:
    log.info("new customer %s", event.id)  # this handler's span is current here


app = FastAPI()
app.add_api_route("/webhooks", webhook_view(webhooks), methods=["POST"])
