"""A plain WSGI application: receive careCycle webhooks under any WSGI framework or server.

::

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.wsgi import webhook_app

    webhooks = Dispatcher()  # the secret from CARECYCLE_WEBHOOK_SECRET
    application = webhook_app(webhooks)  # gunicorn module:application, or mount it

Mount it where your framework mounts WSGI applications: Pyramid's ``wsgiapp2`` view,
Bottle's ``app.mount()``, Werkzeug's ``DispatcherMiddleware`` in front of Falcon or any
other application. It needs no framework, so it has no extra: only PEP 3333.

It answers every path it is given: the path is the mount's business. Its status codes
are the dispatcher's, the same in every adapter.

For many tenants on one endpoint (a dispatcher with a secret resolver), the tenant key is
the ``tenant`` argument of the router in front, as the ``wsgiorg.routing_args`` convention
passes it (``environ["wsgiorg.routing_args"] = ((), {"tenant": "acme"})``); without one,
the last segment of the request's path (``SCRIPT_NAME`` + ``PATH_INFO``:
``/webhooks/acme`` -> ``acme``), which suits a mount at ``/webhooks``.
"""

from __future__ import annotations

import http
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._adapters import (
    check_dispatcher,
    content_type_and_headers,
    last_segment,
    path_tenant,
    read_environ_body,
    reservation_for,
    tenant_refused,
)
from ._plain import POST_ONLY

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._dispatch import Dispatcher
    from ._responses import WebhookResponse

__all__ = ["StartResponse", "webhook_app"]


class StartResponse(Protocol):
    """The ``start_response`` callable that a WSGI server passes to the application (PEP 3333)."""

    def __call__(self, status: str, headers: list[tuple[str, str]], /) -> object:  # pragma: no cover
        """Begin the response with a status line and headers."""
        ...


class _EnvironHeaders:
    """A WSGI environ's headers for the verifier, read as Werkzeug's ``EnvironHeaders`` are.

    The verifier looks our few ``HTTP_*`` names up in ``environ`` directly; ``items()``
    lists every header, for the general reading that says what is wrong.
    """

    __slots__ = ("environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def items(self) -> Iterable[tuple[str, str]]:
        return [
            (key[5:].replace("_", "-").lower(), value)
            for key, value in self.environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        ]


def _status_line(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:  # a status of the application's own (a Dispatcher subclass)
        return f"{code} Unknown"


def _start(start_response: StartResponse, response: WebhookResponse) -> list[bytes]:
    content_type, others = content_type_and_headers(response)
    headers = [("Content-Length", str(len(response.body)))]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    headers.extend(others)
    start_response(_status_line(response.status_code), headers)
    return [response.body]


def _tenant(environ: dict[str, Any], dispatcher: Dispatcher) -> str | None:
    """The router's ``tenant`` (``wsgiorg.routing_args``); else, with a resolver, the path's last segment."""
    routing: object = environ.get("wsgiorg.routing_args")
    if isinstance(routing, Sequence) and len(cast("Sequence[object]", routing)) == 2:  # (positional, named)
        named = cast("Sequence[object]", routing)[1]
        if isinstance(named, Mapping) and "tenant" in named:
            return path_tenant(cast("Mapping[str, object]", named)["tenant"])
    if dispatcher._tenants is None:  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - one endpoint, any path
        return None
    path = f"{environ.get('SCRIPT_NAME') or ''}{environ.get('PATH_INFO') or ''}"
    return last_segment(path)


def webhook_app(dispatcher: Dispatcher) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI application (PEP 3333) that verifies and dispatches careCycle deliveries.

    ``POST`` requests to any path it is mounted at are deliveries; other methods are
    answered 405 with ``Allow: POST``. The raw body is read from ``wsgi.input`` and given
    to `Dispatcher.handle` (which also runs ``async def`` handlers).

    The same limits as the Flask and Django adapters: a ``CONTENT_LENGTH`` above
    ``dispatcher.max_body_size`` is answered 413 before anything is read, and no more
    than ``max_body_size + 1`` bytes are ever read. A body without a length is read to
    its end when the server says it ends (``wsgi.input_terminated``, as gunicorn and
    Werkzeug's server set for chunked bodies), and taken as empty otherwise (PEP 3333
    forbids reading past ``CONTENT_LENGTH``). The bodies being read at once, by the
    server's threads, share ``dispatcher.body_budget``: a delivery that does not fit is
    answered 503 with ``Retry-After`` before its body is read.

    With a secret resolver, each delivery's tenant is the router's ``tenant``
    (``wsgiorg.routing_args``), or else the last segment of the path; one that the
    resolver does not know is answered 404 before the body is read. Without a resolver,
    a delivery with a ``tenant`` routing argument is answered 404, with a warning in the log.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Its idempotency store must be
            usable synchronously (not a `RedisIdempotencyStore` with an asyncio client).

    Returns:
        The WSGI application.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store only works under asyncio.
    """
    dispatcher = check_dispatcher(
        dispatcher, "WSGI", synchronous=True, built="applications built by webhook_app()"
    )

    def carecycle_webhook_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _start(start_response, POST_ONLY)
        tenant = _tenant(environ, dispatcher)
        refused = tenant_refused(dispatcher, tenant)
        if refused is not None:  # an unknown tenant: its body is not read
            return _start(start_response, refused)
        reservation = reservation_for(dispatcher)
        try:
            body = read_environ_body(environ, dispatcher, reservation)
            if not isinstance(body, bytes):
                return _start(start_response, body)
            headers = _EnvironHeaders(environ)
            if tenant is None:
                return _start(start_response, dispatcher.handle(body, headers))
            return _start(start_response, dispatcher.handle(body, headers, tenant=tenant))
        finally:
            reservation.close()

    return carecycle_webhook_app
