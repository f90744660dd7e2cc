"""FastAPI idioms: the router to include, the verified-event dependency, the OpenAPI webhooks."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime,
# and the dependencies of these routes are local variables.

import asyncio
import datetime
import inspect
import json
import logging
import subprocess
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Annotated, Any, cast

import pytest
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    Dispatcher,
    Event,
    InMemoryIdempotencyStore,
    UnknownEvent,
    WebhookConfigurationError,
    _otel,
    current_delivery,
    testing,
)
from carecycle_webhooks.fastapi import WebhookAnswer, document_webhooks, verified_event, webhook_router
from carecycle_webhooks.schema import json_schema
from tests.adapters import MSG_ID, UNKNOWN_BODY, AdapterContract, Reply, UnreachableStore, bodies
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes, load_fixture, svix_headers
from tests.otel import attributes

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its test client; the dev extra installs httpx.
    # (No category: StarletteDeprecationWarning is new in Starlette 1.x.)
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    import httpx

    from tests.otel import Telemetry


def post(
    app: FastAPI, url: str, body: "bytes | Iterator[bytes]", headers: "Mapping[str, str]"
) -> "httpx.Response":
    client = TestClient(app)
    # Starlette types its test client against httpx2; at runtime (and here) it is httpx.
    return cast("httpx.Response", client.post(url, content=body, headers=dict(headers)))  # pyright: ignore[reportUnknownMemberType]


# --------------------------------------------------------------------------- the router


class TestRouterStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: "Mapping[str, str]", *, method: str = "POST"
    ) -> Reply:
        app = FastAPI()
        app.include_router(webhook_router(dispatcher, path="/webhooks"))
        client = TestClient(app)
        response = cast(
            "httpx.Response",
            client.request(method, "/webhooks", content=body, headers=dict(headers)),  # pyright: ignore[reportUnknownMemberType]
        )
        answer_headers = {name.lower(): value for name, value in response.headers.items()}
        return Reply(response.status_code, answer_headers, response.content)


def test_the_router_takes_apirouter_options_and_stays_out_of_the_schema() -> None:
    app = FastAPI()
    app.include_router(webhook_router(Dispatcher(SECRET), path="/carecycle", prefix="/hooks", tags=["hooks"]))
    assert app.url_path_for("carecycle_webhooks") == "/hooks/carecycle"
    assert app.openapi()["paths"] == {}
    body = fixture_bytes("customer.created")
    assert post(app, "/hooks/carecycle", body, svix_headers(body)).json() == {"status": "ignored"}
    shown = FastAPI()
    shown.include_router(webhook_router(Dispatcher(SECRET), include_in_schema=True, name="in"))
    assert list(shown.openapi()["paths"]) == ["/webhooks"]


# --------------------------------------------------------------------------- the dependency


class CallsApp:
    """A route of the application's own, given the verified call.completed event."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.events: list[CallCompletedEvent] = []
        self.app = FastAPI()
        verified_call = verified_event(dispatcher, CallCompletedEvent)

        @self.app.post("/calls")
        async def calls(
            event: Annotated[CallCompletedEvent, Depends(verified_call)], request: Request
        ) -> dict[str, str]:  # pyright: ignore[reportUnusedFunction]
            self.events.append(event)
            # The raw body stays readable for the route.
            assert await request.body() == fixture_bytes("call.completed")
            return {"call": str(event.id), "disposition": str(event.disposition)}

    def post(self, body: "bytes | Iterator[bytes]", headers: "Mapping[str, str]") -> "httpx.Response":
        return post(self.app, "/calls", body, headers)


def test_the_route_gets_the_verified_typed_event() -> None:
    calls = CallsApp(Dispatcher(SECRET))
    body = fixture_bytes("call.completed")
    response = calls.post(body, svix_headers(body))
    assert (response.status_code, response.json()) == (
        200,
        {"call": "dca4a483-af54-4899-a804-766ee5812537", "disposition": "Enrolled"},
    )
    [event] = calls.events
    assert isinstance(event, CallCompletedEvent)
    assert event.duration_ms == 247000


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("bad signature", 400, "no_matching_signature"),
        ("stale", 400, "timestamp_too_old"),
        ("no headers", 400, "missing_header"),
        ("too large", 413, "body_too_large"),
        ("not an event", 422, "invalid_payload"),
    ],
)
def test_a_delivery_that_fails_is_answered_with_the_status_table_and_the_route_does_not_run(
    case: str, status: int, error: str
) -> None:
    calls = CallsApp(Dispatcher(SECRET, max_body_size=len(fixture_bytes("call.completed")) + 10))
    body = fixture_bytes("call.completed")
    headers = svix_headers(body)
    if case == "bad signature":
        headers = svix_headers(body.replace(b"Enrolled", b"Declined"))
    elif case == "stale":
        headers = svix_headers(body, timestamp=1_700_000_000)
    elif case == "no headers":
        headers = {}
    elif case == "too large":
        body += b" " * 11
        headers = svix_headers(body)
    elif case == "not an event":
        body = b'{"event_type": "call.completed"}'
        headers = svix_headers(body)
    response = calls.post(body, headers)
    assert response.status_code == status
    assert response.json()["detail"]["error"] == error
    assert calls.events == []
    # No field value in the answer.
    assert "Enrolled" not in response.text
    assert "+1312" not in response.text


def test_a_body_read_already_by_fastapi_is_verified_as_read() -> None:
    # A Body parameter makes FastAPI read (and keep) the body before the dependencies run.
    dispatcher = Dispatcher(SECRET, max_body_size=len(fixture_bytes("call.completed")) + 10)
    verified = verified_event(dispatcher, CallCompletedEvent)
    app = FastAPI()

    @app.post("/calls")
    def calls(  # pyright: ignore[reportUnusedFunction]
        event: Annotated[CallCompletedEvent, Depends(verified)],
        payload: Annotated[dict[str, Any], Body()],
    ) -> list[str]:
        return [str(event.id), payload["id"]]

    body = fixture_bytes("call.completed")
    response = post(app, "/calls", body, {**svix_headers(body), "content-type": "application/json"})
    assert response.json() == ["dca4a483-af54-4899-a804-766ee5812537"] * 2
    tampered = body.replace(b"Enrolled", b"Declined")
    response = post(app, "/calls", tampered, {**svix_headers(body), "content-type": "application/json"})
    assert response.status_code == 400
    large = body[:-2] + b" " * 20 + b"}\n"
    response = post(app, "/calls", large, {**svix_headers(large), "content-type": "application/json"})
    assert (response.status_code, response.json()["detail"]["error"]) == (413, "body_too_large")


def test_a_large_body_is_verified_and_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = Dispatcher._prepare  # pyright: ignore[reportPrivateUsage]

    def prepare(self: Dispatcher, body: bytes, headers: Any, *rest: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(self, body, headers, *rest)

    monkeypatch.setattr(Dispatcher, "_prepare", prepare)
    big = testing.sign(testing.call_completed(transcript="Agent: hello. " * 30_000), secret=SECRET)
    small = testing.sign(testing.call_completed(), secret=SECRET)
    app = FastAPI()
    verified = verified_event(Dispatcher(SECRET), CallCompletedEvent)

    @app.post("/calls")
    async def route(event: Annotated[CallCompletedEvent, Depends(verified)]) -> int:  # pyright: ignore[reportUnusedFunction]
        return len(event.transcript or "")

    assert len(big.body) > 256 * 1024
    assert post(app, "/calls", big.body, big.headers).json() == len("Agent: hello. " * 30_000)
    assert post(app, "/calls", small.body, small.headers).status_code == 200
    assert threads[0] != threads[1]  # the large one in a worker thread, the small one on the loop


def test_a_chunked_body_over_the_limit_is_413_and_gives_its_budget_back() -> None:
    dispatcher = Dispatcher(SECRET, max_body_size=100)
    calls = CallsApp(dispatcher)
    body = fixture_bytes("call.completed")
    response = calls.post(iter([body[:60], body[60:]]), svix_headers(body))
    assert (response.status_code, response.json()["detail"]["error"]) == (413, "body_too_large")
    assert bodies(dispatcher).used == 0
    assert calls.events == []


def test_a_delivery_of_another_event_type_is_acknowledged_without_running_the_route() -> None:
    calls = CallsApp(Dispatcher(SECRET))
    for body in (fixture_bytes("customer.created"), UNKNOWN_BODY):
        response = calls.post(body, svix_headers(body))
        assert (response.status_code, response.json()) == (200, {"detail": {"status": "ignored"}})
    assert calls.events == []


def test_without_an_event_type_the_route_gets_any_event() -> None:
    dispatcher = Dispatcher(SECRET)
    app = FastAPI()
    seen: list[Event] = []

    @app.post("/events")
    def events(event: Annotated[Event, Depends(verified_event(dispatcher))]) -> str:  # pyright: ignore[reportUnusedFunction]
        seen.append(event)
        return event.event_type

    for body in (fixture_bytes("customer.updated"), UNKNOWN_BODY):
        assert post(app, "/events", body, svix_headers(body)).status_code == 200
    assert [event.event_type for event in seen] == ["customer.updated", "appointment.booked"]
    assert isinstance(seen[1], UnknownEvent)


def test_without_a_store_every_delivery_runs_the_route() -> None:
    calls = CallsApp(Dispatcher(SECRET))
    body = fixture_bytes("call.completed")
    headers = svix_headers(body)
    assert calls.post(body, headers).status_code == 200
    assert calls.post(body, headers).status_code == 200
    assert len(calls.events) == 2


def test_with_a_store_the_route_runs_once_per_webhook_id() -> None:
    store = InMemoryIdempotencyStore()
    calls = CallsApp(Dispatcher(SECRET, idempotency_store=store))
    body = fixture_bytes("call.completed")
    headers = svix_headers(body)
    assert calls.post(body, headers).json()["disposition"] == "Enrolled"
    response = calls.post(body, headers)
    assert (response.status_code, response.json()) == (200, {"detail": {"status": "duplicate"}})
    assert len(calls.events) == 1
    other = svix_headers(body, msg_id="msg_another")
    assert calls.post(body, other).status_code == 200
    assert len(calls.events) == 2


def test_a_webhook_id_in_flight_elsewhere_is_409_without_running_the_route() -> None:
    store = InMemoryIdempotencyStore()
    calls = CallsApp(Dispatcher(SECRET, idempotency_store=store))
    claim = store.acquire(MSG_ID, lease=datetime.timedelta(minutes=1))  # another worker's
    body = fixture_bytes("call.completed")
    response = calls.post(body, svix_headers(body, msg_id=MSG_ID))
    assert (response.status_code, response.json()["detail"]["error"]) == (409, "in_flight")
    assert calls.events == []
    assert claim.token is not None
    store.release(MSG_ID, claim.token)
    assert calls.post(body, svix_headers(body, msg_id=MSG_ID)).status_code == 200


def test_an_unreachable_store_is_503_without_running_the_route() -> None:
    calls = CallsApp(Dispatcher(SECRET, idempotency_store=UnreachableStore()))
    body = fixture_bytes("call.completed")
    response = calls.post(body, svix_headers(body))
    assert (response.status_code, response.json()["detail"]["error"]) == (
        503,
        "idempotency_store_unavailable",
    )
    assert calls.events == []


def test_a_route_that_raises_frees_the_webhook_id_for_the_retry(caplog: pytest.LogCaptureFixture) -> None:
    store = InMemoryIdempotencyStore()
    dispatcher = Dispatcher(SECRET, idempotency_store=store)
    app = FastAPI()
    outcomes = ["RuntimeError", "HTTPException", "ok"]
    runs: list[str] = []

    @app.post("/calls")
    async def calls(  # pyright: ignore[reportUnusedFunction]
        event: Annotated[CallCompletedEvent, Depends(verified_event(dispatcher, CallCompletedEvent))],
    ) -> str:
        outcome = outcomes[len(runs)]
        runs.append(outcome)
        if outcome == "RuntimeError":
            raise RuntimeError(f"could not save {event.phone_number}")
        if outcome == "HTTPException":
            raise HTTPException(status_code=400, detail="rejected by the route")
        return "saved"

    client = TestClient(app, raise_server_exceptions=False)
    body = fixture_bytes("call.completed")
    headers = svix_headers(body)
    with caplog.at_level(logging.INFO, logger="carecycle_webhooks"):
        statuses = [
            cast("httpx.Response", client.post("/calls", content=body, headers=headers)).status_code  # pyright: ignore[reportUnknownMemberType]
            for _ in range(4)
        ]
    assert statuses == [500, 400, 200, 200]  # the last one a duplicate
    assert runs == ["RuntimeError", "HTTPException", "ok"]
    failures = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(failures) == 2
    assert "verified_event_route" in failures[0]
    assert "RuntimeError" in failures[0]
    assert "+1312" not in caplog.text


@pytest.mark.parametrize("with_store", [False, True])
def test_current_delivery_works_in_sync_and_async_routes(with_store: bool) -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore() if with_store else None)
    verified = verified_event(dispatcher, CallCompletedEvent)
    app = FastAPI()

    @app.post("/async")
    async def in_async(event: Annotated[CallCompletedEvent, Depends(verified)]) -> str:  # pyright: ignore[reportUnusedFunction]
        return current_delivery().webhook_id

    @app.post("/sync")
    def in_sync(event: Annotated[CallCompletedEvent, Depends(verified)]) -> str:  # pyright: ignore[reportUnusedFunction]
        return current_delivery().webhook_id

    body = fixture_bytes("call.completed")
    for path in ("/async", "/sync"):
        response = post(app, path, body, svix_headers(body, msg_id=f"msg{path.replace('/', '_')}"))
        assert response.json() == f"msg{path.replace('/', '_')}"
    with pytest.raises(LookupError):
        current_delivery()  # not left behind in the caller's context


def test_a_transactional_store_is_refused() -> None:
    class Transactional(InMemoryIdempotencyStore):
        async def run_delivery_async(self, deliver: "Callable[[], object]") -> object:
            return deliver()

    with pytest.raises(WebhookConfigurationError, match="webhook_router"):
        verified_event(Dispatcher(SECRET, idempotency_store=Transactional()))


def test_the_answer_keeps_the_table_s_headers() -> None:
    dispatcher = Dispatcher(SECRET, max_body_size=4096, body_budget=4096)
    calls = CallsApp(dispatcher)
    held = bodies(dispatcher)
    assert held.take(3000)  # other requests' bodies, being read
    try:
        body = fixture_bytes("call.completed")
        response = calls.post(body, svix_headers(body))
    finally:
        held.give_back(3000)
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert response.json()["detail"]["error"] == "busy"


def test_wrong_arguments_are_refused_at_start_up() -> None:
    with pytest.raises(WebhookConfigurationError):
        verified_event(cast("Any", object()))
    with pytest.raises(WebhookConfigurationError, match="CallCompletedEvent"):
        verified_event(Dispatcher(SECRET), cast("Any", dict))


def test_webhook_answer_carries_the_dispatchers_answer() -> None:
    from carecycle_webhooks._responses import BUSY

    answer = WebhookAnswer(BUSY)
    assert (answer.status_code, answer.headers, answer.response) == (503, {"retry-after": "5"}, BUSY)
    assert answer.detail == json.loads(BUSY.body)


# --------------------------------------------------------------------------- OpenAPI webhooks


def openapi_document() -> dict[str, Any]:
    app = FastAPI()
    app.include_router(webhook_router(Dispatcher(SECRET)))
    document_webhooks(app)
    response = cast("httpx.Response", TestClient(app).get("/openapi.json"))  # pyright: ignore[reportUnknownMemberType]
    return cast("dict[str, Any]", response.json())


def without_titles(schema: Any) -> Any:
    """A schema without the annotations that do not constrain a value.

    pydantic titles every property (json_schema() drops those titles), and FastAPI leaves
    the ``"default": null`` of optional properties out of request bodies.
    """
    if isinstance(schema, dict):
        return {
            key: without_titles(value)
            for key, value in cast("dict[str, Any]", schema).items()
            if not (key == "title" and isinstance(value, str)) and not (key == "default" and value is None)
        }
    if isinstance(schema, list):
        return [without_titles(item) for item in cast("list[Any]", schema)]
    return schema


def test_the_three_events_are_openapi_3_1_webhooks() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    assert list(document["webhooks"]) == ["customer.created", "customer.updated", "call.completed"]
    assert document["paths"] == {}
    operation = document["webhooks"]["call.completed"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CallCompletedEvent"
    }
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("webhook-id", "header", True),
        ("webhook-timestamp", "header", True),
        ("webhook-signature", "header", True),
    ]
    assert set(operation["responses"]) == {"200", "400", "404", "409", "413", "422", "500", "503"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize("event_type", ["customer.created", "customer.updated", "call.completed"])
def test_each_webhook_s_body_is_the_event_s_json_schema(event_type: str) -> None:
    document = openapi_document()
    components = document["components"]["schemas"]
    expected = json_schema(event_type)
    text = json.dumps(expected).replace("#/$defs/", "#/components/schemas/")
    expected = json.loads(text)
    name = {
        "customer.created": "CustomerCreatedEvent",
        "customer.updated": "CustomerUpdatedEvent",
        "call.completed": "CallCompletedEvent",
    }[event_type]
    documented = without_titles(components[name])
    for keyword in ("properties", "required", "additionalProperties", "type"):
        assert documented[keyword] == without_titles(expected[keyword])
    assert documented["description"] == expected["description"]
    for definition, schema in expected["$defs"].items():
        assert without_titles(components[definition]) == without_titles(schema)


def test_the_document_marks_phi_and_holds_no_example_nor_payload_value() -> None:
    document = openapi_document()
    text = json.dumps(document)
    assert '"example' not in text
    call = document["components"]["schemas"]["CallCompletedEvent"]["properties"]
    assert call["phoneNumber"]["x-phi"] is True
    assert call["transcript"]["x-phi"] is True
    call_payload, customer_payload = load_fixture("call.completed"), load_fixture("customer.created")
    phi = [call_payload[name] for name in ("phoneNumber", "summary", "transcript")]
    phi += [customer_payload[name] for name in ("firstName", "lastName", "email", "phoneNumber")]
    for value in phi:
        assert value
        assert value not in text


def test_the_module_still_needs_only_starlette() -> None:
    # webhook_view and verified_event serve plain Starlette apps: FastAPI is imported on use only.
    code = "import sys, carecycle_webhooks.fastapi; assert 'fastapi' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- telemetry


@pytest.mark.parametrize("with_store", [False, True])
@pytest.mark.parametrize("route_kind", ["async", "sync"])
def test_a_routes_delivery_is_one_span_with_the_route_as_its_handler(
    telemetry: "Telemetry", with_store: bool, route_kind: str
) -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore() if with_store else None)
    verified = verified_event(dispatcher, CallCompletedEvent)
    current: list[int] = []
    app = FastAPI()

    async def save_call(event: Annotated[CallCompletedEvent, Depends(verified)]) -> str:
        current.append(trace.get_current_span().get_span_context().span_id)
        return "saved"

    def save_call_in_a_thread(event: Annotated[CallCompletedEvent, Depends(verified)]) -> str:
        current.append(trace.get_current_span().get_span_context().span_id)
        return "saved"

    route = save_call if route_kind == "async" else save_call_in_a_thread
    app.add_api_route("/calls", route, methods=["POST"])

    body = fixture_bytes("call.completed")
    assert post(app, "/calls", body, svix_headers(body)).status_code == 200

    (delivery,) = [span for span in telemetry.spans() if span.kind is SpanKind.CONSUMER]
    (handler,) = [span for span in telemetry.spans() if span.kind is SpanKind.INTERNAL]
    assert delivery.name == "process call.completed"
    assert attributes(delivery)["carecycle.delivery.outcome"] == "processed"
    assert attributes(delivery)["messaging.message.id"] == MSG_ID
    assert handler.name == route.__qualname__
    assert handler.parent is not None
    assert delivery.context is not None
    assert handler.parent.span_id == delivery.context.span_id
    # Not made current in the route: FastAPI's own spans enter and leave around dependencies.
    assert handler.context is not None
    assert handler.context.span_id not in current
    ((labels, point),) = telemetry.points(_otel.DELIVERIES)
    assert (labels["carecycle.delivery.outcome"], point.value) == ("processed", 1)
    ((labels, _),) = telemetry.points(_otel.HANDLER_DURATION)
    assert labels["code.function.name"] == f"{__name__}.{handler.name}"


@pytest.mark.parametrize(
    ("case", "status", "outcome"),
    [
        ("duplicate", 200, "duplicate"),
        ("bad signature", 400, "rejected"),
        ("other event type", 200, "ignored"),
        ("route raised", 500, "handler_failed"),
        ("store down", 503, "idempotency_store_unavailable"),
    ],
)
def test_a_routes_delivery_that_does_not_run_or_fails_is_one_span_with_its_outcome(
    telemetry: "Telemetry", case: str, status: int, outcome: str
) -> None:
    store = UnreachableStore() if case == "store down" else InMemoryIdempotencyStore()
    dispatcher = Dispatcher(SECRET, idempotency_store=store)
    event_type = CustomerCreatedEvent if case == "other event type" else CallCompletedEvent
    app = FastAPI()

    @app.post("/calls")
    async def save_call(event: Annotated[Event, Depends(verified_event(dispatcher, event_type))]) -> str:  # pyright: ignore[reportUnusedFunction]
        if case == "route raised":
            raise RuntimeError("could not save +13125550142")
        return "saved"

    body = fixture_bytes("call.completed")
    headers = svix_headers(body, secret=OTHER_SECRET if case == "bad signature" else SECRET)
    client = TestClient(app, raise_server_exceptions=False)
    if case == "duplicate":
        assert post(app, "/calls", body, headers).status_code == 200
        telemetry.exporter.clear()
    response = cast("httpx.Response", client.post("/calls", content=body, headers=dict(headers)))  # pyright: ignore[reportUnknownMemberType]
    assert response.status_code == status

    (delivery,) = [span for span in telemetry.spans() if span.kind is SpanKind.CONSUMER]
    assert attributes(delivery)["carecycle.delivery.outcome"] == outcome
    assert attributes(delivery)["http.response.status_code"] == status
    handlers = [span for span in telemetry.spans() if span.kind is SpanKind.INTERNAL]
    if case == "route raised":
        (handler,) = handlers
        assert attributes(handler)["error.type"] == "RuntimeError"
        assert all("+1312" not in str(value) for value in attributes(handler).values())
    else:
        assert handlers == []
    counts = {
        labels["carecycle.delivery.outcome"]: point.value
        for labels, point in telemetry.points(_otel.DELIVERIES)
    }
    assert counts[outcome] == 1


NATIVE_TRACING = "telemetry" in inspect.signature(FastAPI.__init__).parameters  # FastAPI 0.142+


def test_under_fastapis_own_tracing_the_spans_nest_as_they_ran(telemetry: "Telemetry") -> None:
    # FastAPI 0.142 and later open spans around dependencies, the endpoint and the
    # serialization. A context attached inside the dependency was dropped when FastAPI's
    # span ended, then restored out of order: FastAPI's later spans hung under ended ones.
    options: dict[str, Any] = {}
    if NATIVE_TRACING:
        providers = {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider}
        options["telemetry"] = providers
    app = FastAPI(**options)
    dispatcher = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    tracer = telemetry.tracer_provider.get_tracer("the application")

    @app.post("/calls")
    async def save_call(  # pyright: ignore[reportUnusedFunction]
        event: Annotated[CallCompletedEvent, Depends(verified_event(dispatcher, CallCompletedEvent))],
    ) -> str:
        with tracer.start_as_current_span("the route's own work"):
            return "saved"

    body = fixture_bytes("call.completed")
    assert post(app, "/calls", body, svix_headers(body)).status_code == 200
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left current

    spans = telemetry.spans()
    ids = {span.context.span_id: span for span in spans if span.context is not None}
    (delivery,) = [span for span in spans if span.kind is SpanKind.CONSUMER]
    (handler,) = [span for span in spans if span.name.endswith("save_call")]
    assert handler.parent is not None
    assert delivery.context is not None
    assert handler.parent.span_id == delivery.context.span_id
    for span in spans:
        if span in (delivery, handler) or span.parent is None:
            continue
        parent = ids[span.parent.span_id]
        # Every span began within its parent's time (no span hangs under one that ended).
        assert parent.start_time is not None
        assert parent.end_time is not None
        assert span.start_time is not None
        assert parent.start_time <= span.start_time <= parent.end_time, (span.name, parent.name)
        assert parent not in (delivery, handler), span.name  # ours never capture another's span


def _scope(path: str, body: bytes) -> dict[str, Any]:
    headers = [(k.lower().encode(), v.encode()) for k, v in svix_headers(body).items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip


def _one_body(body: bytes) -> "Callable[[], Awaitable[dict[str, Any]]]":
    """An ASGI ``receive`` that gives ``body`` whole, then waits as a client that stays connected."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {}  # pragma: no cover

    return receive


@pytest.mark.parametrize("with_store", [False, True])
def test_a_routes_delivery_cancelled_mid_route_is_cancelled_not_a_failure(
    telemetry: "Telemetry", with_store: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="carecycle_webhooks")
    store = InMemoryIdempotencyStore() if with_store else None
    dispatcher = Dispatcher(SECRET, idempotency_store=store)
    app = FastAPI()
    body = fixture_bytes("call.completed")

    async def scenario() -> None:
        entered = asyncio.Event()

        @app.post("/calls")
        async def slow(event: Annotated[CallCompletedEvent, Depends(verified_event(dispatcher))]) -> str:  # pyright: ignore[reportUnusedFunction]
            entered.set()
            await asyncio.sleep(30)
            return "never"

        receive = _one_body(body)

        async def send(message: Any) -> None:
            pass

        request = asyncio.ensure_future(app(_scope("/calls", body), receive, send))
        await asyncio.wait_for(entered.wait(), 10)
        if store is not None:  # the route holds the webhook-id's lease
            lease = datetime.timedelta(seconds=30)
            assert store.acquire(svix_headers(body)["webhook-id"], lease=lease).status == "in_flight"
        request.cancel()  # the client went away, or the server shuts down
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(scenario())
    (delivery,) = [span for span in telemetry.spans() if span.kind is SpanKind.CONSUMER]
    assert attributes(delivery)["carecycle.delivery.outcome"] == "cancelled"
    assert "http.response.status_code" not in attributes(delivery)
    # A cancelled request is no failure of the route: nothing is logged as an error.
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    if store is not None:  # and the webhook-id is free again, for Svix's retry
        claim = store.acquire(svix_headers(body)["webhook-id"], lease=datetime.timedelta(seconds=30))
        assert claim.status == "acquired"


def test_a_cancellation_while_a_failed_route_frees_its_id_reaches_the_caller() -> None:
    # asyncio.timeout, a server shutting down: the request's cancellation must end it, even
    # while the flow frees the webhook-id of a route that raised.
    class SlowRelease(InMemoryIdempotencyStore):
        async def release_async(self, key: str, token: str, **options: Any) -> None:
            await asyncio.sleep(0.3)
            await super().release_async(key, token, **options)

    dispatcher = Dispatcher(SECRET, idempotency_store=SlowRelease())
    app = FastAPI()
    body = fixture_bytes("call.completed")

    @app.post("/calls")
    async def broken(event: Annotated[CallCompletedEvent, Depends(verified_event(dispatcher))]) -> str:  # pyright: ignore[reportUnusedFunction]
        raise RuntimeError("the CRM is down")

    async def scenario() -> None:
        receive = _one_body(body)

        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        request = asyncio.ensure_future(app(_scope("/calls", body), receive, send))
        await asyncio.sleep(0.1)  # the route has raised; the flow frees the id
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, 10)
        assert sent == []  # no 500 after the cancellation

    asyncio.run(scenario())


def test_a_routes_http_exception_is_recorded_with_its_own_status(telemetry: "Telemetry") -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=InMemoryIdempotencyStore())
    app = FastAPI()

    @app.post("/calls")
    async def refuse(event: Annotated[CallCompletedEvent, Depends(verified_event(dispatcher))]) -> str:  # pyright: ignore[reportUnusedFunction]
        raise HTTPException(status_code=422, detail="not for this agency")

    body = fixture_bytes("call.completed")
    assert post(app, "/calls", body, svix_headers(body)).status_code == 422
    (delivery,) = [span for span in telemetry.spans() if span.kind is SpanKind.CONSUMER]
    assert attributes(delivery)["http.response.status_code"] == 422
    assert attributes(delivery)["carecycle.delivery.outcome"] == "rejected"
    assert delivery.status.status_code is not StatusCode.ERROR  # a 4xx: not the receiver's error
