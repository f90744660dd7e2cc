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

import sys
from typing import TYPE_CHECKING

from ._adapters import (
    METHOD_NOT_ALLOWED,
    Reservation,
    check_dispatcher,
    client_disconnected,
    content_type_and_headers,
    declared_length,
    read_body,
    reservation_for,
)
from ._asgi import BodyGuard, send_response
from ._budget import BodyBudget
from ._dispatch import Dispatcher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._asgi import AnyASGIApp, ASGIApp, Receive, Scope, Send
    from ._responses import WebhookResponse

__all__ = ["limit_webhook_bodies", "webhook_view"]

# The scope key by which limit_webhook_bodies tells the view that it budgeted the body.
_BUDGETED = "carecycle_webhooks.budgeted"
_NO_BUDGET = BodyBudget(sys.maxsize)


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
        meta = request.META
        declared = declared_length(meta.get("CONTENT_LENGTH") or None)
        # request.read(), not request.body: the latter enforces DATA_UPLOAD_MAX_MEMORY_SIZE.
        read = request.read
        if declared is None and meta.get("wsgi.input_terminated"):
            # A chunked body under a WSGI server that de-chunks it (gunicorn): Django's
            # request stream reads nothing without a Content-Length, the server's does.
            read = meta["wsgi.input"].read
        # Under ASGI with limit_webhook_bodies(), that wrapper took this body from the budget.
        budgeted = getattr(request, "scope", {}).get(_BUDGETED) is dispatcher
        reservation = Reservation(_NO_BUDGET) if budgeted else reservation_for(dispatcher)
        try:
            try:
                body = read_body(
                    read, declared=declared, limit=dispatcher.max_body_size, reservation=reservation
                )
            except Exception as error:  # noqa: BLE001 - the client went away mid-body, or the server failed to read it
                return _to_django(client_disconnected(error))
            if not isinstance(body, bytes):
                return _to_django(body)
            return _to_django(dispatcher.handle(body, _Headers(request)))
        finally:
            reservation.close()

    carecycle_webhook.carecycle_dispatcher = dispatcher  # type: ignore[attr-defined]  # for limit_webhook_bodies
    return csrf_exempt(carecycle_webhook)


def _dispatcher_for(scope: Scope) -> Dispatcher | None:
    """The dispatcher of the webhook_view that Django routes this request to, if any."""
    from django.core.handlers.asgi import get_script_prefix
    from django.urls import Resolver404, resolve

    try:
        path: str = scope["path"]
        match = resolve(path.removeprefix(get_script_prefix(scope)))
    except Resolver404:
        return None
    except Exception:  # noqa: BLE001 - a broken URLconf: Django itself reports it
        return None
    dispatcher = getattr(match.func, "carecycle_dispatcher", None)
    return dispatcher if isinstance(dispatcher, Dispatcher) else None


def limit_webhook_bodies(application: AnyASGIApp) -> ASGIApp:
    """Wrap Django's ASGI application so that webhook bodies are held to their limits as they arrive.

    Under ASGI (uvicorn, daphne, hypercorn), Django reads each request's whole body,
    spooling it to a temporary file, before any view runs: a 1 GiB body to the webhook
    URL would be written to disk before `webhook_view` could answer 413. Wrapped, a
    request that Django routes to a `webhook_view` is checked first, with that view's
    dispatcher's limits::

        # asgi.py
        from django.core.asgi import get_asgi_application

        from carecycle_webhooks.django import limit_webhook_bodies

        application = limit_webhook_bodies(get_asgi_application())

    - A ``Content-Length`` above ``max_body_size`` is answered 413, and one that does not
      fit in ``body_budget`` 503 with ``Retry-After``, without reading the body.
    - A body without a ``Content-Length`` (chunked) is counted as it arrives: 413 as soon
      as it passes ``max_body_size``, 503 as soon as it does not fit in the budget. Django
      has then received at most the limit.

    Other requests go to Django untouched. WSGI servers (gunicorn, uWSGI, mod_wsgi) need
    none of this: there, the view reads the body itself.

    Args:
        application: Django's ASGI application (``get_asgi_application()``), or any ASGI
            application in front of the same URLconf.

    Returns:
        The wrapped ASGI application.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        dispatcher = _dispatcher_for(scope) if scope.get("type") == "http" else None
        if dispatcher is None:
            await application(scope, receive, send)
            return
        reservation = reservation_for(dispatcher)
        try:
            guard = BodyGuard(scope, receive, limit=dispatcher.max_body_size, reservation=reservation)
            early = guard.refuse_early()
            if early is not None:
                await send_response(send, early)
                return
            await application({**scope, _BUDGETED: dispatcher}, guard.receive, send)
            if guard.refused is not None:
                # Django gave up on reading (it saw a disconnect) and answered nothing.
                await send_response(send, guard.refused)
        finally:
            reservation.close()

    return guarded
