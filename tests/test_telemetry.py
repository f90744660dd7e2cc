"""OpenTelemetry: one span per delivery, one per handler, the metrics, and never PHI in any of them.

The spans and metrics go to the SDK's in-memory exporter and reader (`tests.otel`).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from carecycle_webhooks import (
    Claim,
    Dispatcher,
    Event,
    InMemoryIdempotencyStore,
    WebhookDelivery,
    _otel,
    _telemetry,
    parse_unverified_event,
)
from carecycle_webhooks._samples import SAMPLE_PAYLOADS
from carecycle_webhooks.testing import Tenants, customer_history, customer_updated, make_event, sign
from tests.conftest import EVENT_TYPES, SECRET
from tests.otel import Telemetry, attributes, telemetry_fixture  # noqa: F401 - the telemetry fixture

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).parent.parent


def signed(
    event_type: str = "customer.created", *, msg_id: str = "msg_1", attempt: int | None = 3, **overrides: Any
) -> tuple[bytes, dict[str, str]]:
    payload = make_event(event_type, **overrides) if overrides else SAMPLE_PAYLOADS[event_type]
    delivery = sign(payload, secret=SECRET, webhook_id=msg_id, header_prefix="webhook", attempt=attempt)
    return delivery.body, dict(delivery.headers)


# ---------------------------------------------------------------------------- the delivery span


def test_a_processed_delivery_is_one_consumer_span_named_for_its_event_type(telemetry: Telemetry) -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    webhooks.on("customer.created")(lambda event: None)

    response = webhooks.handle(*signed(msg_id="msg_processed"))

    assert response.status_code == 200
    span = telemetry.span("process customer.created")
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is None  # no current span: a root span
    assert attributes(span) == {
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.system": "svix",
        "messaging.message.id": "msg_processed",
        "carecycle.event_type": "customer.created",
        "carecycle.delivery.attempt": 3,
        "carecycle.delivery.outcome": "processed",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_the_delivery_span_is_a_child_of_the_frameworks_request_span(telemetry: Telemetry) -> None:
    webhooks = Dispatcher(SECRET)
    tracer = telemetry.tracer_provider.get_tracer("framework")
    with tracer.start_as_current_span("POST /webhooks", kind=SpanKind.SERVER) as request:
        webhooks.handle(*signed())
    span = telemetry.span("process customer.created")
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == request.get_span_context().trace_id
    assert attributes(span)["carecycle.delivery.outcome"] == "ignored"
    # The request's span is current again after the delivery.
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ("signature", 400, "no_matching_signature"),
        ("size", 413, "body_too_large"),
        ("payload", 422, "invalid_payload"),
    ],
)
def test_a_rejected_delivery_is_a_span_too(
    telemetry: Telemetry, change: str, status: int, reason: str
) -> None:
    webhooks = Dispatcher(SECRET, max_body_size=100_000)
    body, headers = signed()
    if change == "signature":
        headers["webhook-signature"] = "v1,AAAA" + headers["webhook-signature"][7:]
    elif change == "size":
        body = b" " * 100_001
    else:
        invalid = sign(b'{"event_type": "customer.created"}', secret=SECRET, header_prefix="webhook")
        body, headers = invalid.body, dict(invalid.headers)

    response = asyncio.run(webhooks.handle_async(body, headers))

    assert response.status_code == status
    span = telemetry.span(_otel.DELIVERY_SPAN)  # not parsed: the fixed name
    assert attributes(span)["carecycle.delivery.outcome"] == "rejected"
    assert attributes(span)["carecycle.delivery.reason"] == reason
    assert attributes(span)["http.response.status_code"] == status
    assert span.status.status_code is StatusCode.UNSET  # the sender's error, not ours
    (point,) = telemetry.points(_otel.DELIVERIES)
    assert point[0] == {
        "carecycle.delivery.outcome": "rejected",
        "carecycle.delivery.reason": reason,
        "http.response.status_code": status,
    }


def _failing_store() -> InMemoryIdempotencyStore:
    class Down(InMemoryIdempotencyStore):
        def acquire(self, webhook_id: str, *, lease: datetime.timedelta) -> Claim:
            raise ConnectionError("redis://10.0.0.7:6379 is down")

    return Down()


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        ("processed", 200),
        ("duplicate", 200),
        ("in_flight", 409),
        ("ignored", 200),
        ("handler_failed", 500),
        ("idempotency_store_unavailable", 503),
    ],
)
def test_each_outcome_is_the_words_of_the_answer(telemetry: Telemetry, outcome: str, status: int) -> None:
    store = _failing_store() if outcome == "idempotency_store_unavailable" else InMemoryIdempotencyStore()
    webhooks = Dispatcher(SECRET, idempotency_store=store)

    @webhooks.on("customer.created")
    def created(event: Event) -> None:
        if outcome == "handler_failed":
            raise ValueError("boom")

    event_type = "customer.updated" if outcome == "ignored" else "customer.created"
    if outcome == "duplicate":
        webhooks.handle(*signed(msg_id="msg_outcome"))
        telemetry.exporter.clear()
    if outcome == "in_flight":
        store.acquire("msg_outcome", lease=datetime.timedelta(seconds=30))

    response = webhooks.handle(*signed(event_type, msg_id="msg_outcome"))

    assert response.status_code == status
    span = telemetry.span(f"process {event_type}")
    assert attributes(span)["carecycle.delivery.outcome"] == outcome
    assert attributes(span)["http.response.status_code"] == status
    if status >= 500:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description is None
        assert attributes(span)["error.type"] == outcome
    else:
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in attributes(span)
    counted = {
        (point_attributes["carecycle.delivery.outcome"], point.value)
        for point_attributes, point in telemetry.points(_otel.DELIVERIES)
        if point_attributes["carecycle.event_type"] == event_type
    }
    assert (outcome, 1) in counted
    if outcome == "idempotency_store_unavailable":
        ((failure, point),) = telemetry.points(_otel.STORE_FAILURES)
        assert failure == {"carecycle.store.operation": "acquire", "error.type": "ConnectionError"}
        assert point.value == 1


# ---------------------------------------------------------------------------- handler spans


class Watched:
    """Handlers that note the span current while they run."""

    def __init__(self) -> None:
        self.current: list[trace.Span] = []

    def sync(self, event: Event) -> None:
        self.current.append(trace.get_current_span())

    async def async_(self, event: Event) -> None:
        await asyncio.sleep(0)
        self.current.append(trace.get_current_span())


def _check_handler_spans(telemetry: Telemetry, watched: Watched, delivery_name: str) -> None:
    delivery = telemetry.span(delivery_name)
    handlers = [span for span in telemetry.spans() if span.name.startswith("Watched.")]
    assert sorted(span.name for span in handlers) == ["Watched.async_", "Watched.sync"]
    assert delivery.context is not None
    for span in handlers:
        assert span.parent is not None
        assert span.parent.span_id == delivery.context.span_id
        assert span.kind is SpanKind.INTERNAL
        # The convention's fully qualified name: handlers of one name in two modules stay apart.
        assert attributes(span)["code.function.name"] == f"tests.test_telemetry.{span.name}"
    # While each handler ran, its own span was current.
    assert [span.get_span_context().span_id for span in watched.current] == [
        span.context.span_id
        for span in sorted(handlers, key=lambda span: span.start_time or 0)
        if span.context
    ]


@pytest.mark.parametrize("entry", ["handle", "handle_async", "handle_under_a_loop"])
def test_a_span_per_handler_current_while_it_runs(telemetry: Telemetry, entry: str) -> None:
    webhooks = Dispatcher(SECRET)
    watched = Watched()
    webhooks.on("customer.created")(watched.sync)  # a worker thread under handle_async
    webhooks.on("customer.created")(watched.async_)  # asyncio.run under handle

    if entry == "handle":
        response = webhooks.handle(*signed())
    elif entry == "handle_async":
        response = asyncio.run(webhooks.handle_async(*signed()))
    else:  # handle() from async code: the async handler's loop runs in a helper thread

        async def under_a_loop() -> Any:
            return webhooks.handle(*signed())

        response = asyncio.run(under_a_loop())

    assert response.status_code == 200
    _check_handler_spans(telemetry, watched, "process customer.created")
    durations = telemetry.points(_otel.HANDLER_DURATION)
    assert {point_attributes["code.function.name"] for point_attributes, _ in durations} == {
        "tests.test_telemetry.Watched.sync",
        "tests.test_telemetry.Watched.async_",
    }
    assert all(
        point_attributes["carecycle.event_type"] == "customer.created" for point_attributes, _ in durations
    )
    assert telemetry.metric_units() == {
        _otel.DELIVERIES: "{delivery}",
        _otel.DELIVERY_DURATION: "s",
        _otel.HANDLER_DURATION: "s",
    }


PHI_MESSAGE = "Marcus Delacroix, 1958-04-12"


@pytest.mark.parametrize("use_async", [False, True])
def test_a_failed_handler_is_recorded_by_its_type_only(telemetry: Telemetry, use_async: bool) -> None:
    webhooks = Dispatcher(SECRET)

    @webhooks.on("customer.created")
    def fails(event: Event) -> None:
        raise ValueError(PHI_MESSAGE)

    response = asyncio.run(webhooks.handle_async(*signed())) if use_async else webhooks.handle(*signed())

    assert response.status_code == 500
    span = telemetry.span("test_a_failed_handler_is_recorded_by_its_type_only.<locals>.fails")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None
    assert attributes(span)["error.type"] == "ValueError"
    assert not span.events  # no exception event: it would hold the message
    ((point_attributes, _),) = telemetry.points(_otel.HANDLER_DURATION)
    assert point_attributes["error.type"] == "ValueError"


def test_a_handed_over_delivery_runs_its_next_handlers_under_its_span(telemetry: Telemetry) -> None:
    webhooks = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    watched = Watched()
    started = threading.Event()
    finish = threading.Event()
    done = threading.Event()

    @webhooks.on("customer.created")
    def first(event: Event) -> None:
        watched.sync(event)
        started.set()
        finish.wait(timeout=10)

    @webhooks.on("customer.created")
    async def second(event: Event) -> None:
        await watched.async_(event)
        done.set()

    async def scenario() -> None:
        task = asyncio.create_task(webhooks.handle_async(*signed(msg_id="msg_handed_over")))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        finish.set()
        await asyncio.to_thread(done.wait, 10)
        for _ in range(100):  # the handed-over task ends right after the last handler
            await asyncio.sleep(0.01)
            if len(telemetry.spans()) == 3:
                break

    asyncio.run(scenario())
    delivery = telemetry.span("process customer.created")
    assert attributes(delivery)["carecycle.delivery.outcome"] == "cancelled"
    assert delivery.context is not None
    handlers = sorted(
        (span for span in telemetry.spans() if span is not delivery), key=lambda span: span.start_time or 0
    )
    assert [span.name.rsplit(".", 1)[-1] for span in handlers] == ["first", "second"]
    assert all(
        span.parent is not None and span.parent.span_id == delivery.context.span_id for span in handlers
    )
    assert [span.get_span_context().span_id for span in watched.current] == [
        span.context.span_id for span in handlers if span.context
    ]


def test_a_work_queues_dispatch_is_a_span_under_the_context_it_carries(telemetry: Telemetry) -> None:
    webhooks = Dispatcher(SECRET)
    webhooks.on("call.completed")(lambda event: None)
    tracer = telemetry.tracer_provider.get_tracer("endpoint")
    with tracer.start_as_current_span("POST /webhooks") as endpoint:
        carrier: dict[str, str] = {}
        from opentelemetry.propagate import inject

        inject(carrier)
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract(carrier))  # the worker
    try:
        event = parse_unverified_event(json.dumps(SAMPLE_PAYLOADS["call.completed"]))
        delivery = WebhookDelivery(
            webhook_id="msg_queued", timestamp=datetime.datetime.now(tz=datetime.timezone.utc), attempt=None
        )
        response = webhooks.dispatch(event, delivery)
    finally:
        context.detach(token)
    assert response.status_code == 200
    span = telemetry.span("process call.completed")
    assert span.context is not None
    assert span.context.trace_id == endpoint.get_span_context().trace_id
    assert attributes(span)["messaging.message.id"] == "msg_queued"
    assert "carecycle.delivery.attempt" not in attributes(span)


def test_without_providers_a_delivery_makes_nothing_then_takes_them_once_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = Telemetry()
    monkeypatch.setattr(_otel, "_tracer", None)
    monkeypatch.setattr(_otel, "_instruments", None)
    monkeypatch.setattr(_otel, "_next_look", 0.0)
    webhooks = Dispatcher(SECRET)
    webhooks.on("customer.created")(lambda _: None)
    assert _otel.begin() is None  # the API's defaults: nothing to record
    assert webhooks.handle(*signed()).status_code == 200
    # The application sets its providers; the next look (a second later at most) takes them.
    monkeypatch.setattr(_otel.trace, "get_tracer_provider", lambda: seen.tracer_provider)
    monkeypatch.setattr(_otel.metrics, "get_meter_provider", lambda: seen.meter_provider)
    monkeypatch.setattr(_otel, "_next_look", 0.0)
    assert webhooks.handle(*signed()).status_code == 200
    names = [span.name for span in seen.spans()]
    assert names[0].endswith("<lambda>")
    assert names[1] == "process customer.created"
    ((point_attributes, point),) = seen.points(_otel.DELIVERIES)
    assert point_attributes["carecycle.delivery.outcome"] == "processed"
    assert point.value == 1
    seen.tracer_provider.shutdown()
    seen.meter_provider.shutdown()


def test_metrics_without_a_tracer(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_otel, "_tracer", None)  # a meter provider set, no tracer provider
    webhooks = Dispatcher(SECRET)
    watched = Watched()
    webhooks.on("customer.created")(watched.sync)
    webhooks.on("customer.created")(watched.async_)
    assert webhooks.handle(*signed()).status_code == 200
    assert asyncio.run(webhooks.handle_async(*signed())).status_code == 200
    assert telemetry.spans() == []
    assert all(span is trace.INVALID_SPAN for span in watched.current)
    ((point_attributes, point),) = telemetry.points(_otel.DELIVERIES)
    assert point_attributes["carecycle.event_type"] == "customer.created"
    assert point.value == 2
    assert len(telemetry.points(_otel.HANDLER_DURATION)) == 2


def test_an_interrupted_handler_is_recorded_and_raised_on(telemetry: Telemetry) -> None:
    webhooks = Dispatcher(SECRET)

    @webhooks.on("customer.created")
    def stop(event: Event) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        webhooks.handle(*signed())
    handler = telemetry.span("test_an_interrupted_handler_is_recorded_and_raised_on.<locals>.stop")
    assert attributes(handler)["error.type"] == "KeyboardInterrupt"
    delivery = telemetry.span("process customer.created")
    assert attributes(delivery)["carecycle.delivery.outcome"] == "error"
    assert attributes(delivery)["error.type"] == "KeyboardInterrupt"
    assert delivery.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("entry", ["handle", "dispatch"])
def test_a_mistake_of_set_up_is_an_error_span(telemetry: Telemetry, entry: str) -> None:
    from carecycle_webhooks import AsyncIdempotencyStore, WebhookConfigurationError

    class OnlyAsync:
        async def acquire_async(self, webhook_id: str, *, lease: datetime.timedelta) -> Claim: ...
        async def complete_async(self, webhook_id: str, token: str, *, ttl: datetime.timedelta) -> None: ...
        async def release_async(self, webhook_id: str, token: str) -> None: ...

    store = OnlyAsync()
    assert isinstance(store, AsyncIdempotencyStore)
    webhooks = Dispatcher(SECRET, idempotency_store=store)
    webhooks.on("customer.created")(lambda _: None)
    event = parse_unverified_event(json.dumps(SAMPLE_PAYLOADS["customer.created"]))
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    delivery = WebhookDelivery(webhook_id="msg_1", timestamp=now, attempt=None)
    body, headers = signed()
    with pytest.raises(WebhookConfigurationError):
        (webhooks.handle(body, headers) if entry == "handle" else webhooks.dispatch(event, delivery))
    span = telemetry.span("process customer.created")
    assert attributes(span)["carecycle.delivery.outcome"] == "error"
    assert attributes(span)["error.type"] == "carecycle_webhooks._errors.WebhookConfigurationError"
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached


def test_a_work_queues_dispatch_async_is_a_span(telemetry: Telemetry) -> None:
    webhooks = Dispatcher(SECRET)
    webhooks.on("customer.updated")(lambda _: None)
    event = parse_unverified_event(json.dumps(SAMPLE_PAYLOADS["customer.updated"]))
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    delivery = WebhookDelivery(webhook_id="msg_async_queue", timestamp=now, attempt=5)
    assert asyncio.run(webhooks.dispatch_async(event, delivery)).status_code == 200
    span = telemetry.span("process customer.updated")
    assert attributes(span)["carecycle.delivery.attempt"] == 5


def test_the_duration_histograms_have_buckets_in_seconds(telemetry: Telemetry) -> None:
    # The SDK's default bounds (0, 5, 10 ... 10,000) suit milliseconds: with them, every
    # delivery fell in the first bucket, and a p95 of 30 ms deliveries read 4.75 s.
    webhooks = Dispatcher(SECRET)
    webhooks.on("customer.created")(lambda event: None)
    body, headers = signed()
    assert webhooks.handle(body, headers).status_code == 200
    for name in (_otel.DELIVERY_DURATION, _otel.HANDLER_DURATION):
        ((_, point),) = telemetry.points(name)
        assert tuple(point.explicit_bounds) == _otel.DURATION_BUCKETS
    assert _otel.DURATION_BUCKETS[0] == 0.005
    assert 15.0 in _otel.DURATION_BUCKETS  # Svix's timeout


@pytest.mark.parametrize(
    ("event_type", "label"),
    [
        ("appointment.booked", "appointment.booked"),  # a type this version does not know
        ("Marcus Delacroix", "unknown"),  # a sender's mistake: payload text
        ("1958-04-12", "unknown"),
        ("customer." + "x" * 200, "unknown"),
    ],
)
def test_only_text_shaped_as_an_event_type_names_a_span_or_labels_a_metric(
    telemetry: Telemetry, event_type: str, label: str
) -> None:
    webhooks = Dispatcher(SECRET)
    payload = json.dumps({"event_type": event_type, "id": "a9b5cc1e-2f3c-4a0e-9d53-1c2b3d4e5f60"})
    delivery = sign(payload, secret=SECRET, header_prefix="webhook")
    response = webhooks.handle(delivery.body, dict(delivery.headers))
    assert response.status_code == 200  # an event this version does not know: acknowledged
    span = telemetry.span(f"process {label}")
    assert attributes(span)["carecycle.event_type"] == label
    ((labels, _),) = telemetry.points(_otel.DELIVERIES)
    assert labels["carecycle.event_type"] == label


def test_an_answer_whose_body_is_not_json_is_unknown() -> None:
    from carecycle_webhooks import WebhookResponse

    assert _otel.outcome_of(WebhookResponse(502, b"<html>")) == ("unknown", None)
    assert _otel.outcome_of(WebhookResponse(418, b'{"error": "teapot"}')) == ("rejected", "teapot")


def test_a_missing_opentelemetry_is_decided_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "carecycle_webhooks._otel", None)  # import raises ImportError
    monkeypatch.setattr(_telemetry, "_loaded", False)
    monkeypatch.setattr(_telemetry, "_begin", _otel.begin)
    webhooks = Dispatcher(SECRET)
    assert webhooks.handle(*signed()).status_code == 200
    assert _telemetry._loaded
    assert _telemetry._begin is None


# ---------------------------------------------------------------------------- privacy


def _phi_values(value: object, model_phi: bool) -> Iterator[str]:
    """Every scalar under a PHI field, as text (dates and numbers too)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _phi_values(item, model_phi)
    elif isinstance(value, list):
        for item in value:
            yield from _phi_values(item, model_phi)
    elif model_phi and value is not None and not isinstance(value, bool):
        yield str(value)


def sample_phi() -> set[str]:
    """The PHI values of the catalog's samples, found through the models' ``phi_fields``."""
    found: set[str] = set()

    def walk(model: Any) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if name in type(model).phi_fields and value is not None:
                found.add(str(value))
                found.update(str(part) for part in str(value).split() if len(part) > 3)
            elif hasattr(type(value), "phi_fields"):
                walk(value)

    for event_type in EVENT_TYPES:
        walk(parse_unverified_event(json.dumps(SAMPLE_PAYLOADS[event_type])))
    return found


def test_the_phi_list_is_found_from_the_models() -> None:
    phi = sample_phi()
    assert {"Marcus", "Delacroix", "1EG4TE5MK73", "+13128471928", "marcus.delacroix@example.com"} <= phi
    assert "priya@youragency.com" in phi  # the assigned user's email, a PHI field of its own model


def _everything_exported(telemetry: Telemetry) -> str:
    texts: list[str] = []
    for span in telemetry.spans():
        texts.append(span.name)
        texts.extend(f"{key}={value}" for key, value in attributes(span).items())
        texts.append(str(span.status.description))
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{key}={value}" for key, value in (event.attributes or {}).items())
        texts.extend(f"{key}={value}" for key, value in span.resource.attributes.items())
    # Metric attributes; not the ids and timings, random numbers that short values may match.
    for name in (_otel.DELIVERIES, _otel.DELIVERY_DURATION, _otel.HANDLER_DURATION, _otel.STORE_FAILURES):
        texts.append(name)
        for point_attributes, _ in telemetry.points(name):
            texts.extend(f"{key}={value}" for key, value in point_attributes.items())
    return "\n".join(texts)


def test_no_phi_in_any_span_or_metric_through_every_outcome(telemetry: Telemetry) -> None:
    phi = sample_phi()
    for event_type in EVENT_TYPES:
        sample = json.dumps(SAMPLE_PAYLOADS[event_type])
        fails = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
        fine = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
        down = Dispatcher(SECRET, idempotency_store=_failing_store())
        fine.on(event_type)(lambda event: None)
        down.on(event_type)(lambda event: None)

        @fails.on(event_type)
        def leak(event: Any) -> None:
            raise ValueError(" ".join(sorted(phi)))

        # Ids of fixed letters: a random one could hold a short PHI number ("148").
        delivery = sign(sample, secret=SECRET, header_prefix="webhook", attempt=2, webhook_id="msg_privacy")
        body, headers = delivery.body, dict(delivery.headers)
        bad = {**headers, "webhook-signature": "v1,AAAA"}
        for dispatcher in (fails, fine, down, Dispatcher(SECRET)):
            dispatcher.handle(body, headers)  # failed, processed, store down, ignored
            asyncio.run(dispatcher.handle_async(body, headers))  # again: duplicate, or the same
            dispatcher.handle(body, bad)  # rejected
        fine.handle(body.replace(b'"customer', b'"nobody', 1), headers)  # bad signature again
        unsigned_invalid = sign(
            sample.replace('"id"', '"idx"'), secret=SECRET, header_prefix="webhook", webhook_id="msg_invalid"
        )
        fine.handle(unsigned_invalid.body, dict(unsigned_invalid.headers))  # 422
    exported = _everything_exported(telemetry)
    outcomes = {
        point_attributes["carecycle.delivery.outcome"]
        for point_attributes, _ in telemetry.points(_otel.DELIVERIES)
    }
    assert outcomes >= {
        "processed",
        "duplicate",
        "handler_failed",
        "idempotency_store_unavailable",
        "ignored",
    }
    assert "rejected" in outcomes
    for value in phi:
        assert value not in exported, value


# ---------------------------------------------------------------------------- cost: nothing without it

BLOCKED = textwrap.dedent(
    """
    import asyncio, sys

    class NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    if sys.argv[1] == "blocked":
        sys.meta_path.insert(0, NoOpenTelemetry())
    import carecycle_webhooks
    from carecycle_webhooks.testing import sign
    from carecycle_webhooks._samples import SAMPLE_PAYLOADS

    assert not [name for name in sys.modules if name.startswith("opentelemetry")], "import"
    secret = carecycle_webhooks.testing.generate_secret()
    webhooks = carecycle_webhooks.Dispatcher(secret)
    ran = []
    webhooks.on("customer.created")(ran.append)
    delivery = sign(SAMPLE_PAYLOADS["customer.created"], secret=secret)
    assert webhooks.handle(delivery.body, delivery.headers).status_code == 200
    assert asyncio.run(webhooks.handle_async(delivery.body, delivery.headers)).status_code == 200
    assert len(ran) == 2
    print(sorted({name.split(".")[1] for name in sys.modules if name.startswith("opentelemetry.")}))
    """
)


def test_without_opentelemetry_nothing_is_imported_and_deliveries_run() -> None:
    def run(mode: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-c", BLOCKED, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.strip()

    assert run("blocked") == "[]"
    # Installed, but the application never imported it: nothing is imported either.
    assert run("installed") == "[]"


def test_an_installed_opentelemetry_is_imported_once_the_application_has() -> None:
    # Before, the first delivery imported opentelemetry whenever it was installed.
    code = textwrap.dedent(
        """
        import sys
        import carecycle_webhooks
        from carecycle_webhooks.testing import customer_created, generate_secret, sign

        secret = generate_secret()
        webhooks = carecycle_webhooks.Dispatcher(secret)
        webhooks.on("customer.created")(lambda event: None)
        delivery = sign(customer_created(), secret=secret)
        assert webhooks.handle(delivery.body, delivery.headers).status_code == 200
        print(any(name.startswith("opentelemetry") for name in sys.modules))

        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        delivery = sign(customer_created(), secret=secret)
        assert webhooks.handle(delivery.body, delivery.headers).status_code == 200
        print(sorted(span.name for span in exporter.get_finished_spans()))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    before, after = completed.stdout.strip().splitlines()
    assert before == "False"
    assert "process customer.created" in after


def test_import_does_not_load_the_telemetry_module() -> None:
    code = "import sys, carecycle_webhooks; print('carecycle_webhooks._otel' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    )
    assert completed.stdout.strip() == "False"
    assert _telemetry.__name__ == "carecycle_webhooks._telemetry"


# ---------------------------------------------------------------------------- issue 14's outcomes


def test_stale_and_test_customer_outcomes_and_the_tenant_attribute(telemetry: Telemetry) -> None:
    tenants = Tenants("acme")
    webhooks = Dispatcher(
        tenants.resolve,
        idempotency_store=InMemoryIdempotencyStore(),
        skip_out_of_order=True,
        skip_test_customers=True,
    )
    webhooks.on("customer.updated")(lambda event: None)
    _, first, second = customer_history(2)
    answers = []
    for event in (second, first, customer_updated(test_customer=True)):
        delivery = tenants.sign("acme", event)
        answers.append(webhooks.handle(delivery.body, delivery.headers, tenant="acme").status_code)
    unknown = tenants.sign("acme", first)
    answers.append(webhooks.handle(unknown.body, unknown.headers, tenant="initech").status_code)
    assert answers == [200, 200, 200, 404]
    spans = [span for span in telemetry.spans() if span.kind is SpanKind.CONSUMER]  # no handler spans
    assert [attributes(span)["carecycle.delivery.outcome"] for span in spans] == [
        "processed",
        "stale",
        "test_customer",
        "rejected",
    ]
    assert attributes(spans[3])["carecycle.delivery.reason"] == "unknown_tenant"
    assert [attributes(span).get("carecycle.delivery.tenant") for span in spans] == ["acme"] * 3 + [None]
    counted = {
        point_attributes["carecycle.delivery.outcome"]
        for point_attributes, _ in telemetry.points(_otel.DELIVERIES)
    }
    assert {"stale", "test_customer", "rejected"} <= counted
    assert all("carecycle.delivery.tenant" not in point for point, _ in telemetry.points(_otel.DELIVERIES))
