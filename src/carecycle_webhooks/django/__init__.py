"""Django adapter: receive careCycle webhooks in a Django project.

With the app and one setting, the endpoint is an ``include()``::

    # settings.py
    INSTALLED_APPS = [..., "carecycle_webhooks.django"]
    CARECYCLE_WEBHOOKS = {"DISPATCHER": "myproject.webhooks.webhooks"}

    # urls.py
    urlpatterns = [path("webhooks/", include("carecycle_webhooks.django.urls"))]

or route the view yourself::

    from carecycle_webhooks.django import webhook_view
    from myproject.webhooks import webhooks  # a carecycle_webhooks.Dispatcher

    urlpatterns = [path("webhooks/", webhook_view(webhooks))]

The view is CSRF-exempt (Svix signs its deliveries; it has no CSRF token) and answers
only ``POST``. It reads the raw request body, at most ``dispatcher.max_body_size`` bytes
of it (10 MiB by default), hands it to `Dispatcher.handle` (or, built with
``asynchronous=True`` for ASGI, awaits `Dispatcher.handle_async`) and turns the answer
into an ``HttpResponse``: the status codes are the dispatcher's, the same in every adapter.

The app registers a system check of ``CARECYCLE_WEBHOOKS`` (ids
``carecycle_webhooks.E001`` to ``E006``, in ``_conf``); `secret_from_settings` reads the
endpoint's secret from that setting or the environment.

`DjangoIdempotencyStore` runs each delivery in one ``transaction.atomic()``, so that the
handlers' ORM writes commit together with its done mark, or not at all. It is also an
installable app (``"carecycle_webhooks.django"`` in ``INSTALLED_APPS``, then ``migrate``);
importing this module needs no configured settings.
"""

from __future__ import annotations

try:
    from django.conf import settings
    from django.db import connections, transaction
    from django.http import HttpRequest, HttpResponse
    from django.http.request import HttpHeaders
    from django.urls import Resolver404, ResolverMatch, resolve
    from django.utils import translation
    from django.views.decorators.csrf import csrf_exempt
except ImportError:
    raise ImportError(
        "carecycle_webhooks.django needs Django: pip install 'carecycle-webhooks[django]'"
    ) from None

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, overload

from carecycle_webhooks._adapters import (
    METHOD_NOT_ALLOWED,
    Reservation,
    check_dispatcher,
    client_disconnected,
    content_type_and_headers,
    path_tenant,
    read_environ_body,
    reservation_for,
    tenant_refused,
    tenant_refused_async,
)
from carecycle_webhooks._asgi import BodyGuard, send_response
from carecycle_webhooks._budget import BodyBudget
from carecycle_webhooks._dispatch import Dispatcher
from carecycle_webhooks._errors import WebhookConfigurationError
from carecycle_webhooks._telemetry import observed_refusal

from ._conf import secret_from_settings
from ._store import DjangoIdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator, Iterable

    from carecycle_webhooks._asgi import AnyASGIApp, ASGIApp, Message, Receive, Scope, Send
    from carecycle_webhooks._responses import WebhookResponse

__all__ = ["DjangoIdempotencyStore", "limit_webhook_bodies", "secret_from_settings", "webhook_view"]

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


def _reservation(request: HttpRequest, dispatcher: Dispatcher) -> Reservation:
    """What the body may take from the budget: nothing more if limit_webhook_bodies took it already."""
    # Under ASGI with limit_webhook_bodies(), that wrapper took this body from the budget.
    budgeted = getattr(request, "scope", {}).get(_BUDGETED) is dispatcher
    return Reservation(_NO_BUDGET) if budgeted else reservation_for(dispatcher)


def _body(request: HttpRequest, dispatcher: Dispatcher, reservation: Reservation) -> bytes | HttpResponse:
    """The request's body, within the dispatcher's limits, or the answer to give instead."""
    # request.read(), not request.body: the latter enforces DATA_UPLOAD_MAX_MEMORY_SIZE.
    body = read_environ_body(request.META, dispatcher, reservation, request.read)
    return body if isinstance(body, bytes) else _to_django(body)


@contextlib.contextmanager
def _received(
    request: HttpRequest, dispatcher: Dispatcher, refused: WebhookResponse | None = None
) -> Generator[bytes | HttpResponse, None, None]:
    """A delivery's body, or the answer to give instead; its budget is held until the view returns.

    ``refused`` is the tenant's early answer (404, 503): given instead of reading the body.
    """
    if request.method != "POST":
        yield _method_not_allowed()
        return
    if refused is not None:
        yield _to_django(refused)
        return
    reservation = _reservation(request, dispatcher)
    try:
        yield _body(request, dispatcher, reservation)
    finally:
        reservation.close()


def _method_not_allowed() -> HttpResponse:
    response = _to_django(METHOD_NOT_ALLOWED)  # the same JSON 405 as the other adapters
    response["Allow"] = "POST"
    return response


@overload
def webhook_view(
    dispatcher: Dispatcher, *, asynchronous: Literal[False] = False
) -> Callable[[HttpRequest], HttpResponse]: ...
@overload
def webhook_view(
    dispatcher: Dispatcher, *, asynchronous: Literal[True]
) -> Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]: ...
@overload
def webhook_view(
    dispatcher: Dispatcher, *, asynchronous: bool
) -> Callable[[HttpRequest], HttpResponse] | Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]: ...
def webhook_view(
    dispatcher: Dispatcher, *, asynchronous: bool = False
) -> Callable[[HttpRequest], HttpResponse] | Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]:
    """A CSRF-exempt, POST-only Django view that verifies and dispatches careCycle deliveries.

    Route it like any view: ``path("webhooks/", webhook_view(webhooks))``, or let
    ``include("carecycle_webhooks.django.urls")`` route the dispatcher that the
    ``CARECYCLE_WEBHOOKS`` setting names. Other methods are answered 405 with an
    ``Allow: POST`` header.

    For many tenants on one endpoint, route it with a ``tenant`` keyword:
    ``path("webhooks/<str:tenant>/", webhook_view(webhooks))``. The view hands it to
    ``handle(..., tenant=...)``; a tenant that the dispatcher's secret resolver does not
    know is answered 404 before the body is read. Other keywords are ignored.

    The body size limit is ``dispatcher.max_body_size``, not Django's
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB by default): the view never touches
    ``request.body`` (which enforces that setting) but reads the request stream itself.
    A ``Content-Length`` above the limit is answered 413 before anything is read, and
    no more than ``max_body_size + 1`` bytes are ever read, so a chunked or lying
    request cannot make the view read more. (A middleware that reads ``request.body``
    or ``request.POST`` before the view still applies Django's limit.)

    By default the view is synchronous and calls `Dispatcher.handle`; under ASGI, Django
    runs it in a worker thread. With ``asynchronous=True`` it is an ``async def`` view
    that awaits `Dispatcher.handle_async`, for a project served under ASGI (uvicorn,
    daphne, hypercorn): async handlers run on the server's event loop, sync handlers in
    worker threads. Django cannot wrap an async view in ``ATOMIC_REQUESTS``, so the async
    view is left out of it for every database (building it reads ``DATABASES``).

    With a `DjangoIdempotencyStore`, the view is left out of ``ATOMIC_REQUESTS`` for the
    store's database: the store's own transaction, one per delivery, must be the
    outermost, so that its commit is known before the answer is.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. For the synchronous view, its
            idempotency store must be usable synchronously (not a `RedisIdempotencyStore`
            with an asyncio client); for the async view, under asyncio.
        asynchronous: Build the ``async def`` view, for ASGI.

    Returns:
        The view.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store cannot serve this kind of view.
    """
    dispatcher = check_dispatcher(dispatcher, "Django", synchronous=not asynchronous)
    if asynchronous:
        return _async_view(dispatcher)

    def carecycle_webhook(request: HttpRequest, **url_values: object) -> HttpResponse:
        """Receive a careCycle webhook delivery."""
        tenant = path_tenant(url_values.get("tenant"))
        refused = tenant_refused(dispatcher, tenant) if request.method == "POST" else None
        with _received(request, dispatcher, refused) as body:
            if not isinstance(body, bytes):
                return body
            if tenant is None:
                return _to_django(dispatcher.handle(body, _Headers(request)))
            return _to_django(dispatcher.handle(body, _Headers(request), tenant=tenant))

    carecycle_webhook.carecycle_dispatcher = dispatcher  # type: ignore[attr-defined]  # for limit_webhook_bodies
    view = csrf_exempt(carecycle_webhook)
    store = dispatcher.idempotency_store
    if isinstance(store, DjangoIdempotencyStore):
        view = transaction.non_atomic_requests(using=store.using)(view)
    return view


def _async_view(dispatcher: Dispatcher) -> Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]:
    """`webhook_view`'s ``async def`` view: the same steps, awaiting `Dispatcher.handle_async`."""

    async def carecycle_webhook(request: HttpRequest, **url_values: object) -> HttpResponse:
        """Receive a careCycle webhook delivery."""
        # Under ASGI, Django has received the whole body (limit_webhook_bodies holds it
        # to the limit, and answers an unknown tenant before) before any view runs:
        # reading it here does not wait for the client.
        tenant = path_tenant(url_values.get("tenant"))
        refused = await tenant_refused_async(dispatcher, tenant) if request.method == "POST" else None
        with _received(request, dispatcher, refused) as body:
            if not isinstance(body, bytes):
                return body
            if tenant is None:
                return _to_django(await dispatcher.handle_async(body, _Headers(request)))
            return _to_django(await dispatcher.handle_async(body, _Headers(request), tenant=tenant))

    # The attribute, not the decorator: before Django 5.0, csrf_exempt wrapped an async
    # view in a sync one.
    carecycle_webhook.carecycle_dispatcher = dispatcher  # type: ignore[attr-defined]  # for limit_webhook_bodies
    carecycle_webhook.csrf_exempt = True  # type: ignore[attr-defined]  # what csrf_exempt sets
    # Django refuses an async view under ATOMIC_REQUESTS: it cannot run it in one transaction.
    # non_atomic_requests only marks the function (it returns the same one), async or not.
    view = carecycle_webhook
    for alias in connections:
        view = transaction.non_atomic_requests(using=alias)(view)
    return view


def _resolve(path_info: str) -> ResolverMatch | None:
    """Django's match for ``path_info``, or ``None``.

    With ``i18n_patterns``, LocaleMiddleware activates the URL's language before Django
    resolves it: when the active language finds nothing, the URL's language is tried.
    """
    try:
        return resolve(path_info)
    except Resolver404:
        language = translation.get_language_from_path(path_info) if settings.USE_I18N else None
        if not language:
            return None
    try:
        with translation.override(language):
            return resolve(path_info)
    except Resolver404:
        return None


def _dispatcher_for(scope: Scope) -> tuple[Dispatcher, str | None] | None:
    """The dispatcher of the webhook_view that Django routes this request to, and the tenant, if any."""
    from django.core.handlers.asgi import get_script_prefix

    try:
        path: str = scope["path"]
        match = _resolve(path.removeprefix(get_script_prefix(scope)))
    except Exception:  # noqa: BLE001 - a broken URLconf: Django itself reports it
        return None
    if match is None:
        return None
    dispatcher = getattr(match.func, "carecycle_dispatcher", None)
    if not isinstance(dispatcher, Dispatcher):
        return None
    return dispatcher, path_tenant(match.kwargs.get("tenant"))


async def _tenant_refused(scope: Scope, dispatcher: Dispatcher, tenant: str | None) -> WebhookResponse | None:
    """The view's answer to a delivery for an unknown tenant (404), given before Django reads its body."""
    return await tenant_refused_async(dispatcher, tenant) if scope.get("method") == "POST" else None


async def _answered(application: AnyASGIApp, scope: Scope, guard: BodyGuard, send: Send) -> bool:
    """Run Django with the guard's ``receive``: whether it began an answer."""
    started: list[bool] = []

    async def watched(message: Message) -> None:
        if message.get("type") == "http.response.start":
            started.append(True)
        await send(message)

    await application(scope, guard.receive, watched)
    return bool(started)


async def _refuse(send: Send, response: WebhookResponse, started: float, *, delivery: bool) -> None:
    """Send ``response``; a delivery's is recorded, for OpenTelemetry, as `webhook_view`'s are."""
    if delivery:
        observed_refusal(response, started)
    await send_response(send, response)


def limit_webhook_bodies(application: AnyASGIApp, *, max_other_body_size: int | None = None) -> ASGIApp:
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
      fit in what is left of the body budget 503 with ``Retry-After``, without reading
      the body.
    - Every piece of the body is counted as it arrives, whatever the ``Content-Length``
      said: 413 as soon as it passes ``max_body_size``, 503 as soon as it does not fit in
      the budget. Django has then received at most the limit.
    - A body larger than 64 KiB, or chunked, must arrive within 20 seconds (408), and a
      smaller one within 20 seconds of its first piece: Svix gives up after 15, and a slow
      client would hold its share of the budget.
    - A ``tenant`` that the dispatcher's secret resolver does not know is answered 404
      (503 when the resolver fails) before anything is received.

    The request is routed as Django routes it (``i18n_patterns`` included), with the
    project's ``ROOT_URLCONF``: a ``request.urlconf`` set by a middleware is not seen.
    Other requests go to Django untouched, unless ``max_other_body_size`` is given. WSGI
    servers (gunicorn, uWSGI, mod_wsgi) need none of this: there, the view reads the
    body itself.

    Args:
        application: Django's ASGI application (``get_asgi_application()``), or any ASGI
            application in front of the same URLconf.
        max_other_body_size: If given, the largest body of any other request, in bytes:
            larger ones are answered 413 in the same way, before Django spools them.

    Returns:
        The wrapped ASGI application.

    Raises:
        WebhookConfigurationError: ``max_other_body_size`` is not a positive number.
    """
    other: object = max_other_body_size
    if other is not None and (not isinstance(other, int) or isinstance(other, bool) or other < 1):
        raise WebhookConfigurationError("max_other_body_size must be a positive number of bytes, or None")

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await application(scope, receive, send)
            return
        routed = _dispatcher_for(scope)
        # Another method to a webhook URL is held to the same limits, but it is not a
        # delivery: the view answers it 405 (and the project's middleware sees it first).
        delivery = routed is not None and scope.get("method") == "POST"
        began = time.perf_counter()
        refused: WebhookResponse | None = None
        if routed is not None:
            dispatcher = routed[0]
            # An unknown tenant is answered before Django receives anything of the body.
            refused = await _tenant_refused(scope, *routed)
            limit, reservation = dispatcher.max_body_size, reservation_for(dispatcher)
            scope = {**scope, _BUDGETED: dispatcher}
        elif max_other_body_size is not None:
            limit, reservation = max_other_body_size, Reservation(_NO_BUDGET)
        else:
            await application(scope, receive, send)
            return
        try:
            guard = BodyGuard(scope, receive, limit=limit, reservation=reservation)
            early = guard.refuse_early() if refused is None else refused
            if early is not None:
                # A refused tenant is recorded already; other requests than deliveries are not.
                await _refuse(send, early, began, delivery=delivery and refused is None)
                return
            answered = await _answered(application, scope, guard, send)
            # Refused, or the client went away mid-body: Django gave up on reading (it saw
            # a disconnect) and answered nothing.
            cut = guard.refused or (client_disconnected("http.disconnect") if guard.disconnected else None)
            if cut is not None and not answered:
                await _refuse(send, cut, began, delivery=delivery)
        finally:
            reservation.close()

    return guarded
