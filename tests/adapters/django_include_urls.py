"""A project's URLconf that includes ``carecycle_webhooks.django.urls`` under ``webhooks/``."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("webhooks/", include("carecycle_webhooks.django.urls"))]
