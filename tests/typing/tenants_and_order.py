"""Many tenants, customer order and test records, as a user's code types them (issue 14)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from carecycle_webhooks import (
    CustomerUpdatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
    WebhookDelivery,
    WebhookResponse,
    WebhookVerifier,
    current_delivery,
)
from carecycle_webhooks.testing import SignedDelivery, Tenants, customer_history

SECRETS: dict[str, list[str]] = {"acme": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}


def from_table(tenant: str) -> Sequence[str] | None:
    return SECRETS.get(tenant)


async def from_vault(tenant: str) -> str | None:
    found = SECRETS.get(tenant)
    return None if found is None else found[0]


webhooks = Dispatcher(
    from_table,
    idempotency_store=InMemoryIdempotencyStore(),
    skip_out_of_order=True,
    skip_test_customers=True,
    secret_cache_ttl=datetime.timedelta(seconds=30),
)
async_webhooks = Dispatcher(from_vault)


@webhooks.on("customer.updated")
def upsert(event: CustomerUpdatedEvent) -> None:
    tenant: str | None = current_delivery().tenant
    assert tenant is None or event.updated_at.tzinfo is not None


def receive(body: bytes, headers: dict[str, str], tenant: str) -> WebhookResponse:
    return webhooks.handle(body, headers, tenant=tenant)


async def receive_async(body: bytes, headers: dict[str, str], tenant: str) -> WebhookResponse:
    return await async_webhooks.handle_async(body, headers, tenant=tenant)


def for_a_queue(tenant: str) -> WebhookVerifier | None:
    return webhooks.verifier_for(tenant)


def scoped(delivery: WebhookDelivery) -> str | None:
    return delivery.tenant


def scenario() -> list[SignedDelivery]:
    tenants = Tenants("acme", "globex")
    created, first, second = customer_history(2, first_name="Ana")
    tenants.rotate("acme")
    return [tenants.sign("acme", event) for event in (created, second, first)]


stale: bool = webhooks.skip_out_of_order and webhooks.skip_test_customers
