"""Traces and metrics of deliveries, when ``opentelemetry-api`` is installed; else nothing.

The dispatcher's entry points are wrapped here (`observed_handle`, `observed_dispatch` and
their async twins): ``handle`` opens a delivery's span before verifying, ``dispatch``
names it for the event type (or opens one of its own, for a work queue's worker), and the
answer closes it. The drivers ask `handler_started` around each handler, and report store
failures with `store_failed`. The framework adapters report the answers they give before
``handle`` runs (an unknown tenant, a body too large, too slow or cut off, the body budget
spent) with `observed_refusal`, and FastAPI's `verified_event` dependency, which runs a
route of the application's own in place of the handlers, uses `ObservedRoute`.

This module imports only the standard library. ``opentelemetry`` is imported (`_otel`)
on the first delivery after the application has imported it, never by ``import
carecycle_webhooks``: an application that sets a tracer or meter provider has imported
``opentelemetry.trace`` or ``opentelemetry.metrics``, and one that has not pays nothing
for it (an installed API costs a cold start some 10 ms). Until then, each call costs two
lookups in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from ._models import Event
    from ._otel import Delivery, HandlerRun
    from ._responses import WebhookResponse
    from ._verify import Headers, WebhookDelivery

__all__ = [
    "ObservedRoute",
    "handler_started",
    "observed_dispatch",
    "observed_dispatch_async",
    "observed_handle",
    "observed_handle_async",
    "observed_refusal",
    "store_failed",
]

_D = TypeVar("_D")
_F = TypeVar("_F", bound="Callable[..., Any]")

# Decided on the first delivery after the application imported opentelemetry: _otel.begin,
# or None when it cannot be imported.
_begin: Callable[[float | None, bool], Delivery | None] | None = None
_loaded = False

# The delivery span that handle() opened, for the dispatch() it calls to name (then None).
_opened: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "carecycle_webhooks_opened", default=None
)
# The delivery whose handlers run: their spans are its span's children, in any thread or task.
_running: contextvars.ContextVar[Delivery | _StoreFailures | None] = contextvars.ContextVar(
    "carecycle_webhooks_running", default=None
)


def _load() -> Callable[[float | None, bool], Delivery | None] | None:
    global _begin, _loaded  # noqa: PLW0603 - decided once, on the first delivery
    modules = sys.modules
    if "opentelemetry.trace" not in modules and "opentelemetry.metrics" not in modules:
        return None  # no provider can have been set: look again on the next delivery
    try:
        from ._otel import begin
    except ImportError:
        _begin = None
    else:
        _begin = begin
    _loaded = True
    return _begin


def _begun(started: float | None = None, *, current: bool = True) -> Delivery | None:
    """A new delivery span, or ``None`` (no opentelemetry, or no provider set).

    ``started``: when the delivery began, a `time.perf_counter` reading; now if not given.
    ``current``: whether the span becomes the current one.
    """
    begin = _begin if _loaded else _load()
    return None if begin is None else begin(started, current)


@contextlib.contextmanager
def _handling(observed: Delivery) -> Generator[None, None, None]:
    """While handle() runs: its span is the one dispatch() names; an exception ends it."""
    token = _opened.set(observed)
    try:
        yield
    except BaseException as error:
        observed.raised(error)
        raise
    finally:
        _opened.reset(token)


def _dispatched() -> tuple[Delivery | None, bool]:
    """The span a dispatch() call names: handle()'s, or one of its own (True: it ends it)."""
    begin = _begin if _loaded else _load()
    if begin is None:
        return None, False
    opened = _opened.get()
    return (begin(None, True), True) if opened is None else (opened, False)  # noqa: FBT003 - begin(started, current)


@contextlib.contextmanager
def _dispatching(
    observed: Delivery,
    own: bool,  # noqa: FBT001 - _dispatched's answer
    event: Event,
    delivery: WebhookDelivery,
) -> Generator[None, None, None]:
    """While dispatch() runs: its handlers' spans are children of ``observed``."""
    observed.parsed(event, delivery)
    # A handler that calls a dispatcher again gets a delivery span of its own.
    opened_token = _opened.set(None)
    running_token = _running.set(observed)
    try:
        yield
    except BaseException as error:
        if own:
            observed.raised(error)
        raise
    finally:
        _running.reset(running_token)
        _opened.reset(opened_token)


def observed_handle(method: _F) -> _F:
    """Wrap `Dispatcher.handle`: one span and the metrics of each delivery, rejected ones too."""

    @functools.wraps(method)
    def handle(
        self: object, body: bytes | str, headers: Headers, *, tenant: str | None = None
    ) -> WebhookResponse:
        observed = _begun()
        if observed is None:
            return cast("WebhookResponse", method(self, body, headers, tenant=tenant))
        with _handling(observed):
            response = cast("WebhookResponse", method(self, body, headers, tenant=tenant))
        observed.answered(response)
        return response

    return cast("_F", handle)


def observed_handle_async(method: _F) -> _F:
    """Wrap `Dispatcher.handle_async`, as `observed_handle`."""

    @functools.wraps(method)
    async def handle_async(
        self: object, body: bytes | str, headers: Headers, *, tenant: str | None = None
    ) -> WebhookResponse:
        observed = _begun()
        if observed is None:
            return cast("WebhookResponse", await method(self, body, headers, tenant=tenant))
        with _handling(observed):
            response = cast("WebhookResponse", await method(self, body, headers, tenant=tenant))
        observed.answered(response)
        return response

    return cast("_F", handle_async)


def observed_dispatch(
    method: Callable[[_D, Event, WebhookDelivery], WebhookResponse],
) -> Callable[[_D, Event, WebhookDelivery], WebhookResponse]:
    """Wrap `Dispatcher.dispatch`: names handle()'s span, or opens one (a work queue's call)."""

    @functools.wraps(method)
    def dispatch(self: _D, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        observed, own = _dispatched()
        if observed is None:
            return method(self, event, delivery)
        with _dispatching(observed, own, event, delivery):
            response = method(self, event, delivery)
        if own:
            observed.answered(response)
        return response

    return dispatch


def observed_dispatch_async(
    method: Callable[[_D, Event, WebhookDelivery], Awaitable[WebhookResponse]],
) -> Callable[[_D, Event, WebhookDelivery], Awaitable[WebhookResponse]]:
    """Wrap `Dispatcher.dispatch_async`, as `observed_dispatch`."""

    @functools.wraps(method)
    async def dispatch_async(self: _D, event: Event, delivery: WebhookDelivery) -> WebhookResponse:
        observed, own = _dispatched()
        if observed is None:
            return await method(self, event, delivery)
        with _dispatching(observed, own, event, delivery):
            response = await method(self, event, delivery)
        if own:
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


def observed_refusal(response: WebhookResponse, started: float | None = None) -> WebhookResponse:
    """An adapter answers before ``handle`` runs: a delivery span and metrics, as for a rejected one.

    ``started``: when the adapter began to receive the body (a `time.perf_counter`
    reading), so that a body too slow or too large has its real duration; now if not given.
    Returns ``response``, for the adapter to send.
    """
    observed = _begun(started)
    if observed is not None:
        observed.answered(response)
    return response


class _StoreFailures:
    """What the flow of a `verified_event` route reports to: its store failures only.

    The route is the delivery's handler, and its span is `ObservedRoute.route`'s, not the flow's.
    """

    __slots__ = ("_delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def handler_started(self, handler: Callable[..., object]) -> None:  # noqa: ARG002 - as Delivery's
        return None

    def store_failed(self, operation: str, error: BaseException) -> None:
        self._delivery.store_failed(operation, error)


class ObservedRoute:
    """One delivery to a route of the application's own (FastAPI's `verified_event`).

    As under `Dispatcher.handle_async`: the delivery span begins before the signature is
    checked; the route has a handler span of its own, named after it; its flow's store
    failures are counted; the answer ends the span (once: a later answer is ignored).
    Neither span is made current: FastAPI enters and leaves spans of its own around its
    dependencies (FastAPI 0.142 and later), and a context attached inside one of them would
    be dropped, then restored out of order.
    """

    __slots__ = ("_observed",)

    def __init__(self) -> None:
        self._observed = _begun(current=False)

    def parsed(self, event: Event, delivery: WebhookDelivery) -> None:
        if self._observed is not None:
            self._observed.parsed(event, delivery)

    @contextlib.contextmanager
    def flow(self) -> Generator[None, None, None]:
        """While the route's flow is started: its task reports its store failures here."""
        if self._observed is None:
            yield
            return
        token = _running.set(_StoreFailures(self._observed))
        try:
            yield
        finally:
            _running.reset(token)

    @contextlib.contextmanager
    def route(self, endpoint: Callable[..., object]) -> Generator[None, None, None]:
        """While the route runs: its span and duration; an exception is recorded by its type."""
        run = None if self._observed is None else self._observed.handler_started(endpoint)
        if run is None:
            yield
            return
        try:
            yield
        except BaseException as error:
            run.ended(error)
            raise
        run.ended(None)

    def answered(self, response: WebhookResponse) -> None:
        observed, self._observed = self._observed, None
        if observed is not None:
            observed.answered(response)

    def raised(self, error: BaseException) -> None:
        observed, self._observed = self._observed, None
        if observed is not None:
            observed.raised(error)
