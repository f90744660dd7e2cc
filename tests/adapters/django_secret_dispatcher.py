"""A project's webhooks module whose dispatcher reads its secret from Django's settings.

Imported afresh by each test that names it (the tests drop it from ``sys.modules``).
"""

from __future__ import annotations

from carecycle_webhooks import Dispatcher
from carecycle_webhooks.django import secret_from_settings

webhooks = Dispatcher(secret_from_settings())
