from __future__ import annotations

import io
import json
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import flask
import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from carecycle_webhooks import RedisIdempotencyStore, WebhookConfigurationError
from carecycle_webhooks.flask import webhook_view
from tests.adapters import (
    AdapterContract,
    AsyncRedisClient,
    EndlessStream,
    Recorder,
    Reply,
    bodies,
    import_without,
)
from tests.conftest import fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from carecycle_webhooks import Dispatcher


def make_app(dispatcher: Dispatcher) -> flask.Flask:
    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(dispatcher), methods=["POST"])
    return app


def reply(response: object) -> Reply:
    assert isinstance(response, flask.Response)
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.get_data())


class TestFlaskStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        client = make_app(dispatcher).test_client()
        response = client.open(
            "/webhooks", method=method, data=body, headers=dict(headers), content_type="application/json"
        )
        return reply(response)


class Unreadable(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        raise AssertionError("the body must not be read")


def post_environ(body: bytes = b"", overrides: Mapping[str, object] = MappingProxyType({})) -> dict[str, Any]:
    builder = EnvironBuilder(
        path="/webhooks", method="POST", data=body, headers=list(svix_headers(body).items())
    )
    environ: dict[str, Any] = builder.get_environ()
    builder.close()
    environ.update(overrides)
    return environ


def run(app: flask.Flask, environ: dict[str, Any]) -> tuple[int, bytes]:
    """Call the WSGI application with this very environ (the test client would rebuild it)."""
    app_iter, status, _ = run_wsgi_app(app.wsgi_app, environ)
    return int(status.split()[0]), b"".join(app_iter)


def test_chunked_body_is_read_no_further_than_the_limit() -> None:
    recorder = Recorder(max_body_size=1000)
    stream = EndlessStream()
    environ = post_environ(overrides={"wsgi.input": stream, "wsgi.input_terminated": True})
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    status, _ = run(make_app(recorder.dispatcher), environ)
    assert status == 413
    assert stream.bytes_read <= 1001
    assert recorder.events == []


def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    recorder = Recorder(max_body_size=1000)
    environ = post_environ(overrides={"wsgi.input": Unreadable(), "CONTENT_LENGTH": "1001"})
    status, body = run(make_app(recorder.dispatcher), environ)
    assert status == 413
    assert json.loads(body) == {"error": "body_too_large", "limit": 1000}


def test_understated_length_truncates_the_body() -> None:
    # Werkzeug stops at Content-Length: the rest is never seen, the signature fails.
    recorder = Recorder()
    body = fixture_bytes("customer.created")
    environ = post_environ(body, {"CONTENT_LENGTH": str(len(body) - 10)})
    status, _ = run(make_app(recorder.dispatcher), environ)
    assert status == 400
    assert recorder.events == []


def test_lower_max_content_length_of_the_app_answers_413_as_json() -> None:
    recorder = Recorder()
    app = make_app(recorder.dispatcher)
    app.config["MAX_CONTENT_LENGTH"] = 100
    body = fixture_bytes("customer.created")
    response = app.test_client().post("/webhooks", data=body, headers=svix_headers(body))
    assert response.status_code == 413
    assert response.get_json() == {"error": "body_too_large", "limit": 100}


def test_view_is_post_only_without_methods() -> None:
    recorder = Recorder()
    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(recorder.dispatcher))
    client = app.test_client()
    body = fixture_bytes("customer.created")
    assert client.post("/webhooks", data=body, headers=svix_headers(body)).status_code == 200
    assert client.get("/webhooks").status_code == 405


def test_view_routed_for_get_too_still_answers_405() -> None:
    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(Recorder().dispatcher), methods=["GET", "POST"])
    response = app.test_client().get("/webhooks")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_endpoint_names() -> None:
    first, second = Recorder(), Recorder()
    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(first.dispatcher), methods=["POST"])
    app.add_url_rule(
        "/other/webhooks", view_func=webhook_view(second.dispatcher, name="other_webhooks"), methods=["POST"]
    )
    with app.test_request_context():
        assert flask.url_for("carecycle_webhooks") == "/webhooks"
        assert flask.url_for("other_webhooks") == "/other/webhooks"
    body = fixture_bytes("customer.created")
    client = app.test_client()
    assert client.post("/other/webhooks", data=body, headers=svix_headers(body)).status_code == 200
    assert (len(first.events), len(second.events)) == (0, 1)


def test_same_endpoint_name_twice_is_refused_by_flask() -> None:
    # Two different views under one endpoint name: Flask's error names it.
    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(Recorder().dispatcher))
    with pytest.raises(AssertionError, match="carecycle_webhooks"):
        app.add_url_rule("/other", view_func=webhook_view(Recorder().dispatcher))


def test_url_variables_are_accepted() -> None:
    # Any variable but <tenant>, which only a dispatcher with a secret resolver takes.
    recorder = Recorder()
    app = flask.Flask(__name__)
    app.add_url_rule("/webhooks/<region>", view_func=webhook_view(recorder.dispatcher))
    body = fixture_bytes("customer.created")
    response = app.test_client().post("/webhooks/east", data=body, headers=svix_headers(body))
    assert response.status_code == 200


def test_asyncio_store_is_refused() -> None:
    recorder = Recorder(idempotency_store=RedisIdempotencyStore(AsyncRedisClient()))
    with pytest.raises(WebhookConfigurationError, match="asyncio"):
        webhook_view(recorder.dispatcher)


def test_an_async_only_store_is_refused_where_the_view_is_built() -> None:
    from tests.test_idempotency import AsyncOnlyStore

    recorder = Recorder(idempotency_store=AsyncOnlyStore())
    with pytest.raises(WebhookConfigurationError, match=r"AsyncOnlyStore.*not implement IdempotencyStore"):
        webhook_view(recorder.dispatcher)


def test_not_a_dispatcher_is_refused() -> None:
    with pytest.raises(WebhookConfigurationError, match="Dispatcher"):
        webhook_view(flask.Flask(__name__))  # type: ignore[arg-type]


def test_missing_flask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    error = import_without(monkeypatch, "flask", "flask", "werkzeug")
    assert "pip install 'carecycle-webhooks[flask]'" in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


class TrickleStream(io.RawIOBase):
    """A chunked body arriving a few bytes at a time, as a slow client sends it."""

    def __init__(self, body: bytes, piece: int) -> None:
        self.body = body
        self.piece = piece

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self.piece, len(self.body))
        buffer[:size] = self.body[:size]
        self.body = self.body[size:]
        return size


def test_a_chunked_body_read_in_short_pieces_takes_only_what_it_read_from_the_budget() -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder(max_body_size=len(body), body_budget=len(body))
    seen: list[int] = []

    @recorder.dispatcher.on("customer.created")
    def budget_in_use(event: object) -> None:
        seen.append(bodies(recorder.dispatcher).used)

    environ = post_environ(body, {"wsgi.input": TrickleStream(body, 7), "wsgi.input_terminated": True})
    environ.pop("CONTENT_LENGTH", None)
    status, answer = run(make_app(recorder.dispatcher), environ)
    assert status == 200, answer
    assert seen == [len(body)]
    assert bodies(recorder.dispatcher).used == 0


class Reset(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        raise ConnectionResetError("peer reset after 'Delacroix'")


def test_a_client_gone_mid_body_is_400_logged_by_type_only(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    environ = post_environ(overrides={"wsgi.input": Reset(), "wsgi.input_terminated": True})
    environ.pop("CONTENT_LENGTH", None)
    with caplog.at_level("INFO", logger="carecycle_webhooks"):
        status, answer = run(make_app(recorder.dispatcher), environ)
    assert (status, json.loads(answer)) == (400, {"error": "client_disconnected"})
    assert "ConnectionResetError" in caplog.text
    assert "Delacroix" not in caplog.text
    assert bodies(recorder.dispatcher).used == 0


def test_a_chunked_body_that_outgrows_the_budget_is_503_as_it_is_read() -> None:
    recorder = Recorder(max_body_size=200_000, body_budget=200_000)
    assert bodies(recorder.dispatcher).take(100_000)  # other deliveries being read
    stream = EndlessStream()
    environ = post_environ(overrides={"wsgi.input": stream, "wsgi.input_terminated": True})
    environ.pop("CONTENT_LENGTH", None)
    status, answer = run(make_app(recorder.dispatcher), environ)
    assert (status, json.loads(answer)["error"]) == (503, "busy")
    assert stream.bytes_read <= 100_000
    assert bodies(recorder.dispatcher).used == 100_000


def test_a_body_shorter_than_its_content_length_is_a_client_gone_not_a_bad_signature() -> None:
    body = fixture_bytes("customer.created")
    recorder = Recorder()
    # As gunicorn gives it: its own stream (wsgi.input_terminated), which reads short when
    # the client closes mid-body, without an error.
    environ = post_environ(
        body=body, overrides={"wsgi.input": io.BytesIO(body[:200]), "wsgi.input_terminated": True}
    )
    status, answer = run(make_app(recorder.dispatcher), environ)
    assert (status, json.loads(answer)) == (400, {"error": "client_disconnected"})
    assert recorder.events == []
    assert bodies(recorder.dispatcher).used == 0
