"""ROOT_URLCONF of the Django adapter tests: `serve` swaps in the view under test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf.urls.i18n import i18n_patterns
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, clear_url_caches, path
from django.views.decorators.csrf import csrf_exempt

from carecycle_webhooks.django import webhook_view

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from carecycle_webhooks import Dispatcher

urlpatterns: list[URLPattern | URLResolver] = []


def serve(dispatcher: Dispatcher, *, i18n: bool = False) -> None:
    """Route ``/webhooks/`` (under a language prefix, with ``i18n``) to a webhook view of ``dispatcher``."""
    routes = [path("webhooks/", webhook_view(dispatcher))]
    urlpatterns[:] = list(i18n_patterns(*routes)) if i18n else routes
    clear_url_caches()


def async_view(dispatcher: Dispatcher) -> Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]:
    """An ``async def`` view of one's own that awaits `Dispatcher.handle_async` (served under ASGI)."""

    async def receive(request: HttpRequest) -> HttpResponse:
        answer = await dispatcher.handle_async(request.body, request.headers)
        return HttpResponse(answer.body, status=answer.status_code, content_type="application/json")

    return csrf_exempt(receive)


def serve_async(dispatcher: Dispatcher) -> None:
    """Route ``/webhooks/`` to `async_view` of ``dispatcher``."""
    urlpatterns[:] = [path("webhooks/", async_view(dispatcher))]
    clear_url_caches()
