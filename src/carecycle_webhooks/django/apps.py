"""The Django app of `DjangoIdempotencyStore`: add ``"carecycle_webhooks.django"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["CarecycleWebhooksConfig"]


class CarecycleWebhooksConfig(AppConfig):
    """The app that holds `ProcessedWebhook`, the table of done marks, and its migrations."""

    name = "carecycle_webhooks.django"
    label = "carecycle_webhooks"
