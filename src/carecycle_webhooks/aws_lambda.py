"""AWS Lambda: receive careCycle webhooks behind API Gateway or a Lambda function URL.

::

    # handler.py; the function's handler setting: handler.handler
    from carecycle_webhooks import CustomerCreatedEvent, Dispatcher
    from carecycle_webhooks.aws_lambda import webhook_handler

    webhooks = Dispatcher()  # the secret from CARECYCLE_WEBHOOK_SECRET


    @webhooks.on("customer.created")
    def customer_created(event: CustomerCreatedEvent) -> None: ...


    handler = webhook_handler(webhooks)

One handler takes the three event shapes that carry an HTTP request: API Gateway REST
APIs (payload format 1.0), HTTP APIs (payload format 2.0 or 1.0) and Lambda function
URLs (the 2.0 shape). No framework and no AWS library is imported: an event is a
``dict``, and so is the answer. The status codes are the dispatcher's, the same in every
adapter.

For many tenants on one function (a dispatcher with a secret resolver), the tenant key is
the route's ``{tenant}`` path parameter behind API Gateway (``pathParameters.tenant`` of
``POST /webhooks/{tenant}``); without one (a function URL, a ``$default`` or proxy route),
the last segment of the request's path (``rawPath``, or ``path`` in payload 1.0:
``/webhooks/acme`` -> ``acme``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ._adapters import check_dispatcher, last_segment, path_tenant, tenant_refused
from ._errors import WebhookConfigurationError
from ._plain import POST_ONLY
from ._responses import body_too_large, json_response
from ._telemetry import observed_refusal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._dispatch import Dispatcher
    from ._responses import WebhookResponse

__all__ = ["webhook_handler"]

_NOT_BASE64 = json_response(400, error="invalid_body", detail="the body is marked base64 but is not")


class _EventHeaders:
    """An event's request headers as ``(name, value)`` pairs, every value of every name.

    Payload 1.0 has ``multiValueHeaders`` (every value, names as the client sent them)
    beside ``headers`` (the last value of each); payload 2.0 has ``headers`` only, names
    in lower case, repeated values joined by commas. All are given to the verifier, which
    compares names in any case and refuses a signed header given twice with different
    values.
    """

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> Iterable[tuple[str, str]]:
        return self._pairs


def _mapping(value: object) -> Mapping[str, object] | None:
    # Events are JSON objects: parsed JSON, whose keys are strings.
    return cast("Mapping[str, object]", value) if isinstance(value, Mapping) else None


def _headers(event: Mapping[str, object]) -> _EventHeaders:
    pairs: list[tuple[str, str]] = []
    multi = _mapping(event.get("multiValueHeaders"))
    if multi:
        for name, values in multi.items():
            if isinstance(values, list):
                pairs.extend(
                    (name, value) for value in cast("list[object]", values) if isinstance(value, str)
                )
    else:
        single = _mapping(event.get("headers")) or {}
        pairs.extend((name, value) for name, value in single.items() if isinstance(value, str))
    return _EventHeaders(pairs)


def _method(event: Mapping[str, object]) -> str:
    method = event.get("httpMethod")  # payload 1.0
    if method is None:  # payload 2.0: HTTP APIs and function URLs
        http = _mapping((_mapping(event.get("requestContext")) or {}).get("http"))
        method = http.get("method") if http is not None else None
    if not isinstance(method, str):
        # A misrouted trigger (SQS, a scheduled rule...): a setup error, raised for the logs.
        raise WebhookConfigurationError(
            "carecycle_webhooks.aws_lambda.webhook_handler() takes API Gateway and Lambda function "
            "URL events; this event carries no HTTP method"
        )
    return method


def _body(event: Mapping[str, object], limit: int) -> bytes | str | WebhookResponse:
    body = event.get("body")
    if not isinstance(body, str):
        return b""  # no body: the dispatcher says what is missing
    if event.get("isBase64Encoded") is not True:  # AWS sends a JSON boolean ("false" is truthy)
        return body  # measured and encoded by the dispatcher
    # Four characters carry three bytes: a body far over the limit is not decoded.
    if len(body) // 4 * 3 > limit + 3:
        return body_too_large(limit)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return _NOT_BASE64


def _tenant(event: Mapping[str, object], dispatcher: Dispatcher) -> str | None:
    """The route's ``tenant`` path parameter; else, with a secret resolver, the path's last segment."""
    parameters = _mapping(event.get("pathParameters"))
    if parameters is not None and "tenant" in parameters:
        return path_tenant(parameters["tenant"])
    if dispatcher._tenants is None:  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - one endpoint, any path
        return None
    path = event.get("rawPath", event.get("path"))  # payload 2.0, else 1.0
    return last_segment(path) if isinstance(path, str) else None


def _to_lambda(response: WebhookResponse, *, multi_value: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"statusCode": response.status_code}
    if multi_value:
        # What a caller that sent multi-value headers reads (an API Gateway REST API
        # merges both forms; an Application Load Balancer with them on reads only these).
        answer["multiValueHeaders"] = {name: [value] for name, value in response.headers.items()}
    else:
        answer["headers"] = dict(response.headers)
    # Every answer of the dispatcher is a small UTF-8 JSON document; anything else
    # (a Dispatcher subclass's own answer) goes as base64.
    try:
        answer["body"] = response.body.decode("utf-8")
        answer["isBase64Encoded"] = False
    except UnicodeDecodeError:
        answer["body"] = base64.b64encode(response.body).decode("ascii")
        answer["isBase64Encoded"] = True
    return answer


def webhook_handler(dispatcher: Dispatcher) -> Callable[[Mapping[str, Any], object], dict[str, Any]]:
    """A Lambda handler, ``(event, context) -> dict``, that verifies and dispatches deliveries.

    It takes the events of API Gateway REST APIs (payload format 1.0), HTTP APIs (2.0
    and 1.0) and Lambda function URLs, and answers in the format they all read
    (``statusCode``, ``headers``, ``body``, ``isBase64Encoded``). ``POST`` requests are
    deliveries; other methods are answered 405 with ``Allow: POST``.

    - Bodies marked ``isBase64Encoded`` are decoded; the signature is checked on the
      bytes as sent. One that is not valid base64 is answered 400.
    - Header names are matched in any case, and every value of a multi-value header is
      seen: a signed header given twice with different values is refused (400).
    - A body larger than ``dispatcher.max_body_size`` is answered 413 (a base64 body far
      over it, before it is decoded). API Gateway and function URLs limit payloads to a
      few MB themselves, and a Lambda process handles one event at a time, so the body
      budget of the server adapters has nothing to bound here.

    With a secret resolver, each delivery's tenant is the route's ``tenant`` path
    parameter (API Gateway), or else the last segment of the path (function URLs); one
    that the resolver does not know is answered 404 before its body is decoded. Without
    a resolver, a delivery with a ``tenant`` path parameter is answered 404, with a warning
    in the log (the path is not signed: it cannot keep tenants apart).

    The handler is synchronous: it calls `Dispatcher.handle`, which runs ``async def``
    handlers too (with ``asyncio.run``). Build it once, at module level, so that warm
    invocations reuse the dispatcher and its idempotency store's connections.

    Args:
        dispatcher: The `Dispatcher` whose handlers run. Its idempotency store must be
            usable synchronously (not a `RedisIdempotencyStore` with an asyncio client).

    Returns:
        The handler. Its ``context`` argument is not used.

    Raises:
        WebhookConfigurationError: ``dispatcher`` is not a `Dispatcher`, or its
            idempotency store only works under asyncio. The handler itself raises it
            for an event that carries no HTTP request (a misrouted trigger).
    """
    dispatcher = check_dispatcher(
        dispatcher, "AWS Lambda", synchronous=True, built="handlers built by webhook_handler()"
    )

    def carecycle_webhook_handler(event: Mapping[str, Any], context: object) -> dict[str, Any]:  # noqa: ARG001 - Lambda's signature
        if not isinstance(event, Mapping):
            raise WebhookConfigurationError(
                "carecycle_webhooks.aws_lambda.webhook_handler() takes API Gateway and Lambda "
                f"function URL events (JSON objects), not {type(event).__name__}"
            )
        multi_value = isinstance(event.get("multiValueHeaders"), Mapping)
        if _method(event).upper() != "POST":
            return _to_lambda(POST_ONLY, multi_value=multi_value)
        tenant = _tenant(event, dispatcher)
        refused = tenant_refused(dispatcher, tenant)
        if refused is not None:  # an unknown tenant: its body is not decoded
            return _to_lambda(refused, multi_value=multi_value)
        body = _body(event, dispatcher.max_body_size)
        if not isinstance(body, (bytes, str)):
            return _to_lambda(observed_refusal(body), multi_value=multi_value)
        if tenant is None:
            return _to_lambda(dispatcher.handle(body, _headers(event)), multi_value=multi_value)
        return _to_lambda(dispatcher.handle(body, _headers(event), tenant=tenant), multi_value=multi_value)

    return carecycle_webhook_handler
