"""Django app for ``bench_http.py``: ``/bare`` (svix + json.loads), ``/ours`` (webhook_view), ``/health``.

Served by gunicorn with one sync worker: ``gunicorn --chdir benchmarks/http_apps django_bench:application``.
Settings as in ``examples/django_app.py`` (the CSRF middleware; both webhook views are exempt).

Django tries URL patterns one after the other (a regular expression each), so in one
URLconf the later endpoints would pay for matching the earlier ones. Each endpoint has a
URLconf of its own, with that one pattern, chosen per request by exact path (a
dictionary look-up, the same for every endpoint).
"""

from __future__ import annotations

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=[f"{__name__}.one_urlconf_per_endpoint", "django.middleware.csrf.CsrfViewMiddleware"],
)

import json  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from _bench_common import BARE_RESPONSE, svix_webhook, sync_dispatcher  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402
from svix.webhooks import WebhookVerificationError  # noqa: E402

from carecycle_webhooks.django import webhook_view  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable


@csrf_exempt
@require_POST
def bare(request: HttpRequest) -> HttpResponse:
    body = request.body
    try:
        svix_webhook.verify(body, request.headers)  # type: ignore[arg-type]  # HttpHeaders
    except WebhookVerificationError:
        return HttpResponse(b'{"error":"invalid_signature"}', status=400, content_type="application/json")
    json.loads(body)
    return HttpResponse(BARE_RESPONSE, status=200, content_type="application/json")


def health(_request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _urlconf(route: str, view: Callable[[HttpRequest], HttpResponse]) -> str:
    """A URLconf module holding only ``route``, registered under a name of its own."""
    name = f"{__name__}_{route.replace('-', '_')}"
    urlconf = types.ModuleType(name)
    urlconf.urlpatterns = [path(route, view)]  # type: ignore[attr-defined]
    sys.modules[name] = urlconf
    return name


_URLCONFS = {
    "/bare": _urlconf("bare", bare),
    # The A/A control: the same endpoint twice shows the measurement's spread.
    "/bare-again": _urlconf("bare-again", bare),
    "/ours": _urlconf("ours", webhook_view(sync_dispatcher())),
}
urlpatterns = [path("health", health)]  # ROOT_URLCONF: everything else


def one_urlconf_per_endpoint(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        urlconf = _URLCONFS.get(request.path_info)
        if urlconf is not None:
            request.urlconf = urlconf
        return get_response(request)

    return middleware


application = get_wsgi_application()
