"""Flask adapter: receive careCycle webhooks in a Flask (or any Werkzeug) application.

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

import json
from typing import TYPE_CHECKING

from ._dispatch import Dispatcher, WebhookResponse
from ._errors import WebhookConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["webhook_view"]

# Reading in pieces: one read(max_body_size + 1) of a raw stream would allocate the
# whole limit up front, for every delivery, however small.
_CHUNK = 64 * 1024


def _read_at_most(read: Callable[[int], bytes], size: int) -> bytes:
    """Read up to ``size`` bytes, however short each read is; never more."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _error(status_code: int, **fields: object) -> WebhookResponse:
    # The same small JSON document the dispatcher answers with.
    return WebhookResponse(status_code, json.dumps(fields).encode())


def _too_large(limit: int) -> WebhookResponse:
    return _error(413, error="body_too_large", limit=limit)


def _to_flask(response: WebhookResponse) -> flask.Response:
    return flask.Response(response.body, status=response.status_code, headers=dict(response.headers))


def _check_sync_store(dispatcher: object, framework: str) -> None:
    if not isinstance(dispatcher, Dispatcher):
        raise WebhookConfigurationError(
            f"webhook_view() takes a carecycle_webhooks.Dispatcher, not {type(dispatcher).__name__}"
        )
    if getattr(dispatcher.idempotency_store, "is_async", False) is True:
        raise WebhookConfigurationError(
            f"{framework} views are synchronous, but this dispatcher's idempotency store has an "
            "asyncio Redis client: give RedisIdempotencyStore a redis.Redis client instead"
        )


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
    ``MAX_CONTENT_LENGTH``, when set lower, still applies and is answered 413 too.

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
    _check_sync_store(dispatcher, "Flask")

    def carecycle_webhook(**_url_values: object) -> flask.Response:
        """Receive a careCycle webhook delivery."""
        request = flask.request
        if request.method != "POST":  # routed for more methods than POST
            response = _to_flask(_error(405, error="method_not_allowed"))
            response.headers["Allow"] = "POST"
            return response
        limit = dispatcher.max_body_size
        declared = request.content_length  # None when absent or chunked
        if declared is not None and declared > limit:
            return _to_flask(_too_large(limit))
        try:
            # One byte past the limit is enough for the dispatcher to answer 413.
            body = _read_at_most(request.stream.read, limit + 1)
        except RequestEntityTooLarge:
            # The application's MAX_CONTENT_LENGTH is lower than our limit.
            return _to_flask(_too_large(min(limit, request.max_content_length or limit)))
        return _to_flask(dispatcher.handle(body, request.headers))

    view = carecycle_webhook
    view.__name__ = view.__qualname__ = name
    view.methods = ("POST",)  # type: ignore[attr-defined]  # read by Flask's add_url_rule
    return view
