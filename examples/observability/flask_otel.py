"""A Flask receiver whose deliveries are traced and measured (console exporters).

Run it (from the repository root)::

    pip install 'carecycle-webhooks[flask,otel]' opentelemetry-sdk gunicorn
    CARECYCLE_WEBHOOK_SECRET=whsec_... \\
        gunicorn --chdir examples/observability flask_otel:app

Each delivery prints a span ``process customer.created`` (and one per handler); the
metrics print every minute and when the server stops. With
``opentelemetry-instrumentation-flask``, add
``FlaskInstrumentor().instrument_app(app)``: the delivery's span becomes a child of the
request's. Each gunicorn worker imports this
module, so each sets its own providers; with ``--preload``, set them in a ``post_fork``
hook instead (the exporters' threads do not survive a fork).
"""

from __future__ import annotations

import logging

from flask import Flask
from otel_setup import configure_opentelemetry

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
)
from carecycle_webhooks.flask import webhook_view

configure_opentelemetry("webhooks-flask")  # before the first delivery

log = logging.getLogger("example.otel")
# The secret from CARECYCLE_WEBHOOK_SECRET.
webhooks = Dispatcher(idempotency_store=InMemoryIdempotencyStore())


@webhooks.on("customer.created")
def customer_created(event: CustomerCreatedEvent) -> None:
    log.info("new customer %s", event.id)  # this handler's span is current here


app = Flask(__name__)
app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])
