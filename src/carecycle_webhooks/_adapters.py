"""What the framework adapters share: argument checks, bounded body reads, the early answers.

Each adapter is two small converters (request in, `WebhookResponse` out) around the
dispatcher; everything that is not framework-specific lives here, once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ._budget import Reservation
from ._dispatch import Dispatcher
from ._errors import WebhookConfigurationError
from ._idempotency import serves
from ._responses import CLIENT_DISCONNECTED, JSON_HEADERS, METHOD_NOT_ALLOWED, WebhookResponse, body_too_large
from ._telemetry import observed_refusal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "METHOD_NOT_ALLOWED",
    "Reservation",
    "body_too_large",
    "check_dispatcher",
    "client_disconnected",
    "content_type_and_headers",
    "declared_length",
    "last_segment",
    "path_tenant",
    "read_body",
    "read_environ_body",
    "refuse_declared",
    "reservation_for",
    "tenant_refused",
    "tenant_refused_async",
]

logger = logging.getLogger("carecycle_webhooks")

# Reading in pieces: one read(max_body_size + 1) of a raw stream would allocate the
# whole limit up front, for every delivery, however small.
_CHUNK = 64 * 1024


def check_dispatcher(
    dispatcher: object, framework: str, *, synchronous: bool, built: str = "views built by webhook_view()"
) -> Dispatcher:
    """The dispatcher, checked at start-up: routing code is rarely type-checked.

    ``built`` says what the caller builds, for the messages (``applications built by webhook_app()``).
    """
    factory = built.rpartition(" ")[2]
    if not isinstance(dispatcher, Dispatcher):
        raise WebhookConfigurationError(
            f"{factory} takes a carecycle_webhooks.Dispatcher, not {type(dispatcher).__name__}"
        )
    store = dispatcher.idempotency_store
    if store is not None and not serves(store, synchronous=synchronous):
        kind, needed = (
            ("synchronous", "IdempotencyStore") if synchronous else ("async", "AsyncIdempotencyStore")
        )
        why = (
            "it has an asyncio Redis client: give RedisIdempotencyStore a redis.Redis client instead"
            if getattr(store, "is_async", False) is True
            else f"it does not implement {needed}"
        )
        raise WebhookConfigurationError(
            f"{framework} {built} are {kind}, but this dispatcher's "
            f"idempotency store ({type(store).__name__}) cannot serve them: {why}"
        )
    return dispatcher


def path_tenant(value: object) -> str | None:
    """A ``tenant`` path parameter's value as a tenant key; ``None`` when the route has none.

    A converter's value (an ``int``, a ``UUID``) is its text, as it appeared in the path.
    """
    if value is None or isinstance(value, str):
        return value
    return str(value)


def tenant_refused(dispatcher: Dispatcher, tenant: str | None) -> WebhookResponse | None:
    """Before the body is read: 404 for an unknown tenant, 503 when the resolver fails, else ``None``.

    Nothing is read and nothing is taken from the body budget for a tenant that the
    resolver does not know. Without a tenant and without a resolver, nothing is asked.
    The dispatcher's `handle` finds the tenant's verifier again in the resolver's cache.
    """
    # The adapters are the dispatcher's own: they may ask it before it gets the body.
    if tenant is None and dispatcher._tenants is None:  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        return None
    started = time.perf_counter()  # a slow resolver's time belongs to the delivery
    resolved = dispatcher._resolved(tenant)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    return observed_refusal(resolved, started) if isinstance(resolved, WebhookResponse) else None


async def tenant_refused_async(dispatcher: Dispatcher, tenant: str | None) -> WebhookResponse | None:
    """`tenant_refused`, on the event loop: a sync resolver runs in a worker thread."""
    if tenant is None and dispatcher._tenants is None:  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
        return None
    started = time.perf_counter()
    resolved = await dispatcher._resolved_async(tenant)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    return observed_refusal(resolved, started) if isinstance(resolved, WebhookResponse) else None


def last_segment(path: str) -> str | None:
    """The last non-empty segment of a URL path (``/webhooks/acme/`` -> ``acme``), or ``None``."""
    for segment in reversed(path.split("/")):
        if segment:
            return segment
    return None


def content_type_and_headers(response: WebhookResponse) -> tuple[str | None, list[tuple[str, str]]]:
    """The response's content type, which frameworks take apart, and its other headers."""
    headers = response.headers
    if headers is JSON_HEADERS:  # every answer of the dispatcher
        return "application/json", []
    return headers.get("content-type"), [(k, v) for k, v in headers.items() if k != "content-type"]


def declared_length(value: object) -> int | None:
    """A ``Content-Length`` value as a number, or ``None`` when absent or not a number."""
    if value is None:
        return None
    try:
        # bytes as ASGI servers give header values; int() reads ASCII digits from them.
        # Exact types only: a subclass's own __int__ is not asked.
        length = int(value) if type(value) is bytes or type(value) is str else int(str(value))
    except ValueError:
        return None
    return length if length >= 0 else None


def reservation_for(dispatcher: Dispatcher) -> Reservation:
    """A new reservation of one delivery's body bytes, against the dispatcher's body budget."""
    # The adapters are the dispatcher's own: they may read its private counter.
    return Reservation(dispatcher._bodies)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]


def client_disconnected(cause: BaseException | str) -> WebhookResponse:
    """The answer when reading the body failed: the client went away (nobody reads it)."""
    # An exception's type only: a server's message may quote what it received.
    what = cause if isinstance(cause, str) else type(cause).__qualname__
    logger.info("webhook body not received whole (%s): the client went away", what)
    return CLIENT_DISCONNECTED


def refuse_declared(declared: int | None, *, limit: int, reservation: Reservation) -> WebhookResponse | None:
    """Before reading: 413 for a declared length over the limit, 503 when it does not fit the budget."""
    if declared is None:
        return None
    if declared > limit:
        return body_too_large(limit)
    if not reservation.fits(declared):
        return reservation.refuse()
    return None


def read_body(
    read: Callable[[int], bytes], *, declared: int | None, limit: int, reservation: Reservation
) -> bytes | WebhookResponse:
    """Read a WSGI request body within the size limit and the body budget.

    A declared ``Content-Length`` over the limit is answered 413, and one that does not fit
    in what is left of the budget 503, before anything is read. Then every piece is taken
    from the budget as it is read (an idle or slow client holds only what it sent), and
    the read stops at the declared length, or one byte past the limit when none is
    declared (enough for the dispatcher to answer 413). A stream that ends before its
    declared length is a client gone away (400 ``client_disconnected``).

    Returns:
        The body, or the answer to give instead. ``reservation`` holds what was taken
        from the budget until the caller closes it.
    """
    refused = refuse_declared(declared, limit=limit, reservation=reservation)
    if refused is not None:
        return refused
    end = limit + 1 if declared is None else declared
    chunks: list[bytes] = []
    received = 0
    while received < end:
        size = min(end - received, _CHUNK)
        # The byte past the limit only tells that the body is too large: not budgeted.
        budgeted = min(size, limit - received)
        if not reservation.take(budgeted):
            return reservation.refuse()
        chunk = read(size)
        reservation.give_back(budgeted - len(chunk))  # a short read keeps only what it read
        if not chunk:
            if declared is not None:
                # The stream ended before its Content-Length: the client went away (a WSGI
                # server gives a short read rather than an error). Not a bad signature.
                return client_disconnected("the body ended before its Content-Length")
            break
        chunks.append(chunk)
        received += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_environ_body(
    environ: Mapping[str, Any],
    dispatcher: Dispatcher,
    reservation: Reservation,
    read: Callable[[int], bytes] | None = None,
) -> bytes | WebhookResponse:
    """A WSGI request's body (`read_body`), or the answer to give instead.

    ``read`` reads the body (``environ["wsgi.input"].read`` when not given; Django passes
    its request's stream, which knows where the body ends). A body without a
    ``Content-Length`` is read from the server's own stream to its end when the server
    says it ends (``wsgi.input_terminated``, as gunicorn and Werkzeug set for chunked
    bodies); from ``wsgi.input`` otherwise, it is empty, as PEP 3333 forbids reading
    past ``CONTENT_LENGTH``.
    """
    started = time.perf_counter()
    declared = declared_length(environ.get("CONTENT_LENGTH") or None)
    if declared is None:
        if environ.get("wsgi.input_terminated"):
            read = environ["wsgi.input"].read
        elif read is None:
            declared = 0  # the server's stream, which may not say where the body ends
    try:
        body = read_body(
            read or environ["wsgi.input"].read,
            declared=declared,
            limit=dispatcher.max_body_size,
            reservation=reservation,
        )
    except Exception as error:  # noqa: BLE001 - the client went away mid-body, or the server failed to read it
        return observed_refusal(client_disconnected(error), started)
    return body if isinstance(body, bytes) else observed_refusal(body, started)
