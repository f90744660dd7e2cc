"""Testing an integration: recorded handler calls, a store of each test's own, stores cleared.

The receiver here is built once for the module, as the guides build theirs at module level
(a Dispatcher with a SQLite file store), and served by Flask, FastAPI and Django through
each framework's own test client. The plugin's ``carecycle_handler_calls`` fixture gives
every test a fresh in-memory store in the SQLite store's place, and lists the handler calls.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    Dispatcher,
    Event,
    InMemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    WebhookConfigurationError,
)
from carecycle_webhooks.testing import (
    HandlerCalls,
    SignedDelivery,
    call_completed,
    customer_created,
    generate_secret,
    make_event,
    override_idempotency_store,
    record_handlers,
    sign,
)
from tests.adapters import django_settings

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its test client, and warns on import when it finds httpx.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytest_plugins = ["pytester"]

SECRET = generate_secret()


class Receiver:
    """What a guide's app.py builds at import: one dispatcher, its handlers, a SQLite store."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "carecycle-webhooks.sqlite3"
        self.store = SQLiteIdempotencyStore(self.path)
        self.webhooks = Dispatcher(SECRET, idempotency_store=self.store)
        webhooks = self.webhooks

        @webhooks.on("customer.created")
        def customer_created(event: CustomerCreatedEvent) -> None:
            if event.first_name == "Fail":
                raise ConnectionError("the CRM is down")

        @webhooks.on("call.completed")
        async def call_completed(event: CallCompletedEvent) -> None:
            await asyncio.sleep(0)

        @webhooks.catch_all
        def anything_else(event: Event) -> None:
            pass

    def rows(self) -> int:
        with sqlite3.connect(self.path) as connection:
            (count,) = connection.execute("SELECT count(*) FROM carecycle_webhooks_idempotency").fetchone()
        connection.close()
        return int(count)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Receiver:
    return Receiver(tmp_path_factory.mktemp("receiver"))


@pytest.fixture
def carecycle_dispatcher(receiver: Receiver) -> Dispatcher:
    return receiver.webhooks


@pytest.fixture
def carecycle_webhook_secret() -> str:
    return SECRET


# --------------------------------------------------------------------------- the three frameworks


def flask_post(receiver: Receiver) -> Callable[[SignedDelivery], tuple[int, dict[str, Any]]]:
    import flask

    from carecycle_webhooks.flask import webhook_view

    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(receiver.webhooks))
    client = app.test_client()

    def post(delivery: SignedDelivery) -> tuple[int, dict[str, Any]]:
        response = client.post("/webhooks", data=delivery.body, headers=dict(delivery.headers))
        return response.status_code, response.get_json()

    return post


def fastapi_post(receiver: Receiver) -> Callable[[SignedDelivery], tuple[int, dict[str, Any]]]:
    import fastapi

    from carecycle_webhooks.fastapi import webhook_view

    app = fastapi.FastAPI()
    app.add_api_route("/webhooks", webhook_view(receiver.webhooks), methods=["POST"])
    client = TestClient(app)

    def post(delivery: SignedDelivery) -> tuple[int, dict[str, Any]]:
        response = client.post("/webhooks", content=delivery.body, headers=dict(delivery.headers))
        return response.status_code, response.json()

    return post


def django_post(receiver: Receiver) -> Callable[[SignedDelivery], tuple[int, dict[str, Any]]]:
    django_settings.configure()
    from django.test import Client

    from tests.adapters.django_urls import serve

    serve(receiver.webhooks)
    client = Client(enforce_csrf_checks=True)

    def post(delivery: SignedDelivery) -> tuple[int, dict[str, Any]]:
        response = client.post(
            "/webhooks/", delivery.body, content_type="application/json", headers=dict(delivery.headers)
        )
        return response.status_code, response.json()

    return post


FRAMEWORKS = {"flask": flask_post, "fastapi": fastapi_post, "django": django_post}


@pytest.fixture(params=list(FRAMEWORKS))
def post(request: pytest.FixtureRequest, receiver: Receiver) -> Callable[[SignedDelivery], Any]:
    return FRAMEWORKS[request.param](receiver)


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_a_store_of_its_own_and_the_calls_are_recorded(
    post: Callable[[SignedDelivery], tuple[int, dict[str, Any]]],
    receiver: Receiver,
    carecycle_handler_calls: HandlerCalls,
    run: int,
) -> None:
    # The same webhook-id in every test: processed once per test, never a duplicate of another's.
    created = sign(customer_created(first_name="Ana"), secret=SECRET, webhook_id="msg_same")
    assert post(created) == (200, {"status": "processed"})
    assert post(created) == (200, {"status": "duplicate"})
    call = sign(call_completed(disposition="Busy"), secret=SECRET, webhook_id="msg_call")
    assert post(call) == (200, {"status": "processed"})
    unknown = sign(make_event("appointment.booked", id=7), secret=SECRET, webhook_id="msg_unknown")
    assert post(unknown) == (200, {"status": "processed"})

    assert carecycle_handler_calls.names == ["customer_created", "call_completed", "anything_else"]
    first, second, third = carecycle_handler_calls
    assert isinstance(first.event, CustomerCreatedEvent)
    assert first.event.first_name == "Ana"
    assert first.delivery is not None
    assert first.delivery.webhook_id == "msg_same"
    assert first.error is None
    assert isinstance(second.event, CallCompletedEvent)
    assert third.event.event_type == "appointment.booked"
    assert [event.event_type for event in carecycle_handler_calls.events()] == [
        "customer.created",
        "call.completed",
        "appointment.booked",
    ]
    assert receiver.rows() == 0  # the app's own store was not used


def test_a_failing_handler_is_recorded_with_its_error(
    post: Callable[[SignedDelivery], tuple[int, dict[str, Any]]], carecycle_handler_calls: HandlerCalls
) -> None:
    status, _ = post(sign(customer_created(first_name="Fail"), secret=SECRET))
    assert status == 500
    (call,) = carecycle_handler_calls
    assert call.name == "customer_created"
    assert isinstance(call.error, ConnectionError)
    assert "the CRM is down" not in repr(call)  # ids and types only
    assert repr(call).endswith("raised ConnectionError)")


def test_after_the_test_the_app_has_its_own_store_and_handlers_again(receiver: Receiver) -> None:
    webhooks = receiver.webhooks
    assert webhooks.idempotency_store is receiver.store
    assert "handlers_for" not in vars(webhooks)
    delivery = sign(customer_created(), secret=SECRET)
    assert webhooks.handle(delivery.body, delivery.headers).status_code == 200
    assert receiver.rows() == 1


# --------------------------------------------------------------------------- record_handlers


def recorder_dispatcher() -> tuple[Dispatcher, list[str]]:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    ran: list[str] = []

    @webhooks.on("customer.created")
    def sync_one(event: CustomerCreatedEvent) -> None:
        ran.append("sync_one")

    @webhooks.on("customer.created")
    async def async_two(event: CustomerCreatedEvent) -> None:
        await asyncio.sleep(0)
        ran.append("async_two")

    return webhooks, ran


def test_sync_and_async_handlers_are_recorded_by_handle_and_handle_async() -> None:
    webhooks, ran = recorder_dispatcher()
    with record_handlers(webhooks) as calls:
        first = sign(customer_created(), secret=SECRET)
        assert webhooks.handle(first.body, first.headers).status_code == 200
        second = sign(customer_created(), secret=SECRET)
        assert asyncio.run(webhooks.handle_async(second.body, second.headers)).status_code == 200
    assert ran == ["sync_one", "async_two"] * 2  # the handlers ran as themselves
    assert calls.names == ["sync_one", "async_two"] * 2
    assert [call.delivery.webhook_id for call in calls if call.delivery] == [first.webhook_id] * 2 + [
        second.webhook_id
    ] * 2
    assert calls.events("async_two") == calls.events(calls[1].handler)
    assert len(calls.events("sync_one")) == 2
    assert calls[0:2] == [calls[0], calls[1]]
    assert calls == list(calls)
    assert calls == tuple(calls)
    assert calls != "sync_one"
    assert calls == calls[:]
    recorded_too = HandlerCalls()
    assert calls != recorded_too
    with pytest.raises(TypeError, match="unhashable"):
        hash(calls)
    calls.clear()
    assert len(calls) == 0
    assert calls == []
    assert repr(calls) == "HandlerCalls([])"


def test_the_wrapped_async_handler_is_awaited_on_the_loop_and_cleaned_up() -> None:
    webhooks, _ = recorder_dispatcher()
    before = set(webhooks._coroutine_functions)
    with record_handlers(webhooks):
        delivery = sign(customer_created(), secret=SECRET)
        assert asyncio.run(webhooks.handle_async(delivery.body, delivery.headers)).status_code == 200
        assert len(webhooks._coroutine_functions) == len(before) + 1
    assert webhooks._coroutine_functions == before


def test_handlers_registered_during_the_recording_and_nested_recordings() -> None:
    webhooks, _ = recorder_dispatcher()
    with record_handlers(webhooks) as outer:

        @webhooks.on("call.completed")
        def later(event: CallCompletedEvent) -> None:
            pass

        with record_handlers(webhooks) as inner:
            delivery = sign(call_completed(), secret=SECRET)
            assert webhooks.handle(delivery.body, delivery.headers).status_code == 200
        assert "handlers_for" in vars(webhooks)  # the outer recording goes on
        again = sign(call_completed(), secret=SECRET)
        assert webhooks.handle(again.body, again.headers).status_code == 200
    assert inner.names == ["later"]
    assert outer.names == ["later", "later"]
    assert "handlers_for" not in vars(webhooks)
    assert webhooks.handlers_for(call_completed()) == (later,)


def test_a_handler_called_by_hand_or_returning_an_awaitable() -> None:
    webhooks = Dispatcher(SECRET)

    async def later(event: Event) -> None:
        raise ValueError("late")

    def returns_awaitable(event: CallCompletedEvent) -> object:
        return later(event)

    webhooks.on("call.completed")(returns_awaitable)
    with record_handlers(webhooks) as calls:
        returns_awaitable(call_completed()).close()  # type: ignore[attr-defined]  # by hand: not recorded
        assert calls.names == []
        delivery = sign(call_completed(), secret=SECRET)
        assert webhooks.handle(delivery.body, delivery.headers).status_code == 500
    (call,) = calls
    assert call.name == "returns_awaitable"
    assert isinstance(call.error, ValueError)


# --------------------------------------------------------------------------- override_idempotency_store


def test_override_and_restore_the_store(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    webhooks = receiver.webhooks
    delivery = sign(customer_created(), secret=SECRET, webhook_id="msg_1")
    with override_idempotency_store(webhooks, None):
        assert webhooks.idempotency_store is None
        assert webhooks.handle(delivery.body, delivery.headers).body == b'{"status": "processed"}'
        assert webhooks.handle(delivery.body, delivery.headers).body == b'{"status": "processed"}'
    memory = InMemoryIdempotencyStore()
    with override_idempotency_store(webhooks, memory):
        assert asyncio.run(webhooks.handle_async(delivery.body, delivery.headers)).status_code == 200
        assert len(memory) == 1
    assert receiver.rows() == 0
    assert webhooks.idempotency_store is receiver.store
    assert webhooks.handle(delivery.body, delivery.headers).body == b'{"status": "processed"}'
    assert receiver.rows() == 1


def test_override_with_something_that_is_no_store() -> None:
    webhooks, _ = recorder_dispatcher()
    store = webhooks.idempotency_store
    with (
        pytest.raises(WebhookConfigurationError, match="idempotency_store must implement"),
        override_idempotency_store(webhooks, object()),  # type: ignore[arg-type]
    ):
        pass
    assert webhooks.idempotency_store is store


def test_the_default_dispatcher_fixture_says_what_to_define(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_needs_it(carecycle_handler_calls):
            pass
        """
    )
    # In this process: the plugin loads from its entry point all the same. pytest-django
    # stays out, as it would find the Django settings that other tests here configured.
    result = pytester.runpytest_inprocess("-p", "no:django")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a carecycle_dispatcher fixture in your conftest.py*"])


# --------------------------------------------------------------------------- store.clear


def test_clear_forgets_every_id(tmp_path: Path) -> None:
    for store in (InMemoryIdempotencyStore(), SQLiteIdempotencyStore(tmp_path / "clear.sqlite3")):
        webhooks = Dispatcher(SECRET, idempotency_store=store)
        webhooks.on("customer.created")(lambda event: None)
        delivery = sign(customer_created(), secret=SECRET)
        assert webhooks.handle(delivery.body, delivery.headers).body == b'{"status": "processed"}'
        assert webhooks.handle(delivery.body, delivery.headers).body == b'{"status": "duplicate"}'
        store.clear()
        assert webhooks.handle(delivery.body, delivery.headers).body == b'{"status": "processed"}'
