"""Traces and metrics of deliveries, when ``opentelemetry-api`` is installed; else nothing.

The dispatcher's entry points are wrapped here (`observed_handle`, `observed_dispatch` and
their async twins): ``handle`` opens a delivery's span before verifying, ``dispatch``
names it for the event type (or opens one of its own, for a work queue's worker), and the
answer closes it. The drivers ask `handler_started` around each handler, and report store
failures with `store_failed`.

This module imports only the standard library. ``opentelemetry`` is imported on the first
delivery (`_otel`), never by ``import carecycle_webhooks``; when it is missing, each call
costs one check of a module global.
"""

from __future__ import annotations

import contextvars
import functools
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._models import Event
    from ._otel import Delivery, HandlerRun
    from ._responses import WebhookResponse
    from ._verify import Headers, WebhookDelivery

__all__ = [
    "handler_started",
    "observed_dispatch",
    "observed_dispatch_async",
    "observed_handle",
    "observed_handle_async",
    "store_failed",
]

_D = TypeVar("_D")

# Decided on the first delivery: _otel.begin, or None when opentelemetry is missing.
_begin: Callable[[], Delivery | None] | None = None
_loaded = False

# The delivery span that handle() opened, for the dispatch() it calls to name (then None).
_opened: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "carecycle_webhooks_opened", default=None
)
# The delivery whose handlers run: their spans are its span's children, in any thread or task.
_running: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "carecycle_webhooks_running", default=None
)


def _load() -> Callable[[], Delivery | None] | None:
    global _begin, _loaded  # noqa: PLW0603 - decided once, on the first delivery
    try:
        from ._otel import begin
    except ImportError:
        _begin = None
    else:
        _begin = begin
    _loaded = True
    return _begin


def observed_handle(
    method: Callable[[_D, bytes | str, Headers], WebhookResponse],
) -> Callable[[_D, bytes | str, Headers], WebhookResponse]:
    """Wrap `Dispatcher.handle`: one span and the metrics of each delivery, rejected ones too."""

    @functools.wraps(method)
    def handle(self: _D, body: bytes | str, headers: Headers) -> WebhookResponse:
        begin = _begin if _loaded else _load()
        observed = None if begin is None else begin()
        if observed is None:
            return method(self, body, headers)
        token = _opened.set(observed)
        try:
            response = method(self, body, headers)
        except BaseException as error:
            observed.raised(error)
            raise
        finally:
            _opened.reset(token)
        observed.answered(response)
        return response

    return handle


def observed_handle_async(
    method: Callable[[_D, bytes | str, Headers], Awaitable[WebhookResponse]],
) -> Callable[[_D, bytes | str, Headers], Awaitable[WebhookResponse]]:
    """Wrap `Dispatcher.handle_async`, as `observed_handle`."""

    @functools.wraps(method)
    async def handle_async(self: _D, body: bytes | str, headers: Headers) -> WebhookResponse:
        begin = _begin if _loaded else _load()
        observed = None if begin is None else begin()
        if observed is None:
            return await method(self, body, headers)
        token = _opened.set(observed)
        try:
            response = await method(self, body, headers)
        except BaseException as error:
            observed.raised(error)
            raise
        finally:
            _opened.reset(token)
        observed.answered(response)
        return response

    return handle_async


def observed_dispatch(
    method: Callable[[_D, Event, WebhookDelivery], WebhookResponse],
) -> Callable[[_D, Event, WebhookDelivery], WebhookResponse]:
    """Wrap `Dispatcher.dispatch`: names handle()'s span, or opens one (a work queue's call)."""

    @functools.wraps(method)
    def dispatch(self: _D, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        begin = _begin if _loaded else _load()
        opened = None if begin is None else _opened.get()
        observed = begin() if opened is None and begin is not None else opened
        if observed is None:
            return method(self, event, delivery)
        observed.parsed(event, delivery)
        # A handler that calls a dispatcher again gets a delivery span of its own.
        opened_token = _opened.set(None)
        running_token = _running.set(observed)
        try:
            response = method(self, event, delivery)
        except BaseException as error:
            if opened is None:
                observed.raised(error)
            raise
        finally:
            _running.reset(running_token)
            _opened.reset(opened_token)
        if opened is None:
            observed.answered(response)
        return response

    return dispatch


def observed_dispatch_async(
    method: Callable[[_D, Event, WebhookDelivery], Awaitable[WebhookResponse]],
) -> Callable[[_D, Event, WebhookDelivery], Awaitable[WebhookResponse]]:
    """Wrap `Dispatcher.dispatch_async`, as `observed_dispatch`."""

    @functools.wraps(method)
    async def dispatch_async(self: _D, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        begin = _begin if _loaded else _load()
        opened = None if begin is None else _opened.get()
        observed = begin() if opened is None and begin is not None else opened
        if observed is None:
            return await method(self, event, delivery)
        observed.parsed(event, delivery)
        opened_token = _opened.set(None)
        running_token = _running.set(observed)
        try:
            response = await method(self, event, delivery)
        except BaseException as error:
            if opened is None:
                observed.raised(error)
            raise
        finally:
            _running.reset(running_token)
            _opened.reset(opened_token)
        if opened is None:
            observed.answered(response)
        return response

    return dispatch_async


def handler_started(handler: Callable[..., object]) -> HandlerRun | None:
    """A handler of the running delivery starts: its span and clock; ``None`` without telemetry."""
    observed = _running.get()
    return None if observed is None else observed.handler_started(handler)


def store_failed(operation: str, error: BaseException) -> None:
    """Count a failed store call of the running delivery (its operation and error type)."""
    observed = _running.get()
    if observed is not None:
        observed.store_failed(operation, error)
