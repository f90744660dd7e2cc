"""The dispatcher and its handlers: ``CARECYCLE_WEBHOOKS["DISPATCHER"]`` names ``webhooks`` here."""

from __future__ import annotations

import logging

from carecycle_webhooks import CallCompletedEvent, CustomerCreatedEvent, CustomerUpdatedEvent, Dispatcher
from carecycle_webhooks.django import DjangoIdempotencyStore, secret_from_settings

log = logging.getLogger(__name__)

# The secret: CARECYCLE_WEBHOOKS["SECRET"] if set, else the CARECYCLE_WEBHOOK_SECRET variable.
# Done marks in the project's database: each delivery commits once, with the handlers' ORM writes.
webhooks = Dispatcher(secret_from_settings(), idempotency_store=DjangoIdempotencyStore())


@webhooks.on("customer.created")
@webhooks.on("customer.updated")
def sync_customer(event: CustomerCreatedEvent | CustomerUpdatedEvent) -> None:
    # Your ORM code goes here, e.g. Customer.objects.update_or_create(carecycle_id=event.id, ...)
    log.info("%s: customer %s is %s", event.event_type, event.id, event.status)


@webhooks.on("call.completed")
def call_completed(event: CallCompletedEvent) -> None:
    log.info("call %s: %s after %s ms", event.id, event.disposition, event.duration_ms)
