"""For uvicorn, daphne, hypercorn: ``uvicorn myproject.asgi:application`` (with ``WEBHOOKS_ASYNC=1``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from carecycle_webhooks.django import limit_webhook_bodies

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")

# Webhook bodies are held to their limit as they arrive, before Django spools them.
application = limit_webhook_bodies(get_asgi_application())
