"""carecycle_webhooks.asgi through httpx.ASGITransport, Starlette's Mount, and raw ASGI messages."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from carecycle_webhooks import WebhookConfigurationError
from carecycle_webhooks.asgi import webhook_app
from tests.adapters import AdapterContract, Recorder, Reply, bodies
from tests.conftest import fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, MutableMapping

    from carecycle_webhooks import Dispatcher


def request(app: Any, method: str, url: str, **options: Any) -> httpx.Response:
    async def one() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, url, **options)

    return asyncio.run(asyncio.wait_for(one(), timeout=10))


def reply(response: httpx.Response) -> Reply:
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


class TestASGIStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        return reply(request(webhook_app(dispatcher), method, "/", content=body, headers=dict(headers)))


async def home(_: object) -> PlainTextResponse:
    return PlainTextResponse("the rest of the site")


def routed(dispatcher: Dispatcher) -> Starlette:
    # An ASGI application (not a function) as a Route's endpoint is served as it is.
    return Starlette(routes=[Route("/", home), Route("/hooks/carecycle", webhook_app(dispatcher))])


class TestRoutedStatusTable(AdapterContract):
    """Routed to one path of a Starlette application."""

    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        app = routed(dispatcher)
        return reply(request(app, method, "/hooks/carecycle", content=body, headers=dict(headers)))


def test_mounted_under_a_prefix() -> None:
    # A Mount serves the paths under it: Starlette redirects the prefix itself to "prefix/".
    recorder = Recorder()
    app = Starlette(routes=[Route("/", home), Mount("/hooks", app=webhook_app(recorder.dispatcher))])
    body = fixture_bytes("customer.created")
    response = request(app, "POST", "/hooks/carecycle", content=body, headers=svix_headers(body))
    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert request(app, "GET", "/").text == "the rest of the site"
    assert request(app, "POST", "/hooks", content=body, headers=svix_headers(body)).status_code == 307


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize(("limit_delta", "status"), [(0, 200), (-1, 413)])
def test_chunked_bodies(limit_delta: int, status: int) -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder(max_body_size=len(body) + limit_delta)
    response = request(
        webhook_app(recorder.dispatcher), "POST", "/", content=pieces(body, 100), headers=svix_headers(body)
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == status
    assert len(recorder.events) == (status == 200)


def run(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one ASGI connection: ``messages`` are received in turn, then nothing more (bounded)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(30)
        raise AssertionError("nothing more to receive")  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))
    return sent


def http_scope(headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": "/",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }


def test_lifespan_is_acknowledged() -> None:
    # uvicorn's default (lifespan "auto") sends both: a server must not wait on them.
    app = webhook_app(Recorder().dispatcher)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.other"}, {"type": "lifespan.shutdown"}]
    sent = run(app, scope, messages)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_the_app_says_what_it_is() -> None:
    # No secret in it: the dispatcher's repr names its handlers only.
    assert repr(webhook_app(Recorder().dispatcher)) == (
        "<carecycle_webhooks.asgi.webhook_app(Dispatcher(handlers for: customer.created; catch-all: False))>"
    )


def test_a_websocket_is_refused() -> None:
    sent = run(webhook_app(Recorder().dispatcher), {"type": "websocket", "path": "/"}, [])
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_an_unknown_scope_type_raises() -> None:
    with pytest.raises(ValueError, match="serves HTTP, not 'telepathy'"):
        run(webhook_app(Recorder().dispatcher), {"type": "telepathy"}, [])


def test_a_declared_length_over_the_limit_is_413_before_receiving() -> None:
    recorder = Recorder(max_body_size=1000)
    sent = run(webhook_app(recorder.dispatcher), http_scope([(b"content-length", b"1001")]), [])
    assert sent[0]["status"] == 413
    assert (b"content-length", str(len(sent[1]["body"])).encode()) in sent[0]["headers"]


def test_headers_given_as_a_tuple_of_lists_are_read() -> None:
    # The ASGI spec asks for an iterable of two-item iterables, not a list of tuples.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    headers = tuple([name.encode(), value.encode()] for name, value in svix_headers(body).items())
    scope = http_scope(headers)  # type: ignore[arg-type]
    sent = run(webhook_app(recorder.dispatcher), scope, [{"type": "http.request", "body": body}])
    assert sent[0]["status"] == 200
    assert len(recorder.events) == 1


def test_a_client_gone_mid_body_is_answered_quietly(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    messages = [
        {"type": "http.request", "body": b'{"event_type": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with caplog.at_level("INFO", logger="carecycle_webhooks"):
        sent = run(webhook_app(recorder.dispatcher), http_scope([(b"content-length", b"5000")]), messages)
    assert sent[0]["status"] == 400
    assert "(http.disconnect)" in caplog.text
    assert bodies(recorder.dispatcher).used == 0


def test_a_server_that_raises_on_a_closed_connection_is_no_error() -> None:
    # ASGI 2.4: send() on a closed connection may raise an OSError subclass.
    recorder = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        raise ConnectionResetError

    app = webhook_app(recorder.dispatcher)
    asyncio.run(asyncio.wait_for(app(http_scope([]), receive, send), timeout=10))
    assert bodies(recorder.dispatcher).used == 0


@pytest.mark.parametrize(
    ("declared", "first_piece"),
    [
        (900_000, 1000),  # a large body: its deadline runs from the start
        # A small one gets no deadline before its first piece, which holds nothing; a piece
        # that leaves more to come holds budget, and from then on the deadline applies.
        (65_536, 65_535),
    ],
)
def test_a_body_that_does_not_arrive_in_time_is_408_and_frees_its_budget(
    monkeypatch: pytest.MonkeyPatch, declared: int, first_piece: int
) -> None:
    monkeypatch.setattr("carecycle_webhooks._asgi.BODY_TIMEOUT_SECONDS", 0.2)
    recorder = Recorder()
    first = [{"type": "http.request", "body": b"{" * first_piece, "more_body": True}]
    scope = http_scope([(b"content-length", str(declared).encode())])
    sent = run(webhook_app(recorder.dispatcher), scope, first)
    assert sent[0]["status"] == 408
    assert bodies(recorder.dispatcher).used == 0


def test_a_chunked_body_is_taken_from_the_budget_as_it_arrives() -> None:
    recorder = Recorder(max_body_size=1000, body_budget=1000)
    assert bodies(recorder.dispatcher).take(650)  # other deliveries being received
    messages = [{"type": "http.request", "body": b" " * 100, "more_body": True} for _ in range(20)]
    sent = run(webhook_app(recorder.dispatcher), http_scope([]), messages)
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"5") in sent[0]["headers"]
    assert len(messages) == 16  # the fourth piece did not fit: receiving stopped there
    assert bodies(recorder.dispatcher).used == 650


def test_a_sync_only_store_is_refused_where_the_app_is_built() -> None:
    from tests.test_idempotency import SyncOnlyStore

    recorder = Recorder(idempotency_store=SyncOnlyStore())
    with pytest.raises(
        WebhookConfigurationError,
        match=r"ASGI applications built by webhook_app\(\) are async.*not implement AsyncIdempotencyStore",
    ):
        webhook_app(recorder.dispatcher)


def test_not_a_dispatcher_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match=r"webhook_app\(\) takes a .*Dispatcher"):
        webhook_app(object())  # type: ignore[arg-type]
