from __future__ import annotations

import asyncio
import io
import json
import time
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import pytest

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure()

from django.conf import settings
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from carecycle_webhooks import RedisIdempotencyStore, WebhookConfigurationError
from carecycle_webhooks._otel import DELIVERIES, DELIVERY_DURATION
from carecycle_webhooks.django import webhook_view
from tests.adapters import (
    AdapterContract,
    AsyncRedisClient,
    EndlessStream,
    Recorder,
    Reply,
    bodies,
    import_without,
)
from tests.adapters.django_urls import serve
from tests.conftest import fixture_bytes, load_fixture, svix_headers

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

    from django.http.response import HttpResponseBase

    from carecycle_webhooks import Dispatcher
    from tests.otel import Telemetry


def reply(response: HttpResponseBase) -> Reply:
    assert isinstance(response, HttpResponse)
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.content)


def post(client: Client, body: bytes, headers: Mapping[str, str]) -> Reply:
    response = client.post("/webhooks/", data=body, content_type="application/json", headers=dict(headers))
    return reply(response)


class TestDjangoStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        serve(dispatcher)
        response = Client().generic(
            method, "/webhooks/", data=body, content_type="application/json", headers=dict(headers)
        )
        return reply(response)


def big_event(size: int) -> bytes:
    """A valid ``customer.created`` of about ``size`` bytes (an unknown field pads it)."""
    payload: dict[str, Any] = load_fixture("customer.created")
    payload["padding"] = "x" * size
    return json.dumps(payload).encode()


def test_body_above_djangos_own_limit_is_accepted() -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2_621_440
    recorder = Recorder()
    serve(recorder.dispatcher)
    body = big_event(3 * 1024 * 1024)
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    result = post(Client(), body, svix_headers(body))
    assert result.status == 200, result.body
    assert len(recorder.events) == 1


def test_body_above_the_default_limit_is_413() -> None:
    recorder = Recorder()
    serve(recorder.dispatcher)
    body = big_event(10 * 1024 * 1024)
    result = post(Client(), body, svix_headers(body))
    assert result.status == 413
    assert result.json() == {"error": "body_too_large", "limit": 10 * 1024 * 1024}
    assert recorder.events == []


def test_view_is_csrf_exempt() -> None:
    recorder = Recorder()
    serve(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    result = post(Client(enforce_csrf_checks=True), body, svix_headers(body))
    assert result.status == 200
    assert getattr(webhook_view(recorder.dispatcher), "csrf_exempt", False) is True


def test_body_without_length_is_read_no_further_than_the_limit() -> None:
    # As under ASGI with a chunked request: no Content-Length, a stream of any length.
    recorder = Recorder(max_body_size=1000)
    request = RequestFactory().post("/webhooks/", data=b"", content_type="application/json")
    request.META.pop("CONTENT_LENGTH", None)
    stream = EndlessStream()
    request._stream = cast("BinaryIO", stream)
    response = webhook_view(recorder.dispatcher)(request)
    assert response.status_code == 413
    assert stream.bytes_read <= 1001


@pytest.mark.parametrize("length", ["", "many", "-1"])
def test_unusable_content_length_is_ignored(length: str) -> None:
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    request = RequestFactory().post(
        "/webhooks/", data=body, content_type="application/json", headers=svix_headers(body)
    )
    request.META["CONTENT_LENGTH"] = length
    request._stream = io.BytesIO(body)
    response = webhook_view(recorder.dispatcher)(request)
    assert response.status_code == 200
    assert len(recorder.events) == 1


def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    recorder = Recorder(max_body_size=1000)
    request = RequestFactory().post("/webhooks/", data=b"{}", content_type="application/json")
    request.META["CONTENT_LENGTH"] = "1001"

    def unreadable(*args: object) -> bytes:
        raise AssertionError("the body must not be read")

    request.read = unreadable  # type: ignore[method-assign]
    response = webhook_view(recorder.dispatcher)(request)
    assert response.status_code == 413


def test_view_works_under_asgi() -> None:
    recorder = Recorder()
    serve(recorder.dispatcher)
    body = fixture_bytes("customer.created")

    async def deliver() -> HttpResponseBase:
        return await AsyncClient().post(
            "/webhooks/", data=body, content_type="application/json", headers=svix_headers(body)
        )

    response = asyncio.run(deliver())
    assert response.status_code == 200
    assert len(recorder.events) == 1


def test_asyncio_store_is_refused() -> None:
    recorder = Recorder(idempotency_store=RedisIdempotencyStore(AsyncRedisClient()))
    with pytest.raises(WebhookConfigurationError, match="asyncio"):
        webhook_view(recorder.dispatcher)


def test_not_a_dispatcher_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match="Dispatcher"):
        webhook_view("whsec_...")  # type: ignore[arg-type]


def test_missing_django_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    error = import_without(monkeypatch, "django", "django")
    assert "pip install 'carecycle-webhooks[django]'" in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_headers_are_read_from_meta_without_building_request_headers(prefix: str) -> None:
    recorder = Recorder()
    view = webhook_view(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    request = RequestFactory().post(
        "/webhooks/", data=body, content_type="application/json", headers=svix_headers(body, prefix=prefix)
    )
    assert reply(view(request)).status == 200
    assert len(recorder.events) == 1
    assert "headers" not in request.__dict__  # Django's cached HttpHeaders was never built


def test_conflicting_headers_are_still_refused() -> None:
    # Unusual headers are judged by the general reading, through request.headers.
    recorder = Recorder()
    view = webhook_view(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    headers = svix_headers(body) | {"svix-id": "msg_someone_else"}
    request = RequestFactory().post("/webhooks/", data=body, content_type="application/json", headers=headers)
    result = reply(view(request))
    assert (result.status, json.loads(result.body)["error"]) == (400, "conflicting_headers")
    assert recorder.events == []


def test_headers_are_judged_on_meta_as_it_is_when_the_view_runs() -> None:
    # A middleware may read request.headers (Django caches it) and then change META:
    # the fast path and the general reading both see META as it is now.
    recorder = Recorder()
    view = webhook_view(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    request = RequestFactory().post(
        "/webhooks/", data=body, content_type="application/json", headers=svix_headers(body)
    )
    assert request.headers["Webhook-Id"]  # built and cached before the change
    request.META["HTTP_SVIX_ID"] = "msg_someone_else"
    result = reply(view(request))
    assert (result.status, json.loads(result.body)["error"]) == (400, "conflicting_headers")
    assert recorder.events == []


# --------------------------------------------------------------------------- bodies without a length


def test_a_chunked_body_under_a_wsgi_server_that_dechunks_it_is_read() -> None:
    # gunicorn: no CONTENT_LENGTH, wsgi.input_terminated, the de-chunked body in wsgi.input.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    request = RequestFactory().post(
        "/webhooks/", data=b"", content_type="application/json", headers=svix_headers(body)
    )
    request.META.pop("CONTENT_LENGTH", None)
    request.META["wsgi.input_terminated"] = True
    request.META["wsgi.input"] = io.BytesIO(body)
    response = webhook_view(recorder.dispatcher)(request)
    assert response.status_code == 200, response.content
    assert len(recorder.events) == 1


def test_a_chunked_body_over_the_limit_under_a_wsgi_server_is_413() -> None:
    recorder = Recorder(max_body_size=1000)
    request = RequestFactory().post("/webhooks/", data=b"", content_type="application/json")
    request.META.pop("CONTENT_LENGTH", None)
    request.META["wsgi.input_terminated"] = True
    stream = EndlessStream()
    request.META["wsgi.input"] = stream
    response = webhook_view(recorder.dispatcher)(request)
    assert response.status_code == 413
    assert stream.bytes_read <= 1001


def test_a_client_gone_mid_body_is_400_logged_by_type_only(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    request = RequestFactory().post(
        "/webhooks/", data=body, content_type="application/json", headers=svix_headers(body)
    )

    def gone(*args: object) -> bytes:
        raise OSError("peer 203.0.113.9 reset the connection after 'Delacroix'")

    request.read = gone  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="carecycle_webhooks"):
        response = webhook_view(recorder.dispatcher)(request)
    assert response.status_code == 400
    assert json.loads(response.content) == {"error": "client_disconnected"}
    assert "OSError" in caplog.text
    assert "Delacroix" not in caplog.text
    assert bodies(recorder.dispatcher).used == 0


# --------------------------------------------------------------------------- limit_webhook_bodies, under ASGI


class ASGIRun:
    """Drives an ASGI application through one HTTP request, as a server would."""

    def __init__(
        self, path: str, pieces: list[bytes], headers: dict[str, str], *, stall: bool = False
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"host", b"testserver")],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 5000),
        }
        self.pieces = pieces
        self.stall = stall  # after the pieces, nothing more: the body never ends
        self.received = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.received < len(self.pieces):
            piece = self.pieces[self.received]
            self.received += 1
            more = self.stall or self.received < len(self.pieces)
            return {"type": "http.request", "body": piece, "more_body": more}
        await asyncio.sleep(3600)  # then nothing more until the client goes away
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))

    def run(self, application: Any) -> Reply:
        asyncio.run(asyncio.wait_for(application(self.scope, self.receive, self.send), timeout=10))
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return Reply(start["status"], headers, body)


def guarded_application() -> Any:
    from django.core.asgi import get_asgi_application

    from carecycle_webhooks.django import limit_webhook_bodies

    return limit_webhook_bodies(get_asgi_application())


def test_limit_webhook_bodies_refuses_a_declared_oversize_body_before_django_reads_it() -> None:
    recorder = Recorder(max_body_size=1000)
    serve(recorder.dispatcher)
    run = ASGIRun("/webhooks/", [b"x" * 600] * 20, {"content-length": "12000"})
    result = run.run(guarded_application())
    assert (result.status, result.json()) == (413, {"error": "body_too_large", "limit": 1000})
    assert run.received == 0


def test_limit_webhook_bodies_stops_a_chunked_body_past_the_limit() -> None:
    recorder = Recorder(max_body_size=1000)
    serve(recorder.dispatcher)
    run = ASGIRun("/webhooks/", [b"x" * 600] * 20, {})
    result = run.run(guarded_application())
    assert result.status == 413
    assert run.received == 2  # 1,200 bytes: the first piece past the limit


def test_limit_webhook_bodies_answers_503_when_the_budget_is_spent() -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder(max_body_size=len(body), body_budget=len(body))
    serve(recorder.dispatcher)
    assert bodies(recorder.dispatcher).take(1)
    run = ASGIRun("/webhooks/", [body], {**svix_headers(body), "content-length": str(len(body))})
    result = run.run(guarded_application())
    assert result.status == 503
    assert result.headers["retry-after"] == "5"
    assert run.received == 0
    bodies(recorder.dispatcher).give_back(1)


@pytest.mark.parametrize("chunked", [False, True])
def test_limit_webhook_bodies_lets_a_delivery_through_and_budgets_it_once(chunked: bool) -> None:
    recorder = Recorder()
    serve(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    headers = svix_headers(body) | ({} if chunked else {"content-length": str(len(body))})
    seen: list[int] = []

    @recorder.dispatcher.on("customer.created")
    def budget_in_use(event: object) -> None:
        seen.append(bodies(recorder.dispatcher).used)

    run = ASGIRun("/webhooks/", [body[:100], body[100:]], headers)
    result = run.run(guarded_application())
    assert (result.status, result.json()) == (200, {"status": "processed"})
    assert seen == [len(body)]  # taken by the wrapper, not again by the view
    assert bodies(recorder.dispatcher).used == 0


def test_limit_webhook_bodies_leaves_other_routes_to_django() -> None:
    serve(Recorder(max_body_size=10).dispatcher)
    run = ASGIRun("/elsewhere/", [b"x" * 600] * 3, {"content-length": "1800"})
    result = run.run(guarded_application())
    assert result.status == 404  # Django's own answer, after reading the whole body
    assert run.received == 3


def test_limit_webhook_bodies_counts_every_piece_whatever_the_declared_length() -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder(max_body_size=10_000, body_budget=10_000)
    serve(recorder.dispatcher)
    assert bodies(recorder.dispatcher).take(9_000)
    run = ASGIRun("/webhooks/", [b"x" * 600] * 20, {"content-length": "0"})
    result = run.run(guarded_application())
    assert result.status == 503
    assert run.received == 2  # 1,200 bytes: the second piece did not fit
    bodies(recorder.dispatcher).give_back(9_000)
    assert body  # (the fixture only sizes the limits above)


@pytest.mark.parametrize("language", ["en-us", "fr"])
def test_limit_webhook_bodies_follows_i18n_patterns(language: str) -> None:
    recorder = Recorder(max_body_size=1000)
    serve(recorder.dispatcher, i18n=True)
    run = ASGIRun(f"/{language}/webhooks/", [b"x" * 600] * 20, {})
    result = run.run(guarded_application())
    assert result.status == 413
    assert run.received == 2


def test_limit_webhook_bodies_can_hold_other_requests_to_a_limit_too() -> None:
    from django.core.asgi import get_asgi_application

    from carecycle_webhooks.django import limit_webhook_bodies

    serve(Recorder().dispatcher)
    application = limit_webhook_bodies(get_asgi_application(), max_other_body_size=1000)
    run = ASGIRun("/elsewhere/", [b"x" * 600] * 20, {"content-length": "12000"})
    assert run.run(application).status == 413
    assert run.received == 0
    run = ASGIRun("/elsewhere/", [b"x" * 600] * 20, {})
    assert run.run(application).status == 413
    assert run.received == 2
    with pytest.raises(WebhookConfigurationError, match="max_other_body_size"):
        limit_webhook_bodies(get_asgi_application(), max_other_body_size=0)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # chunked: its deadline runs from the start
        {"content-length": "1000"},  # small: from its first piece, which leaves more to come
    ],
)
def test_limit_webhook_bodies_answers_408_to_a_body_that_does_not_arrive(
    monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    monkeypatch.setattr("carecycle_webhooks._asgi.BODY_TIMEOUT_SECONDS", 0.2)
    recorder = Recorder()
    serve(recorder.dispatcher)
    run = ASGIRun("/webhooks/", [b"{" * 100], headers, stall=True)
    result = run.run(guarded_application())
    assert result.status == 408
    assert bodies(recorder.dispatcher).used == 0


def test_limit_webhook_bodies_passes_other_scopes_and_unroutable_requests_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from carecycle_webhooks import django as adapter

    seen: list[str] = []

    async def application(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guarded = adapter.limit_webhook_bodies(application)
    asyncio.run(guarded({"type": "lifespan"}, None, None))  # type: ignore[arg-type]

    def broken(path: str) -> None:
        raise RuntimeError("a URLconf that cannot load")

    monkeypatch.setattr(adapter, "resolve", broken)
    asyncio.run(guarded({"type": "http", "path": "/webhooks/", "headers": []}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan", "http"]


def test_limit_webhook_bodies_sets_no_deadline_once_the_body_has_arrived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Django listens for the client going away while its view runs: that is no body arriving
    # late. A slow view (or handler) past the deadline must be answered as it answers.
    monkeypatch.setattr("carecycle_webhooks._asgi.BODY_TIMEOUT_SECONDS", 0.2)
    recorder = Recorder()
    serve(recorder.dispatcher)
    body = fixture_bytes("customer.created")

    @recorder.dispatcher.on("customer.created")
    def slow(event: object) -> None:
        time.sleep(0.5)  # longer than the deadline

    run = ASGIRun("/webhooks/", [body[:100], body[100:]], svix_headers(body))  # chunked
    result = run.run(guarded_application())
    assert (result.status, result.json()) == (200, {"status": "processed"})
    assert len(recorder.events) == 1


def test_limit_webhook_bodies_never_answers_after_a_response_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from carecycle_webhooks import django as adapter

    monkeypatch.setattr("carecycle_webhooks._asgi.BODY_TIMEOUT_SECONDS", 0.2)
    serve(Recorder().dispatcher)

    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()  # the first piece
        await receive()  # then the client stalls: the guard refuses with a disconnect
        await send({"type": "http.response.body", "body": b"bye"})

    run = ASGIRun("/webhooks/", [b"{" * 100], {}, stall=True)
    asyncio.run(
        asyncio.wait_for(adapter.limit_webhook_bodies(streaming)(run.scope, run.receive, run.send), 10)
    )
    assert [m["status"] for m in run.sent if m["type"] == "http.response.start"] == [200]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_limit_webhook_bodies_holds_other_methods_to_the_limits_but_records_no_delivery(
    telemetry: Telemetry, method: str
) -> None:
    recorder = Recorder(max_body_size=1000)
    serve(recorder.dispatcher)
    run = ASGIRun("/webhooks/", [b"x" * 600] * 20, {"content-length": "12000"})
    run.scope["method"] = method
    result = run.run(guarded_application())
    assert result.status == 413  # not spooled by Django: the webhook URL's limit holds
    assert run.received == 0
    assert telemetry.spans() == []  # not a delivery
    assert telemetry.points(DELIVERIES) == []
    small = ASGIRun("/webhooks/", [b"{}"], {"content-length": "2"})
    small.scope["method"] = method
    assert small.run(guarded_application()).status == 405  # the view's own answer
    assert telemetry.spans() == []


class SlowRun(ASGIRun):
    """Each piece of the body comes a while after the one before."""

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(PIECE_GAP)
        return await super().receive()


PIECE_GAP = 0.1  # seconds


def test_limit_webhook_bodies_records_a_refused_body_from_when_it_began_to_arrive(
    telemetry: Telemetry,
) -> None:
    recorder = Recorder(max_body_size=1000)
    serve(recorder.dispatcher)
    run = SlowRun("/webhooks/", [b"x" * 600] * 20, {})
    assert run.run(guarded_application()).status == 413  # at the second piece
    (span,) = telemetry.spans()
    assert span.start_time is not None
    assert span.end_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 2 * PIECE_GAP  # the receiving, not only the answer
    ((_, point),) = telemetry.points(DELIVERY_DURATION)
    assert point.sum >= 2 * PIECE_GAP


class GoneRun(ASGIRun):
    """The client sends the first pieces of the body, then goes away."""

    async def receive(self) -> dict[str, Any]:
        if self.received < len(self.pieces):
            return await super().receive()
        return {"type": "http.disconnect"}


def test_limit_webhook_bodies_records_a_body_cut_off_by_the_client(telemetry: Telemetry) -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder()
    serve(recorder.dispatcher)
    headers = {**svix_headers(body), "content-type": "application/json"}
    run = GoneRun("/webhooks/", [body[:50]], {**headers, "content-length": str(len(body))}, stall=True)
    asyncio.run(asyncio.wait_for(guarded_application()(run.scope, run.receive, run.send), timeout=10))
    assert recorder.events == []
    (span,) = telemetry.spans()
    assert span.attributes is not None
    assert span.attributes["carecycle.delivery.reason"] == "client_disconnected"
    assert bodies(recorder.dispatcher).used == 0
