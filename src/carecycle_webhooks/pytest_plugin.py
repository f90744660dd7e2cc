"""pytest fixtures for testing a careCycle integration; loaded automatically (a ``pytest11`` entry point).

::

    def test_new_customer_is_synced(client, carecycle_delivery):
        delivery = carecycle_delivery("customer.created", first_name="Ana")
        response = client.post("/webhooks", data=delivery.body, headers=dict(delivery.headers))
        assert response.status_code == 200

Give your app the same secret with the ``carecycle_webhook_secret`` fixture (override it
in your conftest.py to use a fixed one). Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import DeliveryFactory, SignedDelivery, Signer

__all__ = ["carecycle_delivery", "carecycle_sign", "carecycle_webhook_secret"]


@pytest.fixture
def carecycle_webhook_secret() -> str:
    """A fresh ``whsec_...`` secret for the test; configure your receiver with it."""
    from .testing import generate_secret

    return generate_secret()


@pytest.fixture
def carecycle_sign(carecycle_webhook_secret: str) -> Signer:
    """`carecycle_webhooks.testing.sign` with the test's secret."""
    from .testing import sign

    def signer(payload: Any, **options: Any) -> SignedDelivery:  # noqa: ANN401 - sign() checks them
        return sign(payload, secret=carecycle_webhook_secret, **options)

    return signer


@pytest.fixture
def carecycle_delivery(carecycle_webhook_secret: str) -> DeliveryFactory:
    """A signed delivery of a factory-made event.

    ``carecycle_delivery("call.completed", disposition="Busy")``: see `make_event`.
    """
    from .testing import make_event, sign

    def delivery(event_type: Any, /, **overrides: Any) -> SignedDelivery:  # noqa: ANN401 - make_event() checks them
        return sign(make_event(event_type, **overrides), secret=carecycle_webhook_secret)

    return delivery
