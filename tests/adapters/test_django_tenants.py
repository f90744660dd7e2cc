"""Many tenants in Django: ``path("webhooks/<str:tenant>/", webhook_view(...))``, sync and async.

The same `TenantContract` as the other adapters. An unknown tenant is answered before the
body is read: by the sync view under WSGI (Django's own handler, which reads nothing
before the view), and by `limit_webhook_bodies` under ASGI, where Django would receive
the whole body before any view runs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure()

from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse
from django.test import AsyncClient, Client
from django.urls import clear_url_caches, include, path, reverse

from carecycle_webhooks.django import limit_webhook_bodies, webhook_view
from carecycle_webhooks.django import urls as included_urls
from tests.adapters import Reply, django_urls
from tests.adapters.test_tenants import ASGICall, TenantContract, Tenants, wsgi_unread
from tests.conftest import OTHER_SECRET, fixture_bytes, svix_headers

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from django.http.response import HttpResponseBase

    from carecycle_webhooks import Dispatcher


@pytest.fixture(autouse=True)
def _routes() -> Iterator[None]:
    saved = list(django_urls.urlpatterns)
    yield
    django_urls.urlpatterns[:] = saved
    clear_url_caches()


def serve(dispatcher: Dispatcher, *, asynchronous: bool) -> None:
    view = webhook_view(dispatcher, asynchronous=True) if asynchronous else webhook_view(dispatcher)
    django_urls.urlpatterns[:] = [path("webhooks/<str:tenant>/", view)]
    clear_url_caches()


def reply(response: HttpResponseBase) -> Reply:
    assert isinstance(response, HttpResponse)
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.content)


class TestDjangoView(TenantContract):
    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        serve(tenants.dispatcher, asynchronous=False)
        response = Client().post(
            f"/webhooks/{tenant}/", data=body, content_type="application/json", headers=dict(headers)
        )
        return reply(response)

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        serve(tenants.dispatcher, asynchronous=False)
        return wsgi_unread(WSGIHandler(), f"/webhooks/{tenant}/", headers)


class TestDjangoAsyncView(TenantContract):
    def send(self, tenants: Tenants, tenant: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        serve(tenants.dispatcher, asynchronous=True)

        async def one() -> HttpResponseBase:
            return await AsyncClient().post(
                f"/webhooks/{tenant}/", data=body, content_type="application/json", headers=dict(headers)
            )

        return reply(asyncio.run(asyncio.wait_for(one(), timeout=10)))

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        from django.core.asgi import get_asgi_application

        serve(tenants.dispatcher, asynchronous=True)
        call = ASGICall(f"/webhooks/{tenant}/", b"x" * 100, headers)
        return call.run(limit_webhook_bodies(get_asgi_application()))


class TestDjangoSyncViewUnderASGI(TestDjangoAsyncView):
    """The sync view, served under ASGI: limit_webhook_bodies answers the unknown tenant."""

    def send_unread(self, tenants: Tenants, tenant: str, headers: Mapping[str, str]) -> tuple[Reply, int]:
        from django.core.asgi import get_asgi_application

        serve(tenants.dispatcher, asynchronous=False)
        call = ASGICall(f"/webhooks/{tenant}/", b"x" * 100, headers)
        return call.run(limit_webhook_bodies(get_asgi_application()))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_included_urls_route_each_tenant_under_one_name(
    monkeypatch: pytest.MonkeyPatch, asynchronous: bool
) -> None:
    tenants = Tenants()
    monkeypatch.setattr(included_urls, "configured_view", lambda: (tenants.dispatcher, asynchronous))
    django_urls.urlpatterns[:] = [
        path("webhooks/", include((included_urls._patterns(), "carecycle_webhooks")))  # pyright: ignore[reportPrivateUsage]
    ]
    clear_url_caches()
    assert reverse("carecycle_webhooks:webhook", kwargs={"tenant": "acme"}) == "/webhooks/acme/"
    body = fixture_bytes("customer.created")
    response = Client().post(
        "/webhooks/globex/",
        data=body,
        content_type="application/json",
        headers=svix_headers(body, secret=OTHER_SECRET),
    )
    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert tenants.tenants == ["globex"]


def test_the_included_urls_of_one_secret_stay_at_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    tenants = Tenants(static=True)
    monkeypatch.setattr(included_urls, "configured_view", lambda: (tenants.dispatcher, False))
    django_urls.urlpatterns[:] = [
        path("webhooks/", include((included_urls._patterns(), "carecycle_webhooks")))  # pyright: ignore[reportPrivateUsage]
    ]
    clear_url_caches()
    assert reverse("carecycle_webhooks:webhook") == "/webhooks/"
    body = fixture_bytes("customer.created")
    response = Client().post(
        "/webhooks/", data=body, content_type="application/json", headers=svix_headers(body)
    )
    assert response.status_code == 200
    assert tenants.tenants == [None]


def test_a_misconfigured_include_raises_at_both_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    def broken() -> Any:
        raise included_urls.Problem("carecycle_webhooks.E003", "no setting", hint="set it")

    monkeypatch.setattr(included_urls, "configured_view", broken)
    routes = [str(pattern.pattern) for pattern in included_urls._patterns()]  # pyright: ignore[reportPrivateUsage]
    assert routes == ["", "<str:tenant>/"]
    patterns = included_urls._patterns()  # pyright: ignore[reportPrivateUsage]
    django_urls.urlpatterns[:] = [path("webhooks/", include((patterns, "carecycle_webhooks")))]
    clear_url_caches()
    client = Client(raise_request_exception=True)
    with pytest.raises(ImproperlyConfigured, match="E003"):
        client.post("/webhooks/acme/", data=b"{}", content_type="application/json")
