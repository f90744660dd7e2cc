"""The receiver, tested with pytest-django's ``client`` and our ``carecycle_delivery`` fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command
from django.urls import reverse

if TYPE_CHECKING:
    from django.test import Client

    from carecycle_webhooks.testing import DeliveryFactory

pytestmark = pytest.mark.django_db  # DjangoIdempotencyStore keeps its done marks in the database


def test_a_delivery_is_processed_once(
    client: Client, carecycle_delivery: DeliveryFactory, caplog: pytest.LogCaptureFixture
) -> None:
    delivery = carecycle_delivery("customer.created", status="Active")
    url = reverse("carecycle_webhooks:webhook")  # "/webhooks/"
    headers = dict(delivery.headers)

    response = client.post(url, delivery.body, content_type="application/json", headers=headers)
    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert "customer.created: customer" in caplog.text  # the handler's own log line

    again = client.post(url, delivery.body, content_type="application/json", headers=headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})


def test_a_delivery_signed_with_another_secret_is_refused(client: Client) -> None:
    from carecycle_webhooks import testing

    delivery = testing.sign(testing.call_completed(), secret=testing.generate_secret())
    response = client.post(
        "/webhooks/", delivery.body, content_type="application/json", headers=dict(delivery.headers)
    )
    assert response.status_code == 400


def test_the_project_passes_djangos_system_checks() -> None:
    call_command("check", fail_level="WARNING")
