"""pytest fixtures for testing a careCycle integration; loaded automatically (a ``pytest11`` entry point).

::

    def test_new_customer_is_synced(client, carecycle_delivery):
        delivery = carecycle_delivery("customer.created", first_name="Ana")
        response = client.post("/webhooks", data=delivery.body, headers=dict(delivery.headers))
        assert response.status_code == 200

Give your app the same secret with the ``carecycle_webhook_secret`` fixture (override it
in your conftest.py to use a fixed one). Nothing heavy is imported until a fixture is used.

For an app whose ``Dispatcher`` is built at module level, return it from a
``carecycle_dispatcher`` fixture of your conftest.py: then ``carecycle_handler_calls``
gives each test a fresh in-memory idempotency store in its place, and lists the handlers
it runs::

    def test_sync(client, carecycle_delivery, carecycle_handler_calls):
        client.post("/webhooks", data=...)
        assert carecycle_handler_calls.names == ["sync_customer"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._dispatch import Dispatcher
    from ._idempotency import AsyncIdempotencyStore, IdempotencyStore
    from .testing import DeliveryFactory, HandlerCalls, SignedDelivery, Signer

__all__ = [
    "carecycle_delivery",
    "carecycle_dispatcher",
    "carecycle_handler_calls",
    "carecycle_idempotency_store",
    "carecycle_sign",
    "carecycle_webhook_secret",
]


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


@pytest.fixture
def carecycle_dispatcher() -> Dispatcher:
    """Your app's `Dispatcher`: define this fixture in your conftest.py to return it.

    ``carecycle_handler_calls`` uses it. This default fails the test, saying so.
    """
    pytest.fail(
        "carecycle_handler_calls needs your Dispatcher: define a carecycle_dispatcher fixture in "
        "your conftest.py that returns it (e.g. `from app import webhooks; return webhooks`)",
        pytrace=False,
    )


@pytest.fixture
def carecycle_idempotency_store() -> IdempotencyStore | AsyncIdempotencyStore | None:
    """The store ``carecycle_handler_calls`` gives your dispatcher for one test.

    A fresh `InMemoryIdempotencyStore`; override the fixture for another (a
    ``SQLiteIdempotencyStore`` in ``tmp_path``), or ``None`` for none.
    """
    from ._idempotency import InMemoryIdempotencyStore

    return InMemoryIdempotencyStore()


@pytest.fixture
def carecycle_handler_calls(
    carecycle_dispatcher: Dispatcher,
    carecycle_idempotency_store: IdempotencyStore | AsyncIdempotencyStore | None,
) -> Iterator[HandlerCalls]:
    """The handlers your dispatcher runs in this test, with their events; on a store of the test's own.

    For the test, the dispatcher of ``carecycle_dispatcher`` uses
    ``carecycle_idempotency_store`` (`override_idempotency_store`), and its handler calls
    are recorded (`record_handlers`); both are undone after the test.
    """
    from .testing import override_idempotency_store, record_handlers

    with (
        override_idempotency_store(carecycle_dispatcher, carecycle_idempotency_store),
        record_handlers(carecycle_dispatcher) as calls,
    ):
        yield calls
