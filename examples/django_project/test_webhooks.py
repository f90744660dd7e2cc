"""The endpoint, tested with pytest-django's client fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command
from django.urls import reverse

from carecycle_webhooks import testing

if TYPE_CHECKING:
    from django.test import Client

    from carecycle_webhooks.testing import DeliveryFactory

# DjangoIdempotencyStore keeps its done marks in the database.
pytestmark = pytest.mark.django_db


def test_a_delivery_is_processed_once(
    client: Client,
    carecycle_delivery: DeliveryFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivery = carecycle_delivery("customer.created", status="Active")
    url = reverse("carecycle_webhooks:webhook")  # "/webhooks/"
    headers = dict(delivery.headers)
    json = "application/json"

    response = client.post(url, delivery.body, json, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"status": "processed"}
    assert "customer.created: customer" in caplog.text  # the handler's log

    again = client.post(url, delivery.body, json, headers=headers)
    assert again.json() == {"status": "duplicate"}


def test_another_secret_is_refused(client: Client) -> None:
    secret = testing.generate_secret()  # not the endpoint's
    delivery = testing.sign(testing.call_completed(), secret=secret)
    response = client.post(
        "/webhooks/",
        delivery.body,
        content_type="application/json",
        headers=dict(delivery.headers),
    )
    assert response.status_code == 400


def test_the_project_passes_djangos_system_checks() -> None:
    call_command("check", fail_level="WARNING")
