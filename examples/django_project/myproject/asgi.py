"""For uvicorn, daphne: ``uvicorn myproject.asgi:application``.

Set WEBHOOKS_ASYNC=1 too, so that the endpoint is the async view.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from carecycle_webhooks.django import limit_webhook_bodies

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")

# Webhook bodies are held to their limit before Django spools them.
application = limit_webhook_bodies(get_asgi_application())
