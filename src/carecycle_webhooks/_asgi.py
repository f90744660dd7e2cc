"""Plain ASGI pieces: send a `WebhookResponse`, and hold a request body to its limits.

No framework here: `carecycle_webhooks.django.limit_webhook_bodies` wraps Django's ASGI
application with `BodyGuard`, so that an oversize body is refused before Django reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ._adapters import client_disconnected, content_type_and_headers, declared_length, refuse_declared
from ._responses import BODY_TIMEOUT, BODY_TIMEOUT_SECONDS, WebhookResponse, body_too_large
from ._telemetry import observed_refusal

if TYPE_CHECKING:
    from ._budget import Reservation

__all__ = [
    "ASGIApp",
    "AnyASGIApp",
    "BodyGuard",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "header",
    "receive_body",
    "send_response",
]

# A body up to this size arrives with its headers or right after: no deadline is armed
# before its first piece. One that then leaves more to come holds budget while it waits,
# so from that piece on it has the deadline too.
_SMALL_BODY = 64 * 1024


class _Deadline:
    """The time by which a body must have arrived whole (see `receive_body`)."""

    __slots__ = ("_at", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._at = self._loop.time() + BODY_TIMEOUT_SECONDS

    async def receive(self, receive: Receive) -> Message | None:
        """The next message, or ``None`` once the deadline has passed."""
        remaining = self._at - self._loop.time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(receive(), remaining)
        except asyncio.TimeoutError:
            return None


def _needs_deadline(declared: int | None) -> _Deadline | None:
    return _Deadline() if declared is None or declared > _SMALL_BODY else None


Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
# An application we wrap: frameworks type their ASGI callables each their own way.
AnyASGIApp: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

_DISCONNECT: Message = {"type": "http.disconnect"}


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case) in an ASGI scope, or ``None``."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


async def send_response(send: Send, response: WebhookResponse) -> None:
    """Send ``response`` whole over an ASGI ``send``."""
    content_type, others = content_type_and_headers(response)
    headers = [(b"content-length", str(len(response.body)).encode("ascii"))]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in others)
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def receive_body(
    receive: Receive, *, declared: int | None, limit: int, reservation: Reservation
) -> bytes | WebhookResponse:
    """Receive a request body over ASGI within the size limit, the body budget and a deadline.

    A declared ``Content-Length`` over the limit is answered 413, and one that does not fit
    in what is left of the budget 503, before anything is received. Every piece is taken
    from the budget as it arrives, whatever the declared length said (a server may frame
    the body otherwise), and reading stops as soon as the body passes the limit (413) or
    does not fit (503). A large or chunked body must arrive within `BODY_TIMEOUT_SECONDS`
    (408), and a small one within that time of its first piece, so that a slow client
    cannot hold its share of the budget for long.

    Returns:
        The body, or the answer to give instead (recorded as a delivery's answer, for
        OpenTelemetry).
    """
    started = time.perf_counter()
    refused = refuse_declared(declared, limit=limit, reservation=reservation)
    if refused is not None:
        return observed_refusal(refused, started)
    deadline = _needs_deadline(declared)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive() if deadline is None else await deadline.receive(receive)
        if message is None:
            return observed_refusal(BODY_TIMEOUT, started)
        if message.get("type") == "http.disconnect":
            return observed_refusal(client_disconnected("http.disconnect"), started)
        chunk: bytes = message.get("body") or b""
        if chunk:
            received += len(chunk)
            if received > limit:
                return observed_refusal(body_too_large(limit), started)
            if not reservation.take(len(chunk)):
                return observed_refusal(reservation.refuse(), started)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if deadline is None:  # a small body arriving in pieces: it holds budget from now on
            deadline = _Deadline()


class BodyGuard:
    """Holds one request's body to a size limit and a body budget, as the application reads it.

    Check `refuse_early` before the application runs; pass `receive` to the application
    instead of the server's; after it returns, send `refused` if it is set. A body that
    passes the limit, or a chunked piece that does not fit in the budget, makes `receive`
    answer ``http.disconnect``: the application stops reading (Django gives up on the
    request without answering), and `refused` says what to answer instead.

    Args:
        scope: The request's ASGI scope.
        receive: The server's ``receive``.
        limit: The largest body accepted, in bytes.
        reservation: Takes this body's bytes from the budget; closed by the caller.
    """

    __slots__ = (
        "_deadline",
        "_declared",
        "_limit",
        "_receive",
        "_reservation",
        "disconnected",
        "read",
        "received",
        "refused",
    )

    def __init__(self, scope: Scope, receive: Receive, *, limit: int, reservation: Reservation) -> None:
        self._receive = receive
        self._limit = limit
        self._reservation = reservation
        self._declared = declared_length(header(scope, b"content-length"))
        self._deadline: _Deadline | None = None
        self.read = False  # the whole body arrived: later messages pass through untouched
        self.disconnected = False  # the client went away before the whole body arrived
        self.received = 0
        self.refused: WebhookResponse | None = None

    def refuse_early(self) -> WebhookResponse | None:
        """413 for a declared length over the limit, 503 when it does not fit the budget, else ``None``."""
        self._deadline = _needs_deadline(self._declared)
        return refuse_declared(self._declared, limit=self._limit, reservation=self._reservation)

    async def receive(self) -> Message:
        """The server's ``receive``, counting body bytes; ``http.disconnect`` once refused.

        Once the body has arrived whole, the application's later calls (Django listens for
        the client going away while its view runs) reach the server untouched: no deadline.
        """
        if self.refused is not None:
            return dict(_DISCONNECT)
        if self.read:
            return await self._receive()
        message = await (self._receive() if self._deadline is None else self._deadline.receive(self._receive))
        if message is None:
            self.refused = BODY_TIMEOUT
            return dict(_DISCONNECT)
        if message.get("type") != "http.request":
            self.disconnected = message.get("type") == "http.disconnect"
            return message
        size = len(message.get("body") or b"")
        self.received += size
        # Every byte counts, whatever the declared length said: a server may frame otherwise.
        if self.received > self._limit:
            self.refused = body_too_large(self._limit)
        elif not self._reservation.take(size):
            self.refused = self._reservation.refuse()
        if self.refused is not None:
            return dict(_DISCONNECT)
        self.read = not message.get("more_body", False)
        if not self.read and self._deadline is None:  # a small body arriving in pieces
            self._deadline = _Deadline()
        return message
