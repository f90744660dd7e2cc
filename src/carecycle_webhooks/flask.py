"""Flask adapter: receive careCycle webhooks in a Flask application.

::

    from flask import Flask

    from carecycle_webhooks import Dispatcher
    from carecycle_webhooks.flask import webhook_view

    webhooks = Dispatcher("whsec_...")
    app = Flask(__name__)
    app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])

The view reads the raw request body, at most ``dispatcher.max_body_size`` bytes of it,
hands it to `Dispatcher.handle` and turns the answer into a Flask response: the status
codes are the dispatcher's, the same in every adapter.
"""

from __future__ import annotations

try:
    import flask
    from werkzeug.exceptions import RequestEntityTooLarge
except ImportError:
    raise ImportError(
        "carecycle_webhooks.flask needs Flask: pip install 'carecycle-webhooks[flask]'"
    ) from None

from typing import TYPE_CHECKING, Any, cast

from ._adapters import (
    METHOD_NOT_ALLOWED,
    body_too_large,
    check_dispatcher,
    client_disconnected,
    content_type_and_headers,
    read_body,
    reservation_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._dispatch import Dispatcher, WebhookResponse

__all__ = ["webhook_view"]


def _current_request() -> flask.Request:
    # Unwrapped once: every attribute read through Flask's request proxy costs a lookup.
    # _get_current_object() is Werkzeug's documented way to unwrap a LocalProxy.
    proxy: Any = flask.request
    return cast("flask.Request", proxy._get_current_object())  # noqa: SLF001


def _to_flask(response: WebhookResponse) -> flask.Response:
    content_type, headers = content_type_and_headers(response)
    converted = flask.Response(response.body, status=response.status_code, content_type=content_type)
    for name, value in headers:
        converted.headers[name] = value
    return converted


def webhook_view(
    dispatcher: Dispatcher, *, name: str = "carecycle_webhooks"
) -> Callable[..., flask.Response]:
    """A Flask view function that verifies and dispatches careCycle deliveries.

    Register it for ``POST``::

        app.add_url_rule("/webhooks", view_func=webhook_view(webhooks), methods=["POST"])

    The view also says ``methods = ["POST"]`` itself, so ``methods`` may be left out. A
    ``Content-Length`` above ``dispatcher.max_body_size`` is answered 413 before anything
    is read, and no more than ``max_body_size + 1`` bytes are ever read from the stream,
    so a chunked or lying request cannot make the view read more. Flask's own
    ``MAX_CONTENT_LENGTH``, when set lower, still applies and is answered 413 too. A
    delivery that does not fit in ``dispatcher.body_budget`` (the bodies being read at
    once, under a threaded server) is answered 503 with ``Retry-After`` before its body is read.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Its idempotency store must be
            usable synchronously (not a `RedisIdempotencyStore` with an asyncio client).
        name: The view's ``__name__``, which Flask uses as the endpoint name (for
            ``url_for``) when ``add_url_rule`` is given none. Endpoint names are unique
            per application: give each webhook view of one app its own ``name`` (or pass
            ``endpoint=`` to ``add_url_rule``).

    Returns:
        The view function. URL variables of the rule, if any, are accepted and ignored.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store only works under asyncio.
    """
    dispatcher = check_dispatcher(dispatcher, "Flask", synchronous=True)

    def carecycle_webhook(**_url_values: object) -> flask.Response:
        """Receive a careCycle webhook delivery."""
        request = _current_request()
        if request.method != "POST":  # routed for more methods than POST
            response = _to_flask(METHOD_NOT_ALLOWED)
            response.headers["Allow"] = "POST"
            return response
        limit = dispatcher.max_body_size
        reservation = reservation_for(dispatcher)
        try:
            try:
                # content_length is None when absent or chunked.
                body = read_body(
                    request.stream.read, declared=request.content_length, limit=limit, reservation=reservation
                )
            except RequestEntityTooLarge:
                # The application's MAX_CONTENT_LENGTH is lower than our limit.
                return _to_flask(body_too_large(min(limit, request.max_content_length or limit)))
            except Exception as error:  # noqa: BLE001 - the client went away mid-body, or the server failed to read it
                return _to_flask(client_disconnected(error))
            if not isinstance(body, bytes):
                return _to_flask(body)
            return _to_flask(dispatcher.handle(body, request.headers))
        finally:
            reservation.close()

    view = carecycle_webhook
    view.__name__ = view.__qualname__ = name
    view.methods = ("POST",)  # type: ignore[attr-defined]  # read by Flask's add_url_rule
    return view
