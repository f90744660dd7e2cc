"""carecycle_webhooks.wsgi through Werkzeug's test client, and with hand-made environs (PEP 3333)."""

from __future__ import annotations

import http
import io
import wsgiref.validate
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response

from carecycle_webhooks import RedisIdempotencyStore, WebhookConfigurationError
from carecycle_webhooks.wsgi import webhook_app
from tests.adapters import AdapterContract, AsyncRedisClient, EndlessStream, Recorder, Reply, bodies
from tests.conftest import fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from carecycle_webhooks import Dispatcher

# The status line as this Python spells it (3.13 renamed 413 to "Content Too Large").
TOO_LARGE = f"413 {http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE.phrase}"


def werkzeug_reply(response: Any) -> Reply:
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.get_data())


class TestWSGIStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        # wsgiref's validator checks that both sides keep to PEP 3333.
        client = Client(wsgiref.validate.validator(webhook_app(dispatcher)))
        return werkzeug_reply(
            client.open("/", method=method, data=body, headers=dict(headers), buffered=True)
        )


class TestMountedStatusTable(AdapterContract):
    """Mounted under a prefix beside another application, with Werkzeug's DispatcherMiddleware."""

    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        site = Response("the rest of the site")
        app = DispatcherMiddleware(site, {"/hooks/carecycle": webhook_app(dispatcher)})
        response = Client(app).open("/hooks/carecycle", method=method, data=body, headers=dict(headers))
        return werkzeug_reply(response)


def call(
    app: Any, body: Any, headers: Mapping[str, str], **environ: Any
) -> tuple[str, list[tuple[str, str]], bytes]:
    """One request through a hand-made WSGI environ; ``body`` is the ``wsgi.input`` stream."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def write(data: bytes) -> None:  # pragma: no cover - PEP 3333's write(), not used
        raise AssertionError("write() is not used")

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, response_headers))
        return write

    full: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/webhooks",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": body,
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
        **environ,
    }
    chunks: Iterable[bytes] = app(full, start_response)
    data = b"".join(chunks)
    return started[0][0], started[0][1], data


def test_a_body_without_a_length_is_read_to_its_end_when_the_server_says_it_ends() -> None:
    # gunicorn and Werkzeug's server de-chunk a chunked body and set wsgi.input_terminated.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    status, _, data = call(
        webhook_app(recorder.dispatcher),
        io.BytesIO(body),
        svix_headers(body),
        **{"wsgi.input_terminated": True},
    )
    assert (status, data) == ("200 OK", b'{"status": "processed"}')
    assert len(recorder.events) == 1


def test_an_endless_terminated_body_is_read_no_further_than_the_limit() -> None:
    recorder = Recorder(max_body_size=1000)
    stream = EndlessStream()
    status, _, _ = call(webhook_app(recorder.dispatcher), stream, {}, **{"wsgi.input_terminated": True})
    assert status == TOO_LARGE
    assert stream.bytes_read <= 1001
    assert bodies(recorder.dispatcher).used == 0


def test_without_a_length_or_a_terminated_input_nothing_is_read() -> None:
    # PEP 3333: an application must not read past CONTENT_LENGTH; without one, the stream
    # may never end (wsgiref's is the socket).
    recorder = Recorder()
    stream = EndlessStream()
    status, _, _ = call(webhook_app(recorder.dispatcher), stream, {})
    assert status == "400 Bad Request"  # an empty body, which no signature covers
    assert stream.bytes_read == 0


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    recorder = Recorder(max_body_size=1000)
    stream = EndlessStream()
    status, headers, data = call(webhook_app(recorder.dispatcher), stream, {}, CONTENT_LENGTH="1001")
    assert status == TOO_LARGE
    assert ("Content-Length", str(len(data))) in headers
    assert stream.bytes_read == 0


def test_the_declared_length_is_read_and_no_more() -> None:
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    stream = io.BytesIO(body + b"garbage after the body")
    status, _, _ = call(
        webhook_app(recorder.dispatcher), stream, svix_headers(body), CONTENT_LENGTH=str(len(body))
    )
    assert status == "200 OK"
    assert stream.tell() == len(body)


def test_a_chunked_body_is_taken_from_the_budget_as_it_is_read() -> None:
    recorder = Recorder(max_body_size=200_000, body_budget=200_000)
    assert bodies(recorder.dispatcher).take(150_000)  # other deliveries being read
    stream = EndlessStream()
    status, headers, _ = call(webhook_app(recorder.dispatcher), stream, {}, **{"wsgi.input_terminated": True})
    assert status == "503 Service Unavailable"
    assert ("retry-after", "5") in headers
    assert stream.bytes_read < 200_000 - 150_000
    assert bodies(recorder.dispatcher).used == 150_000


def test_a_client_gone_mid_body_is_answered_quietly(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError("connection reset by the patient 555-0100")

    recorder = Recorder()
    with caplog.at_level("INFO", logger="carecycle_webhooks"):
        status, _, data = call(webhook_app(recorder.dispatcher), Broken(), {}, CONTENT_LENGTH="500")
    assert status == "400 Bad Request"
    assert b"client_disconnected" in data
    assert "(OSError)" in caplog.text
    assert "555-0100" not in caplog.text
    assert bodies(recorder.dispatcher).used == 0


def test_a_status_without_a_standard_phrase_still_makes_a_status_line() -> None:
    from carecycle_webhooks import WebhookResponse
    from tests.adapters import CustomAnswer

    class OddAnswer(CustomAnswer):
        ANSWER = WebhookResponse(299, b"odd", {"content-type": "text/plain"})

    body = fixture_bytes("customer.created")
    status, _, data = call(
        webhook_app(OddAnswer("whsec_" + "A" * 32)), io.BytesIO(body), {}, CONTENT_LENGTH="5"
    )
    assert (status, data) == ("299 Unknown", b"odd")


def test_an_answer_without_a_content_type_has_none() -> None:
    from carecycle_webhooks import WebhookResponse
    from tests.adapters import CustomAnswer

    class Bare(CustomAnswer):
        ANSWER = WebhookResponse(204, b"", {})

    status, headers, data = call(
        webhook_app(Bare("whsec_" + "A" * 32)), io.BytesIO(b"{}"), {}, CONTENT_LENGTH="2"
    )
    assert (status, headers, data) == ("204 No Content", [("Content-Length", "0")], b"")


def test_an_asyncio_only_store_is_refused_where_the_app_is_built() -> None:
    recorder = Recorder(idempotency_store=RedisIdempotencyStore(AsyncRedisClient()))
    with pytest.raises(
        WebhookConfigurationError, match=r"WSGI applications built by webhook_app\(\) are synchronous"
    ):
        webhook_app(recorder.dispatcher)


def test_not_a_dispatcher_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match=r"webhook_app\(\) takes a .*Dispatcher"):
        webhook_app(object())  # type: ignore[arg-type]


def test_a_body_shorter_than_its_content_length_is_a_client_gone_not_a_bad_signature(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A WSGI server gives a short read when the client closes mid-body: no exception.
    body = fixture_bytes("customer.created")
    recorder = Recorder()
    with caplog.at_level("INFO", logger="carecycle_webhooks"):
        status, _, data = call(
            webhook_app(recorder.dispatcher),
            io.BytesIO(body[:200]),
            svix_headers(body),
            CONTENT_LENGTH=str(len(body)),
        )
    assert (status, data) == ("400 Bad Request", b'{"error": "client_disconnected"}')
    assert "no_matching_signature" not in caplog.text
    assert recorder.events == []
    assert bodies(recorder.dispatcher).used == 0
