"""A plain ASGI application: receive careCycle webhooks under any ASGI framework or server.

::

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.asgi import webhook_app

    webhooks = Dispatcher()  # the secret from CARECYCLE_WEBHOOK_SECRET
    app = webhook_app(webhooks)  # uvicorn module:app, or mount it under a path

Route or mount it where your framework takes ASGI applications: Starlette's
``Route("/webhooks", app)`` (the application is an object, which Starlette serves as
ASGI) or ``Mount``, Litestar's ``asgi("/webhooks", is_mount=True)(app)``, or serve it
alone. It needs no framework, so it has no extra: only the ASGI 3 interface (a
coroutine function of ``scope``, ``receive`` and ``send``).

It answers every path it is given: the path is the mount's business. Its status codes
are the dispatcher's, the same in every adapter.

For many tenants on one endpoint (a dispatcher with a secret resolver), the tenant key is
the ``tenant`` path parameter of the router in front (``scope["path_params"]``, which
Starlette's and Litestar's routers set: ``Route("/webhooks/{tenant}", app)``); without one,
the last segment of the request's path (``/webhooks/acme`` -> ``acme``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, cast

from ._adapters import (
    check_dispatcher,
    declared_length,
    last_segment,
    path_tenant,
    reservation_for,
    tenant_refused_async,
)
from ._asgi import header, receive_body, send_response
from ._plain import POST_ONLY
from ._responses import CLIENT_DISCONNECTED

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._asgi import ASGIApp, Receive, Scope, Send
    from ._dispatch import Dispatcher

__all__ = ["webhook_app"]


class _ScopeHeaders:
    """An ASGI scope's headers for the verifier, read as Starlette's ``Headers`` are.

    ``raw`` is the list of ``(name, value)`` byte pairs that the verifier reads directly;
    ``items()`` decodes them, for the general reading that says what is wrong.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def items(self) -> Iterable[tuple[str, str]]:
        return [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in self.raw]


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to start or stop: acknowledge both, so that a server waiting for them goes on.
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def webhook_app(dispatcher: Dispatcher) -> ASGIApp:
    """An ASGI 3 application that verifies and dispatches careCycle deliveries.

    ``POST`` requests to any path it is mounted at are deliveries; other methods are
    answered 405 with ``Allow: POST``. The raw body is received as ASGI ``http.request``
    messages and given to `Dispatcher.handle_async`, so async handlers run on the event
    loop and sync handlers in worker threads.

    The same limits as the FastAPI adapter: a ``Content-Length`` above
    ``dispatcher.max_body_size`` is answered 413 before anything is received, and every
    piece is counted as it arrives (413 as soon as the body passes the limit, chunked
    bodies included). The bodies being received at once share ``dispatcher.body_budget``:
    a delivery that does not fit is answered 503 with ``Retry-After``. A large or chunked
    body must arrive within 20 seconds (408), a small one within 20 seconds of its first
    piece. A client that goes away mid-body ends the request quietly (one INFO line).

    With a secret resolver, each delivery's tenant is the router's ``tenant`` path
    parameter, or else the last segment of the path; one that the resolver does not know
    is answered 404 before the body is received. Without a resolver, a delivery with a
    ``tenant`` path parameter is answered 404, with a warning in the log.

    The ``lifespan`` scope is acknowledged (there is nothing to start), and a WebSocket
    is refused (closed before it is accepted, which servers answer 403).

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Any idempotency store works,
            including a `RedisIdempotencyStore` with an asyncio client.

    Returns:
        The ASGI application.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store only works synchronously.
    """
    return _WebhookApp(
        check_dispatcher(dispatcher, "ASGI", synchronous=False, built="applications built by webhook_app()")
    )


def _tenant(scope: Scope, dispatcher: Dispatcher) -> str | None:
    """The router's ``tenant`` path parameter; else, with a secret resolver, the path's last segment."""
    params = scope.get("path_params")
    if isinstance(params, dict) and "tenant" in params:
        return path_tenant(cast("dict[str, object]", params)["tenant"])
    if dispatcher._tenants is None:  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - one endpoint, any path
        return None
    path = scope.get("path")
    return last_segment(path) if isinstance(path, str) else None


class _WebhookApp:
    """The application: an object, not a function, so that Starlette's ``Route`` serves it as ASGI."""

    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def __repr__(self) -> str:
        return f"<carecycle_webhooks.asgi.webhook_app({self._dispatcher!r})>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            # The ASGI specification asks applications to raise on a scope they do not know.
            raise ValueError(f"carecycle_webhooks.asgi.webhook_app() serves HTTP, not {kind!r}")
        if scope.get("method") != "POST":
            await send_response(send, POST_ONLY)
            return
        dispatcher = self._dispatcher
        tenant = _tenant(scope, dispatcher)
        refused = await tenant_refused_async(dispatcher, tenant)
        if refused is not None:  # an unknown tenant: its body is not received
            await send_response(send, refused)
            return
        raw: Iterable[tuple[bytes, bytes]] = scope.get("headers") or []
        # A list as the verifier reads it; ASGI allows any iterable of pairs.
        headers = _ScopeHeaders(cast("list[tuple[bytes, bytes]]", raw) if type(raw) is list else list(raw))
        reservation = reservation_for(dispatcher)
        try:
            body = await receive_body(
                receive,
                declared=declared_length(header(scope, b"content-length")),
                limit=dispatcher.max_body_size,
                reservation=reservation,
            )
            if isinstance(body, bytes):
                response = await (
                    dispatcher.handle_async(body, headers)
                    if tenant is None
                    else dispatcher.handle_async(body, headers, tenant=tenant)
                )
            elif body is CLIENT_DISCONNECTED:
                # Nobody reads this answer, and a server may raise OSError for a closed
                # connection (ASGI 2.4): that is no error of ours.
                with contextlib.suppress(OSError):
                    await send_response(send, body)
                return
            else:
                response = body
        finally:
            reservation.close()
        await send_response(send, response)
