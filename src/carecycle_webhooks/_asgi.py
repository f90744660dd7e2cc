"""Plain ASGI pieces: send a `WebhookResponse`, and hold a request body to its limits.

No framework here: `carecycle_webhooks.django.limit_webhook_bodies` wraps Django's ASGI
application with `BodyGuard`, so that an oversize body is refused before Django reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ._adapters import content_type_and_headers, declared_length
from ._responses import WebhookResponse, body_too_large

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
    "send_response",
]

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

    __slots__ = ("_declared", "_limit", "_receive", "_reservation", "received", "refused")

    def __init__(self, scope: Scope, receive: Receive, *, limit: int, reservation: Reservation) -> None:
        self._receive = receive
        self._limit = limit
        self._reservation = reservation
        self._declared = declared_length(header(scope, b"content-length"))
        self.received = 0
        self.refused: WebhookResponse | None = None

    def refuse_early(self) -> WebhookResponse | None:
        """413 for a declared length over the limit, 503 when it does not fit the budget, else ``None``."""
        declared = self._declared
        if declared is None:
            return None
        if declared > self._limit:
            return body_too_large(self._limit)
        if not self._reservation.take(declared):
            return self._reservation.refuse()
        return None

    async def receive(self) -> Message:
        """The server's ``receive``, counting body bytes; ``http.disconnect`` once refused."""
        if self.refused is not None:
            return dict(_DISCONNECT)
        message = await self._receive()
        if message.get("type") != "http.request":
            return message
        size = len(message.get("body") or b"")
        self.received += size
        if self.received > self._limit:
            self.refused = body_too_large(self._limit)
        elif self._declared is None and not self._reservation.take(size):
            self.refused = self._reservation.refuse()
        return message if self.refused is None else dict(_DISCONNECT)
