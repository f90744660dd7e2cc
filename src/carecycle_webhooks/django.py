"""Django adapter: receive careCycle webhooks in a Django project.

::

    # urls.py
    from django.urls import path

    from carecycle_webhooks.django import webhook_view
    from myproject.webhooks import webhooks  # a carecycle_webhooks.Dispatcher

    urlpatterns = [path("webhooks/", webhook_view(webhooks))]

The view is CSRF-exempt (Svix signs its deliveries; it has no CSRF token) and answers
only ``POST``. It reads the raw request body, at most ``dispatcher.max_body_size`` bytes
of it (10 MiB by default), hands it to `Dispatcher.handle` and turns the answer into an
``HttpResponse``: the status codes are the dispatcher's, the same in every adapter.
"""

from __future__ import annotations

try:
    from django.http import HttpRequest, HttpResponse
    from django.http.request import HttpHeaders
    from django.views.decorators.csrf import csrf_exempt
except ImportError:
    raise ImportError(
        "carecycle_webhooks.django needs Django: pip install 'carecycle-webhooks[django]'"
    ) from None

from typing import TYPE_CHECKING

from ._adapters import (
    METHOD_NOT_ALLOWED,
    body_too_large,
    check_dispatcher,
    content_type_and_headers,
    declared_length,
    read_at_most,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._dispatch import Dispatcher, WebhookResponse

__all__ = ["webhook_view"]


def _to_django(response: WebhookResponse) -> HttpResponse:
    content_type, headers = content_type_and_headers(response)
    converted = HttpResponse(response.body, status=response.status_code, content_type=content_type)
    for name, value in headers:
        converted[name] = value
    return converted


class _Headers:
    """The request's headers for the verifier, without building ``request.headers``.

    Django builds ``HttpHeaders`` from every ``HTTP_*`` entry of ``request.META`` on first
    use. The verifier reads our few headers straight from ``environ`` (META has the WSGI
    environ's names under WSGI and ASGI alike) and only iterates ``items()`` when something
    is unusual, to say what: both read the same META, as it is now.
    """

    __slots__ = ("environ",)

    def __init__(self, request: HttpRequest) -> None:
        self.environ = request.META

    def items(self) -> Iterable[tuple[str, str]]:
        return HttpHeaders(self.environ).items()


def webhook_view(dispatcher: Dispatcher) -> Callable[[HttpRequest], HttpResponse]:
    """A CSRF-exempt, POST-only Django view that verifies and dispatches careCycle deliveries.

    Route it like any view: ``path("webhooks/", webhook_view(webhooks))``. Other methods
    are answered 405 with an ``Allow: POST`` header.

    The body size limit is ``dispatcher.max_body_size``, not Django's
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB by default): the view never touches
    ``request.body`` (which enforces that setting) but reads the request stream itself.
    A ``Content-Length`` above the limit is answered 413 before anything is read, and
    no more than ``max_body_size + 1`` bytes are ever read, so a chunked or lying
    request cannot make the view read more. (A middleware that reads ``request.body``
    or ``request.POST`` before the view still applies Django's limit.)

    The view is synchronous; under ASGI Django runs it in a worker thread.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Its idempotency store must be
            usable synchronously (not a `RedisIdempotencyStore` with an asyncio client).

    Returns:
        The view.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store only works under asyncio.
    """
    dispatcher = check_dispatcher(dispatcher, "Django", synchronous=True)

    def carecycle_webhook(request: HttpRequest) -> HttpResponse:
        """Receive a careCycle webhook delivery."""
        if request.method != "POST":  # the same JSON 405 as the other adapters
            response = _to_django(METHOD_NOT_ALLOWED)
            response["Allow"] = "POST"
            return response
        limit = dispatcher.max_body_size
        declared = declared_length(request.META.get("CONTENT_LENGTH"))
        if declared is not None and declared > limit:
            return _to_django(body_too_large(limit))
        # request.read(), not request.body: the latter enforces DATA_UPLOAD_MAX_MEMORY_SIZE.
        # A declared length bounds Django's stream: read exactly that. Otherwise one byte
        # past the limit is enough for the dispatcher to answer 413.
        body = read_at_most(request.read, limit + 1 if declared is None else declared)
        return _to_django(dispatcher.handle(body, _Headers(request)))

    return csrf_exempt(carecycle_webhook)
