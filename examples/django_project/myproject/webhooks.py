"""The dispatcher and its handlers: CARECYCLE_WEBHOOKS["DISPATCHER"]."""

from __future__ import annotations

import logging

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
)
from carecycle_webhooks.django import (
    DjangoIdempotencyStore,
    secret_from_settings,
)

log = logging.getLogger(__name__)

# The secret: CARECYCLE_WEBHOOKS["SECRET"], else CARECYCLE_WEBHOOK_SECRET.
# The done marks: in the project's database, committed with your writes.
webhooks = Dispatcher(
    secret_from_settings(),
    idempotency_store=DjangoIdempotencyStore(),
    skip_test_customers=True,  # careCycle's test records: acknowledged, not handled
)


@webhooks.on("customer.created")
@webhooks.on("customer.updated")
def sync_customer(event: CustomerCreatedEvent | CustomerUpdatedEvent) -> None:
    # Your ORM code, e.g. Customer.objects.update_or_create(...)
    log.info("%s: customer %s", event.event_type, event.id)


@webhooks.on("call.completed")
def call_completed(event: CallCompletedEvent) -> None:
    log.info("call %s: %s", event.id, event.disposition)
