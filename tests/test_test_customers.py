"""skip_test_customers: test records are acknowledged and not handled (issue 14, item 3)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from carecycle_webhooks import Dispatcher, InMemoryIdempotencyStore, WebhookResponse
from carecycle_webhooks.testing import call_completed, customer_created, customer_updated, sign
from tests.conftest import SECRET


def answer(response: WebhookResponse) -> tuple[int, str]:
    fields = json.loads(response.body)
    return response.status_code, fields.get("status") or fields.get("error")


def run(webhooks: Dispatcher, event: Any, *, asynchronous: bool = False) -> tuple[int, str]:
    delivery = sign(event, secret=SECRET)
    if asynchronous:
        return answer(asyncio.run(webhooks.handle_async(delivery.body, delivery.headers)))
    return answer(webhooks.handle(delivery.body, delivery.headers))


def skipping(handled: list[str]) -> Dispatcher:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), skip_test_customers=True)
    webhooks.catch_all(lambda event: handled.append(event.event_type))
    return webhooks


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize(
    "event",
    [
        customer_created(test_customer=True),
        customer_updated(test_customer=True),
        call_completed(customer={"test_customer": True}),
    ],
    ids=["customer.created", "customer.updated", "call.completed"],
)
def test_a_test_customers_event_is_acknowledged_and_not_handled(event: Any, asynchronous: bool) -> None:
    handled: list[str] = []
    assert run(skipping(handled), event, asynchronous=asynchronous) == (200, "test_customer")
    assert handled == []


@pytest.mark.parametrize(
    "event",
    [
        customer_created(test_customer=False),
        customer_updated(test_customer=None),
        call_completed(customer={"test_customer": False}),
        call_completed(customer=None),
    ],
    ids=["false", "null", "call of a real customer", "call without a customer"],
)
def test_other_events_run(event: Any) -> None:
    handled: list[str] = []
    assert run(skipping(handled), event) == (200, "processed")
    assert handled == [event.event_type]


def test_off_by_default() -> None:
    handled: list[str] = []
    webhooks = Dispatcher(SECRET)
    webhooks.catch_all(lambda event: handled.append(event.event_type))
    assert run(webhooks, customer_created(test_customer=True)) == (200, "processed")
    assert handled == ["customer.created"]
    assert webhooks.skip_test_customers is False


def test_the_skip_is_logged_without_phi(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        run(skipping([]), customer_created(test_customer=True, first_name="Zelda", last_name="Quarry"))
    assert "test customer: skipped" in caplog.text
    assert "Zelda" not in caplog.text
    assert "Quarry" not in caplog.text
