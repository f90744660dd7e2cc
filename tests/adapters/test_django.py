from __future__ import annotations

import asyncio
import io
import json
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-adapter-tests-not-secret",  # noqa: S106 - a test-only key
        ROOT_URLCONF="tests.adapters.django_urls",
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        USE_TZ=True,
        # DATA_UPLOAD_MAX_MEMORY_SIZE stays Django's default, 2.5 MB: the view must not be bound by it.
    )
    django.setup()

from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from carecycle_webhooks import RedisIdempotencyStore, WebhookConfigurationError
from carecycle_webhooks.django import webhook_view
from tests.adapters import AdapterContract, AsyncRedisClient, EndlessStream, Recorder, Reply, import_without
from tests.adapters.django_urls import serve
from tests.conftest import fixture_bytes, load_fixture, svix_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from django.http.response import HttpResponseBase

    from carecycle_webhooks import Dispatcher


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
