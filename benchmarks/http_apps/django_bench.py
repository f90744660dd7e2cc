"""Django app for ``bench_http.py``: ``/bare`` (svix + json.loads), ``/ours`` (webhook_view), ``/health``.

Served by gunicorn with one sync worker: ``gunicorn --chdir benchmarks/http_apps django_bench:application``.
Settings as in ``examples/django_app.py`` (the CSRF middleware; both webhook views are exempt).
"""

from __future__ import annotations

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
)

import json  # noqa: E402

from _bench_common import BARE_RESPONSE, svix_webhook, sync_dispatcher  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402
from svix.webhooks import WebhookVerificationError  # noqa: E402

from carecycle_webhooks.django import webhook_view  # noqa: E402


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


urlpatterns = [
    path("bare", bare),
    path("bare-again", bare),  # the A/A control: the same endpoint twice shows the measurement's spread
    path("ours", webhook_view(sync_dispatcher())),
    path("health", health),
]

application = get_wsgi_application()
