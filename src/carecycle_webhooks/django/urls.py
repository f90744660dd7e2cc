"""The webhook endpoint as a URLconf to include, configured by the ``CARECYCLE_WEBHOOKS`` setting.

::

    # settings.py
    CARECYCLE_WEBHOOKS = {"DISPATCHER": "myproject.webhooks.webhooks"}

    # urls.py
    from django.urls import include, path

    urlpatterns = [path("webhooks/", include("carecycle_webhooks.django.urls"))]

The endpoint is then ``/webhooks/`` (trailing slash included), named
``carecycle_webhooks:webhook`` for ``reverse()``. It is `webhook_view` of the dispatcher
that ``DISPATCHER`` names, the ``async def`` view with ``"ASYNC": True``. A mistake in the
setting raises ``ImproperlyConfigured`` when the URLconf is loaded, with the message and id
that ``manage.py check`` reports.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from . import webhook_view
from ._conf import configured_view

__all__ = ["app_name", "urlpatterns"]

app_name = "carecycle_webhooks"

_dispatcher, _asynchronous = configured_view()

urlpatterns: list[URLPattern] = [
    path("", webhook_view(_dispatcher, asynchronous=_asynchronous), name="webhook")
]
