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
that ``manage.py check`` reports: a server never starts with an endpoint that cannot work.
The setting is read then, once: ``override_settings(CARECYCLE_WEBHOOKS=...)`` in a test does
not change a URLconf that is already imported.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, path

from . import webhook_view
from ._conf import Problem, configured_view

__all__ = ["app_name", "urlpatterns"]

app_name = "carecycle_webhooks"

try:
    _dispatcher, _asynchronous = configured_view()
except Problem as problem:
    # Django's own exception, so that the traceback ends in its name; the cause stays chained.
    raise ImproperlyConfigured(str(problem)) from problem.__cause__

urlpatterns: list[URLPattern] = [
    path("", webhook_view(_dispatcher, asynchronous=_asynchronous), name="webhook")
]
