"""The project's URLconf: the webhook endpoint is ``/webhooks/``, trailing slash included."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("webhooks/", include("carecycle_webhooks.django.urls")),
]
