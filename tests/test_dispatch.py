from __future__ import annotations

import asyncio
import datetime
import functools
import gc
import json
import logging
import sys
import threading
import time
from typing import Any

import pytest

from carecycle_webhooks import (
    CallCompletedEvent,
    Claim,
    CommitFailed,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    Event,
    EventType,
    InMemoryIdempotencyStore,
    TransactionalIdempotencyStore,
    UnknownEvent,
    WebhookConfigurationError,
    WebhookDelivery,
    WebhookResponse,
    current_delivery,
)
from carecycle_webhooks._idempotency import serves
from carecycle_webhooks._missed import MissedDoneMarks
from carecycle_webhooks.testing import sign
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, load_fixture, svix_headers


def signed(
    event_type: str = "customer.created", *, msg_id: str = "msg_1", **headers: str
) -> tuple[bytes, dict[str, str]]:
    # The package's own testing helper signs here (svix's signing code underneath).
    delivery = sign(fixture_bytes(event_type), secret=SECRET, webhook_id=msg_id, header_prefix="webhook")
    return delivery.body, dict(delivery.headers) | headers


def status(response: WebhookResponse) -> tuple[int, dict[str, Any]]:
    assert response.headers["content-type"] == "application/json"
    return response.status_code, json.loads(response.body)


class BrokenStore(InMemoryIdempotencyStore):
    def __init__(self, *, fail: set[str]) -> None:
        super().__init__()
        self.fail = fail

    def _maybe_fail(self, action: str) -> None:
        if action in self.fail:
            raise ConnectionError("store unreachable at 127.0.0.1:6379")

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        self._maybe_fail("acquire")
        return super().acquire(key, lease=lease)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        self._maybe_fail("complete")
        super().complete(key, token, ttl=ttl)

    def release(self, key: str, token: str) -> None:
        self._maybe_fail("release")
        super().release(key, token)


# --------------------------------------------------------------------------- status table


def test_handled() -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[Event] = []
    webhooks.on("customer.created")(seen.append)
    assert status(webhooks.handle(*signed())) == (200, {"status": "processed"})
    assert len(seen) == 1
    assert isinstance(seen[0], CustomerCreatedEvent)


def test_no_handler_and_unknown_events_are_2xx() -> None:
    webhooks = Dispatcher(SECRET)
    assert status(webhooks.handle(*signed("call.completed"))) == (200, {"status": "ignored"})
    body = b'{"event_type": "appointment.booked", "id": 1}'
    assert status(webhooks.handle(body, svix_headers(body))) == (200, {"status": "ignored"})


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": "v1,AAAA"},
        {"webhook-timestamp": "1"},
        {"webhook-timestamp": "soon"},
        {"webhook-id": ""},
    ],
)
def test_bad_deliveries_are_400(change: dict[str, str]) -> None:
    webhooks = Dispatcher(SECRET)
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)
    body, headers = signed()
    code, payload = status(webhooks.handle(body, headers | change))
    assert code == 400
    assert payload["error"] in {
        "no_matching_signature",
        "timestamp_too_old",
        "malformed_header",
        "missing_header",
    }
    assert ran == []


def test_body_too_large_is_413_before_parsing() -> None:
    webhooks = Dispatcher(SECRET, max_body_size=100)
    body, headers = signed()
    assert status(webhooks.handle(body, headers)) == (413, {"error": "body_too_large", "limit": 100})
    # Not even verified: a garbage body of that size gets the same answer.
    assert webhooks.handle(b"x" * 101, {}).status_code == 413


def test_default_body_limit_is_10_mib() -> None:
    webhooks = Dispatcher(SECRET)
    assert webhooks.max_body_size == 10 * 1024 * 1024
    assert webhooks.handle(b" " * (10 * 1024 * 1024 + 1), {}).status_code == 413


def test_signed_but_invalid_is_422() -> None:
    webhooks = Dispatcher(SECRET)
    payload = load_fixture("customer.created") | {"createdAt": "yesterday"}
    body = json.dumps(payload).encode()
    code, answer = status(webhooks.handle(body, svix_headers(body)))
    assert code == 422
    assert answer["error"] == "invalid_payload"
    assert "createdAt" in answer["detail"]
    assert "yesterday" not in answer["detail"]


def test_body_of_the_wrong_type_is_400() -> None:
    assert Dispatcher(SECRET).handle(None, {}).status_code == 400  # type: ignore[arg-type]


def test_handler_failure_is_500_and_logged_without_message(caplog: pytest.LogCaptureFixture) -> None:
    webhooks = Dispatcher(SECRET)

    @webhooks.on("customer.created")
    def explode(event: CustomerCreatedEvent) -> None:
        raise ValueError(f"cannot sync {event.mbi_number} born {event.date_of_birth}")

    with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
        assert status(webhooks.handle(*signed(msg_id="msg_fail"))) == (500, {"error": "handler_failed"})
    [record] = caplog.records
    text = record.getMessage()
    assert "test_dispatch.test_handler_failure_is_500_and_logged_without_message.<locals>.explode" in text
    assert "customer.created" in text
    assert "msg_fail" in text
    assert "ValueError" in text
    assert "test_dispatch.py" in text  # the traceback frames
    assert "1EG4TE5MK73" not in text
    assert "1958" not in text
    assert record.exc_info is None
    assert record.__dict__["webhook_id"] == "msg_fail"
    assert record.__dict__["event_type"] == "customer.created"


def test_exception_messages_can_be_logged_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    webhooks = Dispatcher(SECRET, log_exception_messages=True)

    @webhooks.on("customer.created")
    def explode(event: CustomerCreatedEvent) -> None:
        raise ValueError("full detail")

    with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
        webhooks.handle(*signed())
    assert caplog.records[0].exc_info is not None
    assert "full detail" in caplog.text


def test_verification_failures_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    body, headers = signed()
    with caplog.at_level(logging.WARNING, logger="carecycle_webhooks"):
        Dispatcher(SECRET).handle(body, headers | {"webhook-signature": "v1,AAAA"})
    assert "no_matching_signature" in caplog.text
    assert SECRET.removeprefix("whsec_") not in caplog.text


# --------------------------------------------------------------------------- idempotency


def test_duplicate_is_2xx_and_not_run_again() -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)
    assert status(webhooks.handle(*signed(msg_id="msg_dup"))) == (200, {"status": "processed"})
    assert status(webhooks.handle(*signed(msg_id="msg_dup"))) == (200, {"status": "duplicate"})
    assert len(ran) == 1
    assert status(webhooks.handle(*signed(msg_id="msg_other"))) == (200, {"status": "processed"})
    assert len(ran) == 2


def test_in_flight_is_409() -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)
    claim = store.acquire("msg_busy", lease=datetime.timedelta(minutes=1))
    assert claim.status == "acquired"
    code, answer = status(webhooks.handle(*signed(msg_id="msg_busy")))
    assert code == 409
    assert answer["error"] == "in_flight"
    assert ran == []


@pytest.mark.parametrize("use_async", [False, True])
def test_failed_handler_frees_the_id_for_the_retry(use_async: bool) -> None:
    # A sync handler under handle(), an async one under handle_async().
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    attempts: list[str] = []

    def attempt() -> None:
        attempts.append(current_delivery().webhook_id)
        if len(attempts) == 1:
            raise RuntimeError("downstream CRM timed out")

    if use_async:

        @webhooks.on("customer.created")
        async def flaky_async(event: CustomerCreatedEvent) -> None:
            attempt()

    else:

        @webhooks.on("customer.created")
        def flaky(event: CustomerCreatedEvent) -> None:
            attempt()

    def deliver() -> WebhookResponse:
        body, headers = signed(msg_id="msg_retry")
        return (
            asyncio.run(webhooks.handle_async(body, headers)) if use_async else webhooks.handle(body, headers)
        )

    assert deliver().status_code == 500
    assert len(store) == 0  # released: the retry may run it
    assert status(deliver()) == (200, {"status": "processed"})
    assert status(deliver()) == (200, {"status": "duplicate"})
    assert attempts == ["msg_retry", "msg_retry"]


class StatusStore(InMemoryIdempotencyStore):
    """A store that breaks the protocol: acquire answers a status it does not define."""

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        return Claim("ACQUIRED", "token")  # type: ignore[arg-type]  # the point of the test


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("store", "logged"),
    [
        (BrokenStore(fail={"acquire"}), "ConnectionError"),  # unreachable
        (StatusStore(), "unknown status 'ACQUIRED'"),  # breaks the protocol
    ],
    ids=["unreachable", "unknown-status"],
)
def test_a_store_failure_is_503_and_nothing_runs(
    use_async: bool, store: InMemoryIdempotencyStore, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)
    with caplog.at_level(logging.ERROR, logger="carecycle_webhooks"):
        response = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())
    assert status(response) == (503, {"error": "idempotency_store_unavailable"})
    assert ran == []
    assert logged in caplog.text


def test_handlers_for_lists_the_handlers_a_delivery_runs_in_order() -> None:
    webhooks = Dispatcher(SECRET)

    def first(event: CustomerCreatedEvent) -> None: ...
    async def second(event: CustomerCreatedEvent) -> None: ...
    def fallback(event: Event) -> None: ...

    webhooks.on("customer.created")(first)
    webhooks.on(CustomerCreatedEvent)(second)
    webhooks.catch_all(fallback)
    created = CustomerCreatedEvent.model_validate(load_fixture("customer.created"))
    call = CallCompletedEvent.model_validate(load_fixture("call.completed"))
    assert webhooks.handlers_for(created) == (first, second)
    assert webhooks.handlers_for(call) == (fallback,)


@pytest.mark.parametrize("use_async", [False, True])
def test_a_subclass_of_the_in_memory_store_is_called_through_its_async_methods(use_async: bool) -> None:
    calls: list[str] = []

    class Recording(InMemoryIdempotencyStore):
        async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
            calls.append("acquire_async")
            return await super().acquire_async(key, lease=lease)

        async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
            calls.append("complete_async")
            await super().complete_async(key, token, ttl=ttl)

    webhooks = Dispatcher(SECRET, idempotency_store=Recording())
    webhooks.on("customer.created")(lambda event: None)
    response = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())
    assert response.status_code == 200
    assert calls == (["acquire_async", "complete_async"] if use_async else [])


@pytest.mark.parametrize("use_async", [False, True])
def test_complete_failure_still_answers_2xx(use_async: bool) -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=BrokenStore(fail={"complete"}))
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)
    response = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())
    assert response.status_code == 200
    assert len(ran) == 1


class OneThreadStore:
    """A transactional store's shape, in memory: it notes the thread of every call."""

    def __init__(self, *, commits: bool = True) -> None:
        self.memory = InMemoryIdempotencyStore()
        self.commits = commits
        self.calls: list[tuple[str, int]] = []

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        self.calls.append(("acquire", threading.get_ident()))
        return self.memory.acquire(key, lease=lease)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        self.calls.append(("complete", threading.get_ident()))
        if not self.commits:
            self.memory.release(key, token)  # rolled back, with the handlers' writes
            raise CommitFailed("the delivery's transaction did not commit")
        self.memory.complete(key, token, ttl=ttl)

    def release(self, key: str, token: str) -> None:
        self.calls.append(("release", threading.get_ident()))
        self.memory.release(key, token)

    async def run_delivery_async(self, deliver: Any) -> Any:
        self.calls.append(("run_delivery_async", threading.get_ident()))
        return await asyncio.to_thread(deliver)


def test_a_transactional_store_serves_both_entry_points() -> None:
    store = OneThreadStore()
    assert isinstance(store, TransactionalIdempotencyStore)
    assert serves(store, synchronous=True)
    assert serves(store, synchronous=False)


def test_handle_async_runs_a_transactional_delivery_in_one_thread_off_the_loop() -> None:
    store = OneThreadStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    @webhooks.on("customer.created")
    def write(event: CustomerCreatedEvent) -> None:
        store.calls.append((f"handler {current_delivery().webhook_id}", threading.get_ident()))

    async def deliver_twice() -> tuple[int, list[WebhookResponse]]:
        loop_thread = threading.get_ident()
        return loop_thread, [await webhooks.handle_async(*signed()) for _ in range(2)]

    loop_thread, responses = asyncio.run(deliver_twice())
    assert [status(response) for response in responses] == [
        (200, {"status": "processed"}),
        (200, {"status": "duplicate"}),
    ]
    first = store.calls[:4]
    assert [name for name, _ in first] == ["run_delivery_async", "acquire", "handler msg_1", "complete"]
    assert first[0][1] == loop_thread
    assert len({thread for _, thread in first[1:]}) == 1  # one thread: one transaction
    assert first[1][1] != loop_thread


def test_handle_async_with_a_transactional_store_and_no_handler_calls_nothing() -> None:
    store = OneThreadStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    response = asyncio.run(webhooks.handle_async(*signed()))
    assert status(response) == (200, {"status": "ignored"})
    assert store.calls == []


@pytest.mark.parametrize("use_async", [False, True])
def test_a_delivery_not_committed_is_503_at_once_and_no_mark_is_kept(
    use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = OneThreadStore(commits=False)
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)
    started = time.monotonic()
    response = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())
    assert status(response)[0] == 503
    assert status(response)[1]["error"] == "not_committed"
    assert time.monotonic() - started < 1.0  # no retries of the mark: the writes are gone
    assert [name for name, _ in store.calls if name == "complete"] == ["complete"]
    assert len(webhooks._missed) == 0
    assert "CommitFailed" in caplog.text
    # Svix's retry runs the handlers again, and this time the transaction commits.
    store.commits = True
    retried = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())
    assert status(retried) == (200, {"status": "processed"})
    assert len(ran) == 2


@pytest.mark.parametrize("use_async", [False, True])
def test_release_failure_still_answers_500(use_async: bool) -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=BrokenStore(fail={"release"}))

    @webhooks.on("customer.created")
    def explode(event: CustomerCreatedEvent) -> None:
        raise RuntimeError

    response = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())
    assert response.status_code == 500


def test_keyboard_interrupt_propagates_and_frees_the_lease() -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    @webhooks.on("customer.created")
    def interrupted(event: CustomerCreatedEvent) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        webhooks.handle(*signed(msg_id="msg_ki"))
    assert store.acquire("msg_ki", lease=datetime.timedelta(seconds=5)).status == "acquired"


def test_cancelled_async_delivery_frees_the_lease() -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    started = asyncio.Event()

    @webhooks.on("customer.created")
    async def slow(event: CustomerCreatedEvent) -> None:
        started.set()
        await asyncio.sleep(30)

    async def scenario() -> None:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_cancel")))
        await asyncio.wait_for(started.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert store.acquire("msg_cancel", lease=datetime.timedelta(seconds=5)).status == "acquired"


def test_concurrent_deliveries_of_one_id_run_handlers_once() -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[int] = []
    gate = threading.Barrier(8, timeout=10)

    @webhooks.on("customer.created")
    def slow(event: CustomerCreatedEvent) -> None:
        ran.append(1)

    body, headers = signed(msg_id="msg_race")
    codes: list[int] = []

    def deliver() -> None:
        gate.wait()
        codes.append(webhooks.handle(body, headers).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(ran) == 1
    assert sorted(set(codes)) <= [200, 409]
    assert len(codes) == 8


# --------------------------------------------------------------------------- handlers


def test_registration_forms_and_order() -> None:
    webhooks = Dispatcher(SECRET)
    order: list[str] = []

    @webhooks.on("customer.updated")
    def first(event: CustomerUpdatedEvent) -> None:
        order.append("first")

    @webhooks.on(EventType.CUSTOMER_UPDATED)
    def second(event: CustomerUpdatedEvent) -> None:
        order.append("second")

    @webhooks.on(CustomerUpdatedEvent)
    def third(event: CustomerUpdatedEvent) -> None:
        order.append("third")

    assert webhooks.handle(*signed("customer.updated")).status_code == 200
    assert order == ["first", "second", "third"]
    assert "customer.updated" in repr(webhooks)


def test_the_first_failing_handler_stops_the_rest() -> None:
    webhooks = Dispatcher(SECRET)
    order: list[str] = []

    @webhooks.on("call.completed")
    def boom(event: CallCompletedEvent) -> None:
        order.append("boom")
        raise RuntimeError

    @webhooks.on("call.completed")
    def after(event: CallCompletedEvent) -> None:
        order.append("after")

    assert webhooks.handle(*signed("call.completed")).status_code == 500
    assert order == ["boom"]


def test_decorator_returns_the_handler_unchanged() -> None:
    webhooks = Dispatcher(SECRET)

    def handler(event: CallCompletedEvent) -> None:
        return None

    assert webhooks.on("call.completed")(handler) is handler
    assert webhooks.catch_all(handler) is handler  # type: ignore[arg-type]


def test_catch_all_runs_for_events_without_handlers_only() -> None:
    webhooks = Dispatcher(SECRET)
    specific: list[Event] = []
    fallback: list[Event] = []
    webhooks.on("customer.created")(specific.append)
    webhooks.catch_all(fallback.append)
    webhooks.handle(*signed("customer.created"))
    webhooks.handle(*signed("call.completed"))
    body = b'{"event_type": "appointment.booked"}'
    webhooks.handle(body, svix_headers(body))
    assert [type(e) for e in specific] == [CustomerCreatedEvent]
    assert [type(e) for e in fallback] == [CallCompletedEvent, UnknownEvent]


def test_an_event_type_this_version_does_not_know_reaches_the_catch_all() -> None:
    webhooks = Dispatcher(SECRET)
    with pytest.raises(WebhookConfigurationError, match="reaches the catch-all"):
        webhooks.on("appointment.booked")
    seen: list[Event] = []
    webhooks.catch_all(seen.append)
    body = b'{"event_type": "appointment.booked", "when": "tomorrow"}'
    assert webhooks.handle(body, svix_headers(body)).status_code == 200
    assert isinstance(seen[0], UnknownEvent)
    assert seen[0].payload["when"] == "tomorrow"


@pytest.mark.parametrize("bad", ["", 42, None, UnknownEvent, dict])
def test_on_rejects_what_is_not_an_event_type(bad: Any) -> None:
    with pytest.raises(WebhookConfigurationError, match="event type"):
        Dispatcher(SECRET).on(bad)


def test_handlers_must_be_callable() -> None:
    webhooks = Dispatcher(SECRET)
    with pytest.raises(WebhookConfigurationError, match="callable"):
        webhooks.on("customer.created")(42)  # type: ignore[type-var]
    with pytest.raises(WebhookConfigurationError, match="callable"):
        webhooks.catch_all(42)  # type: ignore[type-var]


def _no_parameter() -> None: ...
def _keyword_only(*, event: object) -> None: ...
def _two_parameters(event: object, context: object) -> None: ...


@pytest.mark.parametrize("handler", [_no_parameter, _keyword_only, _two_parameters])
def test_a_handler_that_cannot_take_the_event_is_refused_where_it_is_registered(handler: Any) -> None:
    webhooks = Dispatcher(SECRET)
    with pytest.raises(WebhookConfigurationError, match=r"handler\(event\)") as raised:
        webhooks.on("customer.created")(handler)
    assert handler.__name__ in str(raised.value)
    with pytest.raises(WebhookConfigurationError, match=r"handler\(event\)"):
        webhooks.catch_all(handler)


class _CallableHandler:
    def __call__(self, event: object) -> None: ...


def _with_a_default(event: object, retries: int = 3) -> None: ...
def _variadic(*args: object) -> None: ...


def _with_session(handler: Any) -> Any:
    """Fills a parameter of the function it wraps: the wrapper is what is called."""

    @functools.wraps(handler)
    def wrapper(event: object) -> None:
        handler(event, "session")

    return wrapper


@_with_session
def _wrapped(event: object, session: str) -> None: ...


@pytest.mark.parametrize(
    "handler",
    [
        _with_a_default,
        _variadic,
        _CallableHandler(),
        functools.partial(_two_parameters, context=1),
        print,
        _wrapped,
    ],
)
def test_handlers_that_can_take_the_event_are_accepted(handler: Any) -> None:
    webhooks = Dispatcher(SECRET)
    assert webhooks.on("customer.created")(handler) is handler
    assert webhooks.catch_all(handler) is handler


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_body_size": 0}, "max_body_size"),
        ({"lease": datetime.timedelta(0)}, "lease"),
        ({"done_ttl": 60}, "done_ttl"),
        ({"idempotency_store": object()}, "IdempotencyStore"),
        ({"tolerance": -1}, "tolerance"),
        ({"body_budget": 1024}, "body_budget"),  # smaller than the largest body
        ({"body_budget": "32MiB"}, "body_budget"),
        ({"max_body_size": 100, "body_budget": 99}, "body_budget"),
    ],
)
def test_invalid_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(WebhookConfigurationError, match=message):
        Dispatcher(SECRET, **options)


def test_the_body_budget_defaults_to_32_mib_or_the_largest_body() -> None:
    assert Dispatcher(SECRET).body_budget == 32 * 1024 * 1024
    # By default the process's dispatchers share one budget; one given is a dispatcher's own.
    assert Dispatcher(SECRET)._bodies is Dispatcher(OTHER_SECRET)._bodies
    assert Dispatcher(SECRET, body_budget=32 * 1024 * 1024)._bodies is not Dispatcher(SECRET)._bodies
    assert Dispatcher(SECRET, max_body_size=100 * 1024 * 1024).body_budget == 100 * 1024 * 1024
    assert Dispatcher(SECRET, max_body_size=100, body_budget=100).body_budget == 100


def test_handlers_see_the_delivery() -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[WebhookDelivery] = []

    @webhooks.on("customer.created")
    def handler(event: CustomerCreatedEvent) -> None:
        seen.append(current_delivery())

    body, headers = signed(msg_id="msg_seen", **{"webhook-attempt": "2"})
    webhooks.handle(body, headers)
    assert seen[0].webhook_id == "msg_seen"
    assert seen[0].attempt == 2
    assert int(seen[0].timestamp.timestamp()) == int(headers["webhook-timestamp"])
    with pytest.raises(LookupError, match="inside a webhook handler"):
        current_delivery()


def test_async_handler_from_sync_handle() -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[str] = []

    @webhooks.on("call.completed")
    async def handler(event: CallCompletedEvent) -> None:
        await asyncio.sleep(0)
        seen.append(current_delivery().webhook_id)

    assert webhooks.handle(*signed("call.completed", msg_id="msg_async")).status_code == 200
    assert seen == ["msg_async"]


def test_async_handler_from_sync_handle_inside_a_running_loop() -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[str] = []

    @webhooks.on("call.completed")
    async def handler(event: CallCompletedEvent) -> None:
        seen.append(current_delivery().webhook_id)

    @webhooks.on("call.completed")
    async def failing(event: CallCompletedEvent) -> None:
        raise RuntimeError

    async def scenario() -> int:
        return webhooks.handle(*signed("call.completed", msg_id="msg_nested")).status_code

    assert asyncio.run(scenario()) == 500
    assert seen == ["msg_nested"]


def test_handle_async_runs_sync_handlers_off_the_loop() -> None:
    webhooks = Dispatcher(SECRET)
    threads: dict[str, int] = {}
    deliveries: list[str] = []

    @webhooks.on("customer.created")
    def blocking(event: CustomerCreatedEvent) -> None:
        threads["handler"] = threading.get_ident()
        deliveries.append(current_delivery().webhook_id)

    @webhooks.on("customer.created")
    async def awaiting(event: CustomerCreatedEvent) -> None:
        threads["async"] = threading.get_ident()

    async def scenario() -> WebhookResponse:
        threads["loop"] = threading.get_ident()
        return await webhooks.handle_async(*signed(msg_id="msg_thread"))

    assert asyncio.run(scenario()).status_code == 200
    assert threads["handler"] != threads["loop"]
    assert threads["async"] == threads["loop"]
    assert deliveries == ["msg_thread"]


def test_handle_async_status_table_rows() -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store, max_body_size=5000)
    ran: list[object] = []
    webhooks.on("customer.created")(ran.append)

    async def scenario() -> list[int]:
        body, headers = signed(msg_id="msg_a")
        codes = [
            (await webhooks.handle_async(body, headers)).status_code,
            (await webhooks.handle_async(body, headers)).status_code,
            (await webhooks.handle_async(body, headers | {"webhook-signature": "v1,AA"})).status_code,
            (await webhooks.handle_async(b"x" * 5001, headers)).status_code,
        ]
        store.acquire("msg_b", lease=datetime.timedelta(minutes=1))
        codes.append((await webhooks.handle_async(*signed(msg_id="msg_b"))).status_code)
        return codes

    assert asyncio.run(scenario()) == [200, 200, 400, 413, 409]
    assert len(ran) == 1


def test_callable_object_returning_an_awaitable() -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[str] = []

    class Handler:
        def __call__(self, event: CustomerCreatedEvent) -> Any:
            async def later() -> None:
                seen.append(event.event_type)

            return later()

    webhooks.on("customer.created")(Handler())
    assert webhooks.handle(*signed()).status_code == 200
    assert asyncio.run(webhooks.handle_async(*signed(msg_id="msg_2"))).status_code == 200
    assert seen == ["customer.created", "customer.created"]


PHI_MESSAGE = "MBI 1EG4-TE5-MK72 of a patient born 1948-02-29"


class _Records(logging.Handler):
    """Every record of every logger, formatted as the default handler would, tracebacks included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(f"{record.name} {record.levelname} {logging.Formatter().format(record)}")


@pytest.fixture
def all_logs():
    """Captures the records of every logger (asyncio's included) at DEBUG."""
    records = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(records)
        root.setLevel(level)


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
def test_a_sync_handler_that_outlives_its_cancelled_request_has_its_outcome_recorded(
    outcome: str, all_logs: _Records
) -> None:
    # A timeout wrapper cancels handle_async while a sync handler's thread runs. The request
    # ends at once; the thread cannot be stopped, and what it ends with is recorded: done
    # (a retry is a duplicate) or logged our way and the lease freed (a retry runs it).
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    started = threading.Event()
    finish = threading.Event()
    ran: list[str] = []
    lease = datetime.timedelta(seconds=30)

    @webhooks.on("customer.created")
    def blocking(event: CustomerCreatedEvent) -> None:
        started.set()
        finish.wait(timeout=10)
        ran.append(current_delivery().webhook_id)
        if outcome == "fails":
            raise ValueError(PHI_MESSAGE)

    async def scenario() -> list[str]:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_outlives")))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)  # at once, not when the thread ends
        during = store.acquire("msg_outlives", lease=lease).status  # still running: held
        finish.set()
        for _ in range(500):  # the handler's thread ends, then its outcome is recorded
            await asyncio.sleep(0.01)
            claim = store.acquire("msg_outlives", lease=lease)
            if claim.status != "in_flight":
                break
        retry = await webhooks.handle_async(*signed(msg_id="msg_outlives"))
        return [during, claim.status, json.loads(retry.body).get("status", "")]

    statuses = asyncio.run(scenario())
    gc.collect()  # an unretrieved exception would be logged by asyncio now
    if outcome == "succeeds":
        assert statuses == ["in_flight", "done", "duplicate"]
        assert ran == ["msg_outlives"]
    else:
        # The failure freed the id: the check above took the lease, so the retry meets it.
        assert statuses[:2] == ["in_flight", "acquired"]
        assert "failed on customer.created msg_outlives" in "\n".join(all_logs.lines)
    text = "\n".join(all_logs.lines)
    assert PHI_MESSAGE not in text
    assert not [r for r in all_logs.records if r.name == "asyncio" and r.levelno >= logging.WARNING]


def test_a_handed_over_delivery_runs_its_remaining_handlers_then_completes(all_logs: _Records) -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    started = threading.Event()
    finish = threading.Event()
    ran: list[str] = []

    @webhooks.on("customer.created")
    def first(event: CustomerCreatedEvent) -> None:
        started.set()
        finish.wait(timeout=10)
        ran.append("first")

    @webhooks.on("customer.created")
    async def second(event: CustomerCreatedEvent) -> None:
        ran.append(f"second {current_delivery().webhook_id}")

    async def scenario() -> str:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_rest")))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        finish.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(ran) == 2:
                break
        await asyncio.sleep(0.01)
        return store.acquire("msg_rest", lease=datetime.timedelta(seconds=5)).status

    assert asyncio.run(scenario()) == "done"
    assert ran == ["first", "second msg_rest"]


@pytest.mark.parametrize("remaining", [False, True])
def test_a_loop_closing_over_a_handed_over_delivery_waits_for_its_thread(
    remaining: bool, all_logs: _Records
) -> None:
    # asyncio.run cancels every task when it ends (a server shutting down): the delivery's
    # thread still ends and its outcome is recorded; no further handler starts.
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    started = threading.Event()
    ran: list[str] = []

    @webhooks.on("customer.created")
    def blocking(event: CustomerCreatedEvent) -> None:
        started.set()
        time.sleep(0.3)
        ran.append("blocking")

    if remaining:

        @webhooks.on("customer.created")
        def after(event: CustomerCreatedEvent) -> None:
            ran.append("after")

    async def scenario() -> None:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_closing")))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Returns with the hand-over task still waiting for the thread.

    asyncio.run(scenario())
    assert ran == ["blocking"]
    # The whole delivery ran: done. Not all of it: freed, so that Svix's retry runs it all.
    expected = "acquired" if remaining else "done"
    assert store.acquire("msg_closing", lease=datetime.timedelta(seconds=5)).status == expected
    assert not [r for r in all_logs.records if r.name == "asyncio" and r.levelno >= logging.WARNING]


class _ControlFlow(BaseException):
    """Neither an Exception nor a request to stop: a handler's failure like any other."""


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("raised", [_ControlFlow, GeneratorExit])
def test_other_base_exceptions_of_handlers_are_handler_failures(
    raised: type[BaseException], use_async: bool, all_logs: _Records
) -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    def fail(event: CustomerCreatedEvent) -> None:
        raise raised(PHI_MESSAGE)

    async def fail_async(event: CustomerCreatedEvent) -> None:
        raise raised(PHI_MESSAGE)

    webhooks.on("customer.created")(fail_async if use_async else fail)
    if use_async:
        response = asyncio.run(webhooks.handle_async(*signed(msg_id="msg_base")))
    else:
        response = webhooks.handle(*signed(msg_id="msg_base"))
    assert status(response) == (500, {"error": "handler_failed"})
    assert store.acquire("msg_base", lease=datetime.timedelta(seconds=5)).status == "acquired"
    text = "\n".join(all_logs.lines)
    assert f"{raised.__qualname__} (message hidden: it may hold PHI)" in text
    assert PHI_MESSAGE not in text


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_interrupts_of_handlers_propagate_logged_without_their_message(
    raised: type[BaseException], use_async: bool, all_logs: _Records
) -> None:
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    @webhooks.on("customer.created")
    def stop(event: CustomerCreatedEvent) -> None:
        raise raised(PHI_MESSAGE)

    async def scenario() -> WebhookResponse:
        return await webhooks.handle_async(*signed(msg_id="msg_stop"))

    def deliver() -> WebhookResponse:
        return asyncio.run(scenario()) if use_async else webhooks.handle(*signed(msg_id="msg_stop"))

    with pytest.raises(raised):
        deliver()
    assert store.acquire("msg_stop", lease=datetime.timedelta(seconds=5)).status == "acquired"
    text = "\n".join(all_logs.lines)
    assert f"was interrupted on customer.created msg_stop (attempt None): {raised.__qualname__}" in text
    assert PHI_MESSAGE not in text


def test_large_bodies_are_prepared_off_the_loop() -> None:
    webhooks = Dispatcher(SECRET)
    seen: list[int] = []

    @webhooks.on("call.completed")
    async def handler(event: CallCompletedEvent) -> None:
        seen.append(len(event.transcript or ""))

    payload = load_fixture("call.completed") | {"transcript": "Agent: hello\n" * 30_000}
    body = json.dumps(payload).encode()
    assert len(body) > 256 * 1024
    response = asyncio.run(webhooks.handle_async(body, svix_headers(body)))
    assert response.status_code == 200
    assert seen == [len("Agent: hello\n" * 30_000)]


def test_handle_async_with_a_body_of_the_wrong_type() -> None:
    assert asyncio.run(Dispatcher(SECRET).handle_async(None, {})).status_code == 400  # type: ignore[arg-type]


@pytest.mark.parametrize("use_async", [False, True])
def test_done_marks_the_store_missed_are_recorded_later(use_async: bool) -> None:
    store = BrokenStore(fail={"complete"})
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[str] = []

    @webhooks.on("customer.created")
    def handler(event: CustomerCreatedEvent) -> None:
        ran.append(current_delivery().webhook_id)

    def deliver(msg_id: str) -> int:
        body, headers = signed(msg_id=msg_id)
        if use_async:
            return asyncio.run(webhooks.handle_async(body, headers)).status_code
        return webhooks.handle(body, headers).status_code

    assert deliver("msg_gap_1") == 200  # handled; the store could not record it as done
    assert deliver("msg_gap_2") == 200  # still down: both wait
    store.fail = set()  # the store is back
    assert deliver("msg_after") == 200  # records the two missed marks first
    assert deliver("msg_gap_1") == 200  # a duplicate: not run again
    assert deliver("msg_gap_2") == 200
    assert ran == ["msg_gap_1", "msg_gap_2", "msg_after"]
    assert store.acquire("msg_gap_1", lease=datetime.timedelta(seconds=1)) == Claim("done")


def test_missed_done_marks_are_bounded_and_the_oldest_go_first() -> None:
    missed = MissedDoneMarks()
    for number in range(10_050):
        missed.add(f"msg_{number}", "token")
    assert len(missed) == 10_000
    assert "msg_49" not in missed.marks
    assert next(iter(missed.marks)) == "msg_50"
    assert "msg_10049" in missed.marks


def test_marks_put_back_after_a_failure_stay_older_than_new_ones() -> None:
    store = BrokenStore(fail={"complete"})
    missed = MissedDoneMarks()
    missed.add("msg_old_1", "token-1")
    missed.add("msg_old_2", "token-2")
    missed.record(store, datetime.timedelta(hours=1))  # fails: both kept
    missed.add("msg_new", "token-3")
    assert list(missed.marks.items()) == [
        ("msg_old_1", ("token-1", None)),
        ("msg_old_2", ("token-2", None)),
        ("msg_new", ("token-3", None)),
    ]


def test_an_interrupted_recording_keeps_the_marks_and_a_newer_token_wins() -> None:
    class Interrupting(InMemoryIdempotencyStore):
        def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
            missed.add("msg_2", "newer")  # the same id missed again meanwhile (a later lease)
            raise KeyboardInterrupt

    missed = MissedDoneMarks()
    missed.add("msg_1", "token-1")
    missed.add("msg_2", "token-2")
    with pytest.raises(KeyboardInterrupt):
        missed.record(Interrupting(), datetime.timedelta(hours=1))
    assert list(missed.marks.items()) == [("msg_1", ("token-1", None)), ("msg_2", ("newer", None))]


def test_missed_done_marks_outlive_the_event_loop_of_their_delivery() -> None:
    store = BrokenStore(fail={"complete"})
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    webhooks.on("customer.created")(lambda event: None)
    # Nothing of ours is left on the loop: the mark is kept...
    assert asyncio.run(webhooks.handle_async(*signed(msg_id="msg_loop"))).status_code == 200
    assert list(webhooks._missed.marks) == ["msg_loop"]
    # ...and recorded by the next delivery, on another loop.
    store.fail = set()
    assert asyncio.run(webhooks.handle_async(*signed(msg_id="msg_next"))).status_code == 200
    assert len(webhooks._missed) == 0
    assert store.acquire("msg_loop", lease=datetime.timedelta(seconds=1)) == Claim("done")


def test_a_cancelled_delivery_keeps_the_missed_marks_it_was_recording() -> None:
    started = threading.Event()

    class HangingStore(InMemoryIdempotencyStore):
        async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
            started.set()
            await asyncio.sleep(30)

    webhooks = Dispatcher(SECRET, idempotency_store=HangingStore())
    webhooks.on("customer.created")(lambda event: None)
    webhooks._missed.add("msg_waiting", "token")

    async def scenario() -> None:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_cancelled")))
        while not started.is_set():  # noqa: ASYNC110 - set by the store, on this loop
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert list(webhooks._missed.marks.items()) == [("msg_waiting", ("token", None))]


def test_dispatch_runs_an_already_verified_event_once() -> None:
    from carecycle_webhooks import parse_unverified_event

    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    ran: list[str] = []

    @webhooks.on("customer.created")
    def handler(event: CustomerCreatedEvent) -> None:
        ran.append(current_delivery().webhook_id)

    body, headers = signed(msg_id="msg_queued")
    delivery = webhooks.verifier.verify(body, headers)  # at the endpoint
    event = parse_unverified_event(body)  # in the worker
    assert status(webhooks.dispatch(event, delivery)) == (200, {"status": "processed"})
    assert status(webhooks.dispatch(event, delivery)) == (200, {"status": "duplicate"})
    again = asyncio.run(webhooks.dispatch_async(event, delivery))
    assert status(again) == (200, {"status": "duplicate"})
    assert ran == ["msg_queued"]
    unknown = parse_unverified_event(b'{"event_type": "a.b"}')
    assert status(webhooks.dispatch(unknown, delivery)) == (200, {"status": "ignored"})


def test_a_str_body_is_held_to_the_limit_by_its_utf8_size() -> None:
    # Characters of three UTF-8 bytes: within the limit by its length, over it by its size.
    payload = load_fixture("customer.created") | {"firstName": "\u674e" * 400}
    text = json.dumps(payload, ensure_ascii=False)
    size = len(text.encode())
    assert len(text) <= size - 800
    webhooks = Dispatcher(SECRET, max_body_size=size - 1)
    assert status(webhooks.handle(text, svix_headers(text))) == (
        413,
        {"error": "body_too_large", "limit": size - 1},
    )
    webhooks = Dispatcher(SECRET, max_body_size=size)
    assert webhooks.handle(text, svix_headers(text)).status_code == 200


class SlowStore(InMemoryIdempotencyStore):
    """Like a network store: each async call waits for its round trip, then takes effect."""

    def __init__(self, *, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.started = asyncio.Event()

    async def _round_trip(self, action: str) -> None:
        if action == self.slow:
            self.started.set()
            await asyncio.sleep(0.2)

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        await self._round_trip("complete")
        self.complete(key, token, ttl=ttl)

    async def release_async(self, key: str, token: str) -> None:
        await self._round_trip("release")
        self.release(key, token)


@pytest.mark.parametrize("action", ["complete", "release"])
def test_a_request_cancelled_while_its_outcome_is_recorded_still_records_it(
    action: str, all_logs: _Records
) -> None:
    store = SlowStore(slow=action)
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    @webhooks.on("customer.created")
    async def handler(event: CustomerCreatedEvent) -> None:
        if action == "release":
            raise ValueError(PHI_MESSAGE)

    async def scenario() -> str:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_recording")))
        await asyncio.wait_for(store.started.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return store.acquire("msg_recording", lease=datetime.timedelta(seconds=5)).status

    # Done after a success; freed after a failure (logged first), so the retry runs it.
    assert asyncio.run(scenario()) == ("done" if action == "complete" else "acquired")
    text = "\n".join(all_logs.lines)
    assert ("failed on customer.created msg_recording" in text) == (action == "release")
    assert PHI_MESSAGE not in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11")
@pytest.mark.parametrize("use_async", [False, True])
def test_asyncio_timeout_around_handle_async_raises_timeout_error(use_async: bool) -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    release = threading.Event()

    async def slow_async(event: CustomerCreatedEvent) -> None:
        await asyncio.sleep(5)

    def slow_sync(event: CustomerCreatedEvent) -> None:
        release.wait(timeout=5)

    webhooks.on("customer.created")(slow_async if use_async else slow_sync)

    async def scenario() -> None:
        try:
            async with asyncio.timeout(0.1):  # type: ignore[attr-defined,unused-ignore]  # 3.11+
                await webhooks.handle_async(*signed(msg_id="msg_timeout"))
        finally:
            release.set()  # the sync handler's thread ends, so asyncio.run need not wait 5 s

    with pytest.raises(TimeoutError):
        asyncio.run(scenario())


@pytest.mark.parametrize("use_async", [False, True])
def test_a_handler_that_raises_cancelled_error_itself_fails(use_async: bool, all_logs: _Records) -> None:
    if use_async and sys.version_info < (3, 11):
        pytest.skip("Python 3.10 cannot tell a handler's CancelledError from a cancellation")
    store = InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    def sync_handler(event: CustomerCreatedEvent) -> None:
        raise asyncio.CancelledError(PHI_MESSAGE)

    async def async_handler(event: CustomerCreatedEvent) -> None:
        raise asyncio.CancelledError(PHI_MESSAGE)

    webhooks.on("customer.created")(async_handler if use_async else sync_handler)
    response = asyncio.run(webhooks.handle_async(*signed(msg_id="msg_self_cancel")))
    assert status(response) == (500, {"error": "handler_failed"})
    assert store.acquire("msg_self_cancel", lease=datetime.timedelta(seconds=5)).status == "acquired"
    assert "CancelledError (message hidden: it may hold PHI)" in "\n".join(all_logs.lines)
    assert PHI_MESSAGE not in "\n".join(all_logs.lines)


def test_a_complete_cut_short_that_then_fails_keeps_the_mark_for_later(all_logs: _Records) -> None:
    class Failing(SlowStore):
        async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
            await self._round_trip("complete")
            raise ConnectionError("redis went away")

    store = Failing(slow="complete")
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    webhooks.on("customer.created")(lambda event: None)

    async def scenario() -> None:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_cut_short")))
        await asyncio.wait_for(store.started.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert "msg_cut_short" in webhooks._missed.marks  # recorded by the next delivery
    assert "failed to complete msg_cut_short" in "\n".join(all_logs.lines)


def test_the_dispatchers_options_are_read_only_once_built() -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore(), max_body_size=1000)
    assert webhooks.max_body_size == 1000
    for name, value in [
        ("idempotency_store", None),
        ("max_body_size", 10),
        ("body_budget", 10),
        ("lease", datetime.timedelta(seconds=1)),
        ("done_ttl", datetime.timedelta(seconds=1)),
        ("log_exception_messages", True),
        ("verifier", None),
    ]:
        with pytest.raises(AttributeError):
            setattr(webhooks, name, value)
    assert webhooks.max_body_size == 1000


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 cannot tell a CancelledError from a cancellation"
)
@pytest.mark.parametrize("action", ["complete", "release"])
def test_a_store_that_raises_cancelled_error_itself_is_a_store_failure(
    action: str, all_logs: _Records
) -> None:
    class Odd(InMemoryIdempotencyStore):
        async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
            raise asyncio.CancelledError

        async def release_async(self, key: str, token: str) -> None:
            raise asyncio.CancelledError

    webhooks = Dispatcher(SECRET, idempotency_store=Odd())

    @webhooks.on("customer.created")
    def handler(event: CustomerCreatedEvent) -> None:
        if action == "release":
            raise ValueError(PHI_MESSAGE)

    response = asyncio.run(webhooks.handle_async(*signed(msg_id="msg_odd_store")))
    assert response.status_code == (200 if action == "complete" else 500)
    assert f"failed to {action} msg_odd_store" in "\n".join(all_logs.lines)
    if action == "complete":
        assert "msg_odd_store" in webhooks._missed.marks
