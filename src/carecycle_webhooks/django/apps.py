"""The Django app of the store's table and the settings check: ``"carecycle_webhooks.django"``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["CarecycleWebhooksConfig"]


class CarecycleWebhooksConfig(AppConfig):
    """The app that holds `ProcessedWebhook`, the table of done marks, and checks ``CARECYCLE_WEBHOOKS``."""

    name = "carecycle_webhooks.django"
    label = "carecycle_webhooks"

    def ready(self) -> None:
        """Register the system check of the ``CARECYCLE_WEBHOOKS`` setting."""
        from ._conf import check_settings

        checks.register(check_settings, "carecycle_webhooks")
