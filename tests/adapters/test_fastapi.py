from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING, Any, cast

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Route

from carecycle_webhooks import RedisIdempotencyStore, WebhookConfigurationError
from carecycle_webhooks.fastapi import webhook_view
from tests.adapters import AdapterContract, AsyncRedisClient, Recorder, Reply, bodies, import_without
from tests.conftest import fixture_bytes, svix_headers

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its test client; the dev extra installs httpx.
    # Its StarletteDeprecationWarning (a UserWarning) is new in Starlette 1.x, and the
    # lowest FastAPI we support brings Starlette 0.36: the filter names the base class.
    warnings.filterwarnings(
        "ignore",
        message=r"Using `httpx` with `starlette\.testclient` is deprecated",
        category=UserWarning,
    )
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, MutableMapping

    import httpx

    from carecycle_webhooks import Dispatcher


def fastapi_app(dispatcher: Dispatcher) -> FastAPI:
    app = FastAPI()
    app.add_api_route("/webhooks", webhook_view(dispatcher), methods=["POST"])
    return app


def starlette_app(dispatcher: Dispatcher) -> Starlette:
    return Starlette(routes=[Route("/webhooks", webhook_view(dispatcher), methods=["POST"])])


def call(app: Any, method: str, url: str = "/webhooks", **options: Any) -> httpx.Response:
    """One request through Starlette's TestClient."""
    # Starlette types its test client against httpx2; at runtime (and here) it is httpx.
    client = TestClient(app)
    return cast("httpx.Response", client.request(method, url, **options))  # pyright: ignore[reportUnknownMemberType]


def reply(response: httpx.Response) -> Reply:
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.content)


class TestFastAPIStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        return reply(call(fastapi_app(dispatcher), method, content=body, headers=dict(headers)))


class TestStarletteStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        return reply(call(starlette_app(dispatcher), method, content=body, headers=dict(headers)))


def test_async_handlers_and_asyncio_store_are_welcome() -> None:
    recorder = Recorder()
    seen: list[str] = []

    @recorder.dispatcher.on("call.completed")
    async def on_call(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(event.event_type)

    body = fixture_bytes("call.completed")
    response = call(fastapi_app(recorder.dispatcher), "POST", content=body, headers=svix_headers(body))
    assert response.status_code == 200
    assert seen == ["call.completed"]
    # A RedisIdempotencyStore with an asyncio client is fine for an async endpoint.
    webhook_view(Recorder(idempotency_store=RedisIdempotencyStore(AsyncRedisClient())).dispatcher)


def test_openapi_documents_no_parameters_and_no_body() -> None:
    schema = fastapi_app(Recorder().dispatcher).openapi()
    operation = schema["paths"]["/webhooks"]["post"]
    assert "parameters" not in operation
    assert "requestBody" not in operation
    assert "request" not in str(schema.get("components", {}))
    assert set(operation["responses"]) == {"200"}


def chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_over_the_limit_is_413() -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder(max_body_size=len(body) - 1)
    response = call(
        fastapi_app(recorder.dispatcher), "POST", content=chunks(body, 100), headers=svix_headers(body)
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert recorder.events == []


def test_chunked_body_within_the_limit_is_handled() -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder(max_body_size=len(body))
    response = call(
        fastapi_app(recorder.dispatcher), "POST", content=chunks(body, 100), headers=svix_headers(body)
    )
    assert response.status_code == 200
    assert len(recorder.events) == 1


def call_asgi(app: Any, headers: list[tuple[bytes, bytes]], receive: Any) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks",
        "raw_path": b"/webhooks",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))  # bounded, whatever the code does
    return sent


def test_endless_body_is_received_no_further_than_the_limit() -> None:
    recorder = Recorder(max_body_size=1000)
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(100)
        return {"type": "http.request", "body": b" " * 100, "more_body": True}

    sent = call_asgi(starlette_app(recorder.dispatcher), [], receive)
    assert sent[0]["status"] == 413
    assert sum(received) <= 1100


def test_declared_length_over_the_limit_is_413_before_receiving() -> None:
    recorder = Recorder(max_body_size=1000)

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be received")

    sent = call_asgi(starlette_app(recorder.dispatcher), [(b"content-length", b"1001")], receive)
    assert sent[0]["status"] == 413
    # Given twice (a lenient server), the first one counts, as Starlette's own look-up has it.
    twice = [(b"content-length", b"1001"), (b"content-length", b"10")]
    assert call_asgi(starlette_app(recorder.dispatcher), twice, receive)[0]["status"] == 413


@pytest.mark.parametrize("length", [b"", b"many", b"-1"])
def test_unusable_content_length_is_ignored(length: bytes) -> None:
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    headers = [(name.encode(), value.encode()) for name, value in svix_headers(body).items()]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    sent = call_asgi(starlette_app(recorder.dispatcher), [(b"content-length", length), *headers], receive)
    assert sent[0]["status"] == 200
    assert len(recorder.events) == 1


def test_endpoint_routed_for_get_too_still_answers_405() -> None:
    app = FastAPI()
    app.add_api_route("/webhooks", webhook_view(Recorder().dispatcher), methods=["GET", "POST"])
    response = call(app, "GET")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_a_sync_only_store_is_refused_where_the_view_is_built() -> None:
    from tests.test_idempotency import SyncOnlyStore

    recorder = Recorder(idempotency_store=SyncOnlyStore())
    with pytest.raises(
        WebhookConfigurationError, match=r"SyncOnlyStore.*not implement AsyncIdempotencyStore"
    ):
        webhook_view(recorder.dispatcher)


def test_not_a_dispatcher_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match="Dispatcher"):
        webhook_view(FastAPI())  # type: ignore[arg-type]


def test_missing_starlette_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    error = import_without(monkeypatch, "fastapi", "fastapi", "starlette")
    assert "pip install 'carecycle-webhooks[fastapi]'" in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_a_chunked_body_is_taken_from_the_budget_as_it_arrives() -> None:
    recorder = Recorder(max_body_size=1000, body_budget=1000)
    assert bodies(recorder.dispatcher).take(650)  # other deliveries being read
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(100)
        return {"type": "http.request", "body": b" " * 100, "more_body": True}

    sent = call_asgi(starlette_app(recorder.dispatcher), [], receive)
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"5") in sent[0]["headers"]
    assert sum(received) == 400  # the fourth piece did not fit: reading stopped there
    assert bodies(recorder.dispatcher).used == 650


def test_a_client_gone_mid_body_is_answered_quietly(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    messages = [
        {"type": "http.request", "body": b'{"event_type": ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    with caplog.at_level("INFO", logger="carecycle_webhooks"):
        sent = call_asgi(starlette_app(recorder.dispatcher), [(b"content-length", b"5000")], receive)
    assert sent[0]["status"] == 400
    assert b"client_disconnected" in sent[1]["body"]
    assert "(http.disconnect)" in caplog.text
    assert bodies(recorder.dispatcher).used == 0


def endless(piece: int = 100, *, at_most: int = 20_000) -> tuple[Any, list[int]]:
    """A body that keeps coming, ``at_most`` pieces (a bound, should the code not stop)."""
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        received.append(piece)
        return {"type": "http.request", "body": b" " * piece, "more_body": len(received) < at_most}

    return receive, received


def test_pieces_count_whatever_the_declared_length_said() -> None:
    # A server that frames the body otherwise (Content-Length and Transfer-Encoding both
    # sent): the Content-Length says 10, the pieces keep coming. Every one is counted.
    recorder = Recorder(max_body_size=1000)
    receive, received = endless()
    sent = call_asgi(starlette_app(recorder.dispatcher), [(b"content-length", b"10")], receive)
    assert sent[0]["status"] == 413
    assert sum(received) <= 1100
    recorder = Recorder(max_body_size=1000, body_budget=1000)
    assert bodies(recorder.dispatcher).take(650)
    receive, received = endless()
    sent = call_asgi(starlette_app(recorder.dispatcher), [(b"content-length", b"10")], receive)
    assert sent[0]["status"] == 503
    assert sum(received) == 400


def test_a_body_that_does_not_arrive_in_time_is_408_and_frees_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("carecycle_webhooks._asgi.BODY_TIMEOUT_SECONDS", 0.2)
    recorder = Recorder()
    first = [{"type": "http.request", "body": b"{" * 1000, "more_body": True}]

    async def receive() -> dict[str, Any]:
        if first:
            return first.pop()
        await asyncio.sleep(30)  # a slow client: nothing more
        raise AssertionError("not reached")  # pragma: no cover

    sent = call_asgi(starlette_app(recorder.dispatcher), [(b"content-length", b"900000")], receive)
    assert sent[0]["status"] == 408
    assert bodies(recorder.dispatcher).used == 0


def test_an_idle_client_holds_only_what_it_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    # Four clients declare 8 MiB bodies, send one byte and wait: deliveries still get in.
    monkeypatch.setattr("carecycle_webhooks._asgi.BODY_TIMEOUT_SECONDS", 1.0)
    recorder = Recorder()
    app = starlette_app(recorder.dispatcher)
    body = fixture_bytes("customer.created")

    async def idle_receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "http.request", "body": b"{", "more_body": True}

    async def idle_then_nothing() -> dict[str, Any]:
        await asyncio.sleep(30)
        raise AssertionError("not reached")  # pragma: no cover

    async def scenario() -> list[int]:
        statuses: list[int] = []

        def client(receive_pieces: list[Any], headers: list[tuple[bytes, bytes]]) -> Any:
            async def receive() -> dict[str, Any]:
                return await receive_pieces.pop(0)() if receive_pieces else await idle_then_nothing()

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/webhooks",
                "root_path": "",
                "query_string": b"",
                "headers": headers,
            }
            return app(scope, receive, send)

        idle = [
            client([idle_receive], [(b"content-length", str(8 * 1024 * 1024).encode())]) for _ in range(4)
        ]
        tasks = [asyncio.ensure_future(one) for one in idle]
        await asyncio.sleep(0.05)

        async def whole() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k.encode(), v.encode()) for k, v in svix_headers(body).items()]
        await client([whole], [*headers, (b"content-length", str(len(body)).encode())])
        await asyncio.gather(*tasks)
        return statuses

    statuses = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert statuses[0] == 200  # the delivery, while four idle clients wait
    assert statuses[1:] == [408] * 4
    assert len(recorder.events) == 1
    assert bodies(recorder.dispatcher).used == 0
