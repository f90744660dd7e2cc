"""``webhook_view(dispatcher, asynchronous=True)``: the ``async def`` view, under Django's AsyncClient.

The whole status table runs through it (`AdapterContract`), then what is its own: handlers
on the request's event loop, ``ATOMIC_REQUESTS``, `DjangoIdempotencyStore`, the stores it
refuses, and `limit_webhook_bodies` in front of it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure()

from django.core.management import call_command
from django.db import connections
from django.http import HttpResponse
from django.test import AsyncClient
from django.urls import clear_url_caches, path

from carecycle_webhooks import (
    CustomerCreatedEvent,
    Dispatcher,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
    WebhookConfigurationError,
)
from carecycle_webhooks.django import DjangoIdempotencyStore, webhook_view
from tests.adapters import AdapterContract, AsyncRedisClient, Recorder, Reply, bodies, django_urls
from tests.adapters.test_django import ASGIRun, guarded_application
from tests.conftest import SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    import datetime
    from collections.abc import Mapping

    from django.http.response import HttpResponseBase

    from carecycle_webhooks import Claim


def serve_async(dispatcher: Dispatcher) -> None:
    """Route ``/webhooks/`` of the tests' URLconf to the async view of ``dispatcher``."""
    django_urls.urlpatterns[:] = [path("webhooks/", webhook_view(dispatcher, asynchronous=True))]
    clear_url_caches()


def reply(response: HttpResponseBase) -> Reply:
    assert isinstance(response, HttpResponse)
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.content)


def post(body: bytes, headers: Mapping[str, str], *, method: str = "POST") -> Reply:
    async def send() -> HttpResponseBase:
        client = AsyncClient(enforce_csrf_checks=True)  # no CSRF token: Svix has none
        return await client.generic(
            method, "/webhooks/", data=body, content_type="application/json", headers=dict(headers)
        )

    return reply(asyncio.run(send()))


class TestDjangoAsyncStatusTable(AdapterContract):
    def send(
        self, dispatcher: Dispatcher, body: bytes, headers: Mapping[str, str], *, method: str = "POST"
    ) -> Reply:
        serve_async(dispatcher)
        return post(body, headers, method=method)


def test_the_view_is_a_coroutine_function_that_django_runs_on_the_event_loop() -> None:
    where: list[tuple[threading.Thread, asyncio.AbstractEventLoop]] = []
    webhooks = Dispatcher(SECRET)

    @webhooks.on("customer.created")
    async def created(event: CustomerCreatedEvent) -> None:
        where.append((threading.current_thread(), asyncio.get_running_loop()))

    view = webhook_view(webhooks, asynchronous=True)
    assert asyncio.iscoroutinefunction(view)
    serve_async(webhooks)
    body = fixture_bytes("customer.created")
    loops: list[asyncio.AbstractEventLoop] = []

    async def send() -> HttpResponseBase:
        loops.append(asyncio.get_running_loop())
        return await AsyncClient().post(
            "/webhooks/", body, content_type="application/json", headers=svix_headers(body)
        )

    assert asyncio.run(send()).status_code == 200
    # Awaited on the request's own loop, in its thread: no worker thread, no loop of its own.
    assert where == [(threading.current_thread(), loops[0])]


def test_the_sync_view_runs_the_same_handler_in_a_worker_thread() -> None:
    # What asynchronous=True changes: the default view is sync, and Django runs it in a thread.
    threads: list[threading.Thread] = []
    webhooks = Dispatcher(SECRET)

    @webhooks.on("customer.created")
    async def created(event: CustomerCreatedEvent) -> None:
        threads.append(threading.current_thread())

    django_urls.serve(webhooks)
    body = fixture_bytes("customer.created")

    async def send() -> HttpResponseBase:
        return await AsyncClient().post(
            "/webhooks/", body, content_type="application/json", headers=svix_headers(body)
        )

    assert asyncio.run(send()).status_code == 200
    assert threads
    assert threads != [threading.current_thread()]


def test_the_async_view_works_with_atomic_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    # Django refuses to run an async view under ATOMIC_REQUESTS: the view is left out of it.
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    recorder = Recorder()
    serve_async(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    result = post(body, svix_headers(body))
    assert (result.status, result.json()) == (200, {"status": "processed"})
    assert len(recorder.events) == 1


@pytest.fixture(scope="module")
def migrated() -> None:
    call_command("migrate", "carecycle_webhooks", verbosity=0)


@pytest.mark.usefixtures("migrated")
def test_the_async_view_with_the_django_store_runs_a_delivery_once() -> None:
    recorder = Recorder(idempotency_store=DjangoIdempotencyStore())
    serve_async(recorder.dispatcher)
    body = fixture_bytes("customer.created")
    headers = svix_headers(body, msg_id="msg_async_django_store")
    first, again = post(body, headers), post(body, headers)
    assert (first.status, first.json()) == (200, {"status": "processed"})
    assert (again.status, again.json()) == (200, {"status": "duplicate"})
    assert len(recorder.events) == 1


class SyncOnlyStore:
    """An idempotency store with only the synchronous protocol."""

    def __init__(self) -> None:
        self.store = InMemoryIdempotencyStore()

    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:  # pragma: no cover - refused
        return self.store.acquire(key, lease=lease)

    def complete(self, key: str, token: str, *, ttl: datetime.timedelta) -> None:  # pragma: no cover
        self.store.complete(key, token, ttl=ttl)

    def release(self, key: str, token: str) -> None:  # pragma: no cover
        self.store.release(key, token)


def test_a_store_that_cannot_serve_asyncio_is_refused_when_the_view_is_built() -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=SyncOnlyStore())
    with pytest.raises(WebhookConfigurationError, match="Django views built by webhook_view\\(\\) are async"):
        webhook_view(dispatcher, asynchronous=True)
    webhook_view(dispatcher)  # the sync view serves it


def test_an_asyncio_redis_store_is_served_by_the_async_view() -> None:
    dispatcher = Dispatcher(SECRET, idempotency_store=RedisIdempotencyStore(AsyncRedisClient()))
    assert asyncio.iscoroutinefunction(webhook_view(dispatcher, asynchronous=True))
    with pytest.raises(WebhookConfigurationError, match="asyncio"):
        webhook_view(dispatcher)


def test_limit_webhook_bodies_guards_the_async_view() -> None:
    body = fixture_bytes("customer.created")
    limit = len(body) + 10
    recorder = Recorder(max_body_size=limit)
    serve_async(recorder.dispatcher)
    run = ASGIRun("/webhooks/", [b"x" * limit] * 20, {"content-length": str(20 * limit)})
    result = run.run(guarded_application())
    assert (result.status, result.json()) == (413, {"error": "body_too_large", "limit": limit})
    assert run.received == 0
    # A delivery through the same wrapper reaches the view, and its budget is given back.
    headers: dict[str, Any] = svix_headers(body)
    ok = ASGIRun("/webhooks/", [body], {**headers, "content-type": "application/json"})
    assert ok.run(guarded_application()).status == 200
    assert len(recorder.events) == 1
    assert bodies(recorder.dispatcher).used == 0
