"""The project's URLconf: the endpoint is /webhooks/, with its slash."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("webhooks/", include("carecycle_webhooks.django.urls")),
]
