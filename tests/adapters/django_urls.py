"""ROOT_URLCONF of the Django adapter tests: `serve` swaps in the view under test."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf.urls.i18n import i18n_patterns
from django.urls import URLPattern, URLResolver, clear_url_caches, path

from carecycle_webhooks.django import webhook_view

if TYPE_CHECKING:
    from carecycle_webhooks import Dispatcher

urlpatterns: list[URLPattern | URLResolver] = []


def serve(dispatcher: Dispatcher, *, i18n: bool = False) -> None:
    """Route ``/webhooks/`` (under a language prefix, with ``i18n``) to a webhook view of ``dispatcher``."""
    routes = [path("webhooks/", webhook_view(dispatcher))]
    urlpatterns[:] = list(i18n_patterns(*routes)) if i18n else routes
    clear_url_caches()
