"""What every framework adapter must do, written once.

`AdapterContract` holds one test per row of the status table (and the other promises
of the adapters: raw body, ``svix-*`` headers, 405). Each adapter's test module
subclasses it and implements `AdapterContract.send` with that framework's own test
client; pytest collects the inherited tests there.
"""

from __future__ import annotations

import datetime
import importlib
import io
import json
import sys
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from opentelemetry.trace import SpanKind

from carecycle_webhooks import (
    Claim,
    CustomerCreatedEvent,
    CustomerUpdatedEvent,
    Dispatcher,
    Event,
    InMemoryIdempotencyStore,
    UnknownEvent,
    WebhookResponse,
)
from carecycle_webhooks._otel import DELIVERIES
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, load_fixture, svix_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from carecycle_webhooks import Headers
    from carecycle_webhooks._budget import BodyBudget
    from tests.otel import Telemetry

MSG_ID = "msg_2Lm1bFf5ZsqHw5e2yd0DgPzm5Tx"
UNKNOWN_BODY = b'{"event_type": "appointment.booked", "id": "a9b5cc1e-2f3c-4a0e-9d53-1c2b3d4e5f60"}'


class Reply(NamedTuple):
    """A framework test client's response, reduced to what the contract checks."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    """A dispatcher whose ``customer.created`` handler records the events it gets."""

    def __init__(self, **options: Any) -> None:
        self.dispatcher = Dispatcher(SECRET, **options)
        self.events: list[Event] = []

        @self.dispatcher.on("customer.created")
        def record(event: CustomerCreatedEvent) -> None:
            self.events.append(event)


class CustomAnswer(Dispatcher):
    """A dispatcher (subclassed by an application) answering with headers of its own."""

    ANSWER = WebhookResponse(
        202, b"queued", {"content-type": "text/plain; charset=utf-8", "x-queue-position": "7"}
    )

    def handle(self, body: bytes | str, headers: Headers, *, tenant: str | None = None) -> WebhookResponse:
        return self.ANSWER

    async def handle_async(
        self, body: bytes | str, headers: Headers, *, tenant: str | None = None
    ) -> WebhookResponse:
        return self.ANSWER


class EndlessStream(io.RawIOBase):
    """A request body that never ends, counting what is read of it."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = len(buffer)
        buffer[:size] = b" " * size
        self.bytes_read += size
        return size


class UnreachableStore:
    """An idempotency store whose backend is down."""

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        raise ConnectionError("redis is down")

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        raise ConnectionError("redis is down")

    def release(self, key: str, token: str) -> None:
        raise ConnectionError("redis is down")

    async def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        raise ConnectionError("redis is down")

    async def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:
        raise ConnectionError("redis is down")

    async def release_async(self, key: str, token: str) -> None:
        raise ConnectionError("redis is down")


class AsyncRedisClient:
    """Looks like a ``redis.asyncio.Redis`` to `RedisIdempotencyStore`; never called here."""

    async def eval(self, *args: object) -> object:  # pragma: no cover - only its kind matters
        raise AssertionError("not called")

    async def execute_command(self, *args: object) -> object:  # pragma: no cover
        raise AssertionError("not called")


def bodies(dispatcher: Dispatcher) -> BodyBudget:
    """What the dispatcher's adapters hold of its body budget now."""
    return dispatcher._bodies  # pyright: ignore[reportPrivateUsage]


def import_without(monkeypatch: pytest.MonkeyPatch, adapter: str, *frameworks: str) -> ImportError:
    """Import ``carecycle_webhooks.<adapter>`` afresh as if ``frameworks`` were not installed."""
    for name in list(sys.modules):
        if name.split(".")[0] in frameworks:
            monkeypatch.setitem(sys.modules, name, None)
    for framework in frameworks:
        monkeypatch.setitem(sys.modules, framework, None)
    monkeypatch.delitem(sys.modules, f"carecycle_webhooks.{adapter}", raising=False)
    with pytest.raises(ImportError) as excinfo:
        importlib.import_module(f"carecycle_webhooks.{adapter}")
    return excinfo.value


def odd_body() -> bytes:
    """A valid event as no JSON library would write it: odd whitespace, raw non-ASCII."""
    payload = load_fixture("customer.created")
    payload["firstName"] = "Zoë 🩺 Ñúñez"
    text = json.dumps(payload, ensure_ascii=False, indent="\t", separators=(" ,", " :  "))
    return ("\n  " + text + " \r\n").encode()


class AdapterContract:
    """The status table and the adapter promises; subclasses provide `send`."""

    budgeted = True  # the adapter takes bodies from the dispatcher's body budget

    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        raise NotImplementedError

    # ------------------------------------------------------------------ 2xx

    def test_handled(self) -> None:
        recorder = Recorder()
        body = fixture_bytes("customer.created")
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 200
        assert reply.json() == {"status": "processed"}
        assert reply.headers["content-type"] == "application/json"
        assert [type(event) for event in recorder.events] == [CustomerCreatedEvent]

    def test_every_header_of_the_dispatchers_answer_reaches_the_client(self) -> None:
        body = fixture_bytes("customer.created")
        reply = self.send(CustomAnswer(SECRET), body, svix_headers(body))
        assert reply.status == 202
        assert reply.body == b"queued"
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        assert reply.headers["x-queue-position"] == "7"

    def test_no_handler_for_the_event_type(self) -> None:
        recorder = Recorder()
        body = fixture_bytes("call.completed")
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 200
        assert reply.json() == {"status": "ignored"}
        assert recorder.events == []

    def test_unknown_event_without_handler(self) -> None:
        reply = self.send(Recorder().dispatcher, UNKNOWN_BODY, svix_headers(UNKNOWN_BODY))
        assert reply.status == 200
        assert reply.json() == {"status": "ignored"}

    def test_unknown_event_reaches_the_catch_all(self) -> None:
        recorder = Recorder()
        seen: list[Event] = []
        recorder.dispatcher.catch_all(seen.append)
        reply = self.send(recorder.dispatcher, UNKNOWN_BODY, svix_headers(UNKNOWN_BODY))
        assert reply.status == 200
        assert reply.json() == {"status": "processed"}
        assert len(seen) == 1
        assert isinstance(seen[0], UnknownEvent)
        assert seen[0].event_type == "appointment.booked"

    def test_duplicate_is_acknowledged_and_not_run_again(self) -> None:
        recorder = Recorder(idempotency_store=InMemoryIdempotencyStore())
        body = fixture_bytes("customer.created")
        first = self.send(recorder.dispatcher, body, svix_headers(body))
        again = self.send(recorder.dispatcher, body, svix_headers(body))
        assert (first.status, first.json()) == (200, {"status": "processed"})
        assert (again.status, again.json()) == (200, {"status": "duplicate"})
        assert len(recorder.events) == 1

    # ------------------------------------------------------------------ 4xx

    def test_in_flight_elsewhere_is_409(self) -> None:
        store = InMemoryIdempotencyStore()
        assert store.acquire(MSG_ID, lease=datetime.timedelta(minutes=5)).status == "acquired"
        recorder = Recorder(idempotency_store=store)
        body = fixture_bytes("customer.created")
        reply = self.send(recorder.dispatcher, body, svix_headers(body, msg_id=MSG_ID))
        assert reply.status == 409
        assert reply.json()["error"] == "in_flight"
        assert recorder.events == []

    @pytest.mark.parametrize(
        ("case", "reason"),
        [
            ("no headers", "missing_header"),
            ("no signature", "missing_header"),
            ("malformed timestamp", "malformed_header"),
            ("malformed signature", "malformed_header"),
            ("other secret", "no_matching_signature"),
            ("stale", "timestamp_too_old"),
            ("future", "timestamp_too_new"),
        ],
    )
    def test_unverifiable_delivery_is_400(self, case: str, reason: str) -> None:
        recorder = Recorder()
        body = fixture_bytes("customer.created")
        now = int(time.time())
        headers = {
            "no headers": {},
            "no signature": {k: v for k, v in svix_headers(body).items() if k != "webhook-signature"},
            "malformed timestamp": {**svix_headers(body), "webhook-timestamp": "yesterday"},
            "malformed signature": {**svix_headers(body), "webhook-signature": "v1," + "A" * 9000},
            "other secret": svix_headers(body, secret=OTHER_SECRET),
            "stale": svix_headers(body, timestamp=now - 3600),
            "future": svix_headers(body, timestamp=now + 3600),
        }[case]
        reply = self.send(recorder.dispatcher, body, headers)
        assert reply.status == 400
        assert reply.json()["error"] == reason
        assert recorder.events == []

    def test_tampered_body_is_400(self) -> None:
        recorder = Recorder()
        body = fixture_bytes("customer.created")
        headers = svix_headers(body)
        reply = self.send(recorder.dispatcher, body.replace(b"{", b"{ ", 1), headers)
        assert reply.status == 400
        assert reply.json()["error"] == "no_matching_signature"

    def test_body_over_the_limit_is_413(self) -> None:
        body = fixture_bytes("customer.created")
        recorder = Recorder(max_body_size=len(body) - 1)
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 413
        assert reply.json() == {"error": "body_too_large", "limit": len(body) - 1}
        assert recorder.events == []

    def test_body_at_the_limit_is_accepted(self) -> None:
        body = fixture_bytes("customer.created")
        recorder = Recorder(max_body_size=len(body))
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 200
        assert len(recorder.events) == 1

    @pytest.mark.parametrize(
        "body",
        [b"not json", b'{"event_type": "customer.created"}', b"[]"],
        ids=["not-json", "missing-fields", "not-an-object"],
    )
    def test_signed_but_invalid_is_422(self, body: bytes) -> None:
        recorder = Recorder()
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 422
        assert reply.json()["error"] == "invalid_payload"
        assert recorder.events == []

    def test_get_is_405(self) -> None:
        reply = self.send(Recorder().dispatcher, b"", {}, method="GET")
        assert reply.status == 405
        assert "POST" in reply.headers["allow"]

    # ------------------------------------------------------------------ 5xx

    def test_handler_raised_is_500(self) -> None:
        dispatcher = Dispatcher(SECRET)

        @dispatcher.on("customer.created")
        def fail(event: CustomerCreatedEvent) -> None:
            raise RuntimeError(f"cannot save {event.first_name}")

        body = fixture_bytes("customer.created")
        reply = self.send(dispatcher, body, svix_headers(body))
        assert reply.status == 500
        assert reply.json() == {"error": "handler_failed"}
        assert b"cannot save" not in reply.body

    def test_failed_delivery_runs_again_on_retry(self) -> None:
        dispatcher = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
        attempts: list[object] = []

        @dispatcher.on("customer.created")
        def flaky(event: CustomerCreatedEvent) -> None:
            attempts.append(event.id)
            if len(attempts) == 1:
                raise RuntimeError("database restarting")

        body = fixture_bytes("customer.created")
        assert self.send(dispatcher, body, svix_headers(body)).status == 500
        assert self.send(dispatcher, body, svix_headers(body)).status == 200
        assert self.send(dispatcher, body, svix_headers(body)).status == 200
        assert len(attempts) == 2

    def test_unreachable_store_is_503(self) -> None:
        recorder = Recorder(idempotency_store=UnreachableStore())
        body = fixture_bytes("customer.created")
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 503
        assert reply.json() == {"error": "idempotency_store_unavailable"}
        assert recorder.events == []

    # ------------------------------------------------------------------ the raw body

    def test_raw_body_is_verified_as_received(self) -> None:
        recorder = Recorder()
        body = odd_body()
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 200, reply.body
        assert isinstance(recorder.events[0], CustomerCreatedEvent)
        assert recorder.events[0].first_name == "Zoë 🩺 Ñúñez"

    def test_svix_header_names(self) -> None:
        recorder = Recorder()
        body = fixture_bytes("customer.created")
        reply = self.send(recorder.dispatcher, body, svix_headers(body, prefix="svix"))
        assert reply.status == 200
        assert len(recorder.events) == 1

    def test_header_names_in_any_case(self) -> None:
        recorder = Recorder()
        body = fixture_bytes("customer.created")
        headers = {name.upper(): value for name, value in svix_headers(body).items()}
        reply = self.send(recorder.dispatcher, body, headers)
        assert reply.status == 200

    # ------------------------------------------------------------------ the body budget

    def test_a_delivery_that_does_not_fit_the_body_budget_is_503_before_reading(self) -> None:
        body = fixture_bytes("customer.created")
        recorder = Recorder(max_body_size=len(body), body_budget=len(body) + 100)
        budget = bodies(recorder.dispatcher)
        assert budget.take(101)  # other deliveries being read hold part of it
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 503
        assert reply.headers["retry-after"] == "5"
        assert reply.json()["error"] == "busy"
        assert recorder.events == []
        budget.give_back(101)
        assert budget.used == 0
        reply = self.send(recorder.dispatcher, body, svix_headers(body))
        assert reply.status == 200
        assert len(recorder.events) == 1

    @pytest.mark.parametrize(
        ("case", "status", "outcome"),
        [("handled", 200, "processed"), ("too_large", 413, "rejected"), ("busy", 503, "busy")],
    )
    def test_each_answer_is_one_delivery_span_and_one_count(
        self, telemetry: Telemetry, case: str, status: int, outcome: str
    ) -> None:
        # Refused by the adapter before the dispatcher runs, or by the dispatcher: the same.
        body = fixture_bytes("customer.created")
        limit = len(body) - 1 if case == "too_large" else len(body)
        recorder = Recorder(max_body_size=limit, body_budget=len(body) + 100)
        taken = 101 if case == "busy" else 0  # other deliveries being read hold part of it
        budget = bodies(recorder.dispatcher)
        assert budget.take(taken)
        try:
            reply = self.send(recorder.dispatcher, body, svix_headers(body))
        finally:
            budget.give_back(taken)
        if case == "busy" and not self.budgeted:
            status, outcome = 200, "processed"  # the body is in memory before the adapter runs
        assert reply.status == status
        (span,) = [span for span in telemetry.spans() if span.kind is SpanKind.CONSUMER]
        assert span.attributes is not None
        assert span.attributes["carecycle.delivery.outcome"] == outcome
        assert span.attributes["http.response.status_code"] == status
        (point,) = telemetry.points(DELIVERIES)
        assert point[0]["carecycle.delivery.outcome"] == outcome
        assert point[1].value == 1

    def test_the_body_budget_is_given_back_after_every_answer(self) -> None:
        dispatcher = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())

        @dispatcher.on("customer.updated")
        def fail(event: CustomerUpdatedEvent) -> None:
            raise RuntimeError("down")

        created = fixture_bytes("customer.created")
        updated = fixture_bytes("customer.updated")
        cases = [
            (created, svix_headers(created), 200),
            (created, svix_headers(created), 200),  # the duplicate
            (created, svix_headers(created, secret=OTHER_SECRET), 400),
            (b"not json", svix_headers(b"not json"), 422),
            (updated, svix_headers(updated, msg_id="msg_fails"), 500),
        ]
        for body, headers, expected in cases:
            assert self.send(dispatcher, body, headers).status == expected
            assert bodies(dispatcher).used == 0
