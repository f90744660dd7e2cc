"""ROOT_URLCONF of the Django adapter tests: `serve` swaps in the view under test."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.urls import URLPattern, clear_url_caches, path

from carecycle_webhooks.django import webhook_view

if TYPE_CHECKING:
    from carecycle_webhooks import Dispatcher

urlpatterns: list[URLPattern] = []


def serve(dispatcher: Dispatcher) -> None:
    """Route ``/webhooks/`` to a webhook view of ``dispatcher``."""
    urlpatterns[:] = [path("webhooks/", webhook_view(dispatcher))]
    clear_url_caches()
