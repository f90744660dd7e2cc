"""The webhook endpoint as a URLconf to include, configured by the ``CARECYCLE_WEBHOOKS`` setting.

::

    # settings.py
    CARECYCLE_WEBHOOKS = {"DISPATCHER": "myproject.webhooks.webhooks"}

    # urls.py
    from django.urls import include, path

    urlpatterns = [path("webhooks/", include("carecycle_webhooks.django.urls"))]

The endpoint is then ``/webhooks/`` (trailing slash included), named
``carecycle_webhooks:webhook`` for ``reverse()``. It is `webhook_view` of the dispatcher
that ``DISPATCHER`` names, the ``async def`` view with ``"ASYNC": True``.

When the dispatcher has a secret resolver (many tenants), the endpoint is each tenant's
``/webhooks/<tenant>/`` instead, under the same name:
``reverse("carecycle_webhooks:webhook", kwargs={"tenant": "acme"})``. The view hands the
tenant to the dispatcher, whose resolver gives that tenant's secret (or ``None``,
answered 404 before the body is read).

The setting is read once, when this URLconf is loaded: ``override_settings(CARECYCLE_WEBHOOKS=...)``
in a test does not change a URLconf that is already imported. A mistake in it does not stop
the rest of the project's URLs: ``manage.py check`` (and ``runserver``, before it starts)
reports it, and every request to the endpoint raises ``ImproperlyConfigured`` with the same
message and id, which Django answers 500 and logs (Svix retries the delivery later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, path

from . import webhook_view
from ._conf import Problem, configured_view

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

__all__ = ["app_name", "urlpatterns"]

app_name = "carecycle_webhooks"


def _misconfigured(problem: Problem) -> list[URLPattern]:
    """A view that raises the problem on every request: the project's other URLs still work."""
    cause = problem.__cause__

    if problem.asynchronous:

        async def async_carecycle_webhook(request: HttpRequest, **_: object) -> HttpResponse:  # noqa: ARG001
            raise ImproperlyConfigured(str(problem)) from cause

        async_carecycle_webhook.csrf_exempt = True  # type: ignore[attr-defined]  # raises, not a 403
        return [path(route, async_carecycle_webhook, name="webhook") for route in _ROUTES]

    def carecycle_webhook(request: HttpRequest, **_: object) -> HttpResponse:  # noqa: ARG001 - a view's signature
        # Django's own exception, so that its log line ends in its name; the cause stays chained.
        raise ImproperlyConfigured(str(problem)) from cause

    carecycle_webhook.csrf_exempt = True  # type: ignore[attr-defined]  # raises, not a 403
    return [path(route, carecycle_webhook, name="webhook") for route in _ROUTES]


def _patterns() -> list[URLPattern]:
    try:
        dispatcher, asynchronous = configured_view()
    except Problem as problem:
        return _misconfigured(problem)
    view = webhook_view(dispatcher, asynchronous=True) if asynchronous else webhook_view(dispatcher)
    # A dispatcher with a secret resolver has one endpoint per tenant, and no other.
    tenants = dispatcher._tenants is not None  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    return [path(_ROUTES[1] if tenants else _ROUTES[0], view, name="webhook")]


# The endpoint of one secret, and that of each tenant of a secret resolver. A broken
# setting routes both to the view that reports it.
_ROUTES = ("", "<str:tenant>/")

urlpatterns: list[URLPattern] = _patterns()
