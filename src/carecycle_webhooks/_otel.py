"""OpenTelemetry spans and metrics of deliveries; imported on the first delivery, if installed.

`_telemetry` imports this module lazily (it imports ``opentelemetry``): a process without
``opentelemetry-api`` never loads it. The tracer and the instruments come from the global
providers once the application has set them (looked at once a second until then): with
the API alone, a delivery makes no span and builds no attribute. Nothing here ever holds
a payload's value: only the webhook-id, the event type, the attempt, the outcome word of
the answer, handlers' names, exception types and timings.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._logs import safe_label
from ._responses import (
    DUPLICATE,
    HANDLER_FAILED,
    IGNORED,
    IN_FLIGHT,
    NOT_BYTES,
    NOT_COMMITTED,
    PROCESSED,
    RESOLVER_FAILED,
    STALE,
    STORE_UNAVAILABLE,
    TEST_CUSTOMER,
    UNKNOWN_TENANT,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import TypeVar

    from opentelemetry.context import Context
    from opentelemetry.util.types import AttributeValue

    from ._models import Event
    from ._responses import WebhookResponse
    from ._verify import WebhookDelivery

    _T = TypeVar("_T")

__all__ = [
    "ATTEMPT",
    "DELIVERY_DURATION",
    "DELIVERY_SPAN",
    "EVENT_TYPE",
    "HANDLER_DURATION",
    "OUTCOME",
    "REASON",
    "STORE_FAILURES",
    "Delivery",
    "HandlerRun",
    "Instruments",
    "begin",
]

NAME = "carecycle_webhooks"
"""The tracer's and the meter's name."""

# Semantic conventions (messaging, errors, HTTP, code).
MESSAGE_ID = "messaging.message.id"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
SYSTEM = "messaging.system"
ERROR_TYPE = "error.type"
STATUS_CODE = "http.response.status_code"
FUNCTION = "code.function.name"

# Ours: no convention says these.
EVENT_TYPE = "carecycle.event_type"
ATTEMPT = "carecycle.delivery.attempt"
TENANT = "carecycle.delivery.tenant"
OUTCOME = "carecycle.delivery.outcome"
REASON = "carecycle.delivery.reason"
STORE_OPERATION = "carecycle.store.operation"

DELIVERY_SPAN = "process webhook"
"""The delivery span's name until the event type is known (a rejected delivery keeps it)."""

DELIVERIES = "carecycle.webhook.deliveries"
DELIVERY_DURATION = "carecycle.webhook.delivery.duration"
HANDLER_DURATION = "carecycle.webhook.handler.duration"
STORE_FAILURES = "carecycle.webhook.store.failures"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0)
"""The duration histograms' bucket bounds, in seconds: OpenTelemetry's for HTTP durations, and
Svix's 15 s timeout. The SDK's default bounds (0 to 10,000) are meant for milliseconds."""

# An event type as the catalog writes them (``customer.created``), a future one too. Any other
# text (a sender's mistake) is ``unknown``: a span's name and a metric's label stay few.
_EVENT_TYPE_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,30}(?:\.[a-z][a-z0-9_]{0,30}){1,3}")

_FIXED: dict[str, AttributeValue] = {OPERATION_TYPE: "process", OPERATION_NAME: "process", SYSTEM: "svix"}
_ERROR = Status(StatusCode.ERROR)  # no description: an exception's message may be PHI


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("carecycle-webhooks")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without metadata
        return "0"


class Instruments:
    """The meter's instruments, made once (from the global meter provider's proxy)."""

    __slots__ = ("deliveries", "delivery_duration", "handler_duration", "store_failures")

    def __init__(self, meter: metrics.Meter) -> None:
        self.deliveries = meter.create_counter(
            DELIVERIES, unit="{delivery}", description="Deliveries answered, by event type and outcome."
        )
        self.delivery_duration = meter.create_histogram(
            DELIVERY_DURATION,
            unit="s",
            description="From the body's arrival (or the start of its refusal) to the answer.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.handler_duration = meter.create_histogram(
            HANDLER_DURATION,
            unit="s",
            description="How long one handler ran, by event type and handler.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.store_failures = meter.create_counter(
            STORE_FAILURES, unit="{failure}", description="Failed calls to the idempotency store."
        )


# Taken from the global providers once the application has set them. Until then, the API's
# defaults would drop everything: a delivery then makes no span and builds no attribute,
# and the providers are looked at again at most once a second (`LOOK_EVERY`).
_tracer: trace.Tracer | None = None
_instruments: Instruments | None = None
_next_look = 0.0
LOOK_EVERY = 1.0


def _look() -> None:
    global _tracer, _instruments, _next_look  # noqa: PLW0603 - set once each
    now = time.monotonic()
    if now < _next_look:
        return
    _next_look = now + LOOK_EVERY
    if _tracer is None:
        tracer_provider = trace.get_tracer_provider()
        if not isinstance(tracer_provider, (trace.NoOpTracerProvider, trace.ProxyTracerProvider)):
            _tracer = tracer_provider.get_tracer(NAME, _version())
    if _instruments is None:
        meter_provider = metrics.get_meter_provider()
        # The API's own are a no-op provider and a proxy (a private class) until one is set.
        if not isinstance(meter_provider, metrics.NoOpMeterProvider) and (
            type(meter_provider).__name__ != "_ProxyMeterProvider"
        ):
            _instruments = Instruments(meter_provider.get_meter(NAME, _version()))


# The answers that are module constants, by identity: their words are read once.
_WORDS: dict[int, tuple[str, str | None]] = {}


def type_name(error: BaseException) -> str:
    """``error.type``: the exception's fully qualified type (never its message)."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def handler_name(handler: Callable[..., object]) -> str:
    """A handler's qualified name (its code, never data): its span's name."""
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return safe_label(str(name))


def function_name(handler: Callable[..., object]) -> str:
    """``code.function.name``: the handler's module and qualified name, as the convention asks."""
    module = getattr(handler, "__module__", None)
    name = handler_name(handler)
    if not isinstance(module, str):
        return name
    full = f"{module}.{name}"
    return full if len(full) <= 256 and full.isprintable() else name  # code, not data: bounded all the same


def event_type_label(event_type: str) -> str:
    """The event type for a span's name and the metrics; ``unknown`` when not shaped as one."""
    return event_type if _EVENT_TYPE_SHAPE.fullmatch(event_type) else "unknown"


def outcome_of(response: WebhookResponse) -> tuple[str, str | None]:
    """The answer's word (``status`` or ``error`` of its body) and, when rejected, the reason.

    A delivery refused before its handlers (400, 413, 422) is ``rejected``, its body's
    ``error`` word the reason; every other answer is its own word (``processed``,
    ``in_flight``, ``handler_failed``...).
    """
    known = _WORDS.get(id(response))
    if known is not None:
        return known
    try:
        fields = json.loads(response.body)
        word = str(fields.get("status") or fields.get("error") or "unknown")
    except (ValueError, AttributeError):
        word = "unknown"
    if 400 <= response.status_code < 500 and response.status_code != 409:
        return "rejected", safe_label(word)
    return safe_label(word), None


for _answer in (
    PROCESSED, IGNORED, DUPLICATE, STALE, TEST_CUSTOMER, NOT_BYTES, UNKNOWN_TENANT, IN_FLIGHT,
    HANDLER_FAILED, STORE_UNAVAILABLE, NOT_COMMITTED, RESOLVER_FAILED,
):  # fmt: skip
    _WORDS[id(_answer)] = outcome_of(_answer)


class Delivery:
    """One delivery's span (maybe not recording) and what its metrics need."""

    __slots__ = ("context", "event_type", "instruments", "recording", "span", "started", "token", "tracer")

    def __init__(
        self,
        tracer: trace.Tracer | None,
        instruments: Instruments | None,
        started: float | None = None,
        *,
        current: bool = True,
    ) -> None:
        now = time.perf_counter()
        self.started = now if started is None else started
        self.tracer = tracer
        self.instruments = instruments
        # A child of the current span (the framework's request span), or a root span. It
        # starts at ``started`` (a perf_counter reading), when given: a refused body's
        # delivery began when its body began to arrive.
        start_time = None if started is None else time.time_ns() - int((now - started) * 1e9)
        self.span = (
            trace.INVALID_SPAN
            if tracer is None
            else tracer.start_span(DELIVERY_SPAN, kind=SpanKind.CONSUMER, start_time=start_time)
        )
        self.recording = self.span.is_recording()  # not without a tracer, nor when sampled out
        self.event_type: str | None = None
        self.context: Context | None = None
        self.token: object = None
        if self.recording:
            self.span.set_attributes(_FIXED)
            self.context = trace.set_span_in_context(self.span)
            if current:
                self.token = otel_context.attach(self.context)

    def parsed(self, event: Event, delivery: WebhookDelivery) -> None:
        """The event is known: name the span for its type; its id and attempt."""
        self.event_type = event_type_label(event.event_type)
        if not self.recording:
            return
        span = self.span
        span.update_name(f"process {self.event_type}")
        span.set_attribute(MESSAGE_ID, delivery.webhook_id)
        span.set_attribute(EVENT_TYPE, self.event_type)
        if delivery.attempt is not None:
            span.set_attribute(ATTEMPT, delivery.attempt)
        if delivery.tenant is not None:
            span.set_attribute(TENANT, delivery.tenant)

    def answered(self, response: WebhookResponse) -> None:
        """Record the answer: the span's outcome and status, the metrics; end the span."""
        outcome, reason = outcome_of(response)
        attributes: dict[str, AttributeValue] = {OUTCOME: outcome, STATUS_CODE: response.status_code}
        if reason is not None:
            attributes[REASON] = reason
        failed = response.status_code >= 500
        if failed:
            attributes[ERROR_TYPE] = outcome
        self._end(attributes, failed=failed)

    def raised(self, error: BaseException) -> None:
        """handle() raised (a mistake of set-up, an interrupt) or was cancelled."""
        name = type_name(error)
        outcome = "cancelled" if name == "asyncio.exceptions.CancelledError" else "error"
        self._end({OUTCOME: outcome, ERROR_TYPE: name}, failed=True)

    def _end(self, attributes: dict[str, AttributeValue], *, failed: bool) -> None:
        elapsed = time.perf_counter() - self.started
        if self.event_type is not None:
            attributes[EVENT_TYPE] = self.event_type
        if self.instruments is not None:
            self.instruments.deliveries.add(1, attributes)
            self.instruments.delivery_duration.record(elapsed, attributes)
        if not self.recording:
            return
        span = self.span
        span.set_attributes(attributes)
        if failed:
            span.set_status(_ERROR)
        span.end()
        if self.token is not None:
            otel_context.detach(self.token)  # type: ignore[arg-type]

    def handler_started(self, handler: Callable[..., object]) -> HandlerRun | None:
        """A handler starts: its span (child of this delivery's), its clock; or nothing to record."""
        if not self.recording and self.instruments is None:
            return None
        return HandlerRun(self, handler)

    def store_failed(self, operation: str, error: BaseException) -> None:
        """The idempotency store failed to ``operation`` (acquire, complete, release)."""
        if self.instruments is not None:
            self.instruments.store_failures.add(1, {STORE_OPERATION: operation, ERROR_TYPE: type_name(error)})


class HandlerRun:
    """One handler's run: a span when the delivery records, and a duration."""

    __slots__ = ("context", "event_type", "function", "instruments", "span", "started")

    def __init__(self, delivery: Delivery, handler: Callable[..., object]) -> None:
        self.function = function_name(handler)
        self.instruments = delivery.instruments
        self.event_type = delivery.event_type
        self.context: Context | None = None
        self.span: trace.Span | None = None
        if delivery.recording and delivery.tracer is not None:
            # The delivery's context, not the current one: a delivery handed over by a
            # cancelled request runs its next handlers in a task copied under this one's span.
            self.span = delivery.tracer.start_span(
                handler_name(handler),
                context=delivery.context,
                kind=SpanKind.INTERNAL,
                attributes={FUNCTION: self.function},
            )
            self.context = trace.set_span_in_context(self.span, delivery.context)
        self.started = time.perf_counter()

    def call(self, function: Callable[..., _T], *args: object) -> _T:
        """``function(*args)`` with this handler's span current, in the calling thread."""
        if self.context is None:
            return function(*args)
        token = otel_context.attach(self.context)
        try:
            return function(*args)
        finally:
            otel_context.detach(token)

    async def awaiting(self, awaitable: Awaitable[_T]) -> _T:
        """Await an async handler with its span current (attached and detached in this task)."""
        if self.context is None:
            return await awaitable
        token = otel_context.attach(self.context)
        try:
            return await awaitable
        finally:
            otel_context.detach(token)

    def ended(self, error: BaseException | None) -> None:
        """The handler returned (``None``) or raised ``error``: recorded by its type only."""
        elapsed = time.perf_counter() - self.started
        attributes: dict[str, AttributeValue] = {FUNCTION: self.function}
        if self.event_type is not None:
            attributes[EVENT_TYPE] = self.event_type
        if error is not None:
            attributes[ERROR_TYPE] = type_name(error)
        if self.instruments is not None:
            self.instruments.handler_duration.record(elapsed, attributes)
        span = self.span
        if span is None:
            return
        if error is not None:
            span.set_attribute(ERROR_TYPE, attributes[ERROR_TYPE])
            span.set_status(_ERROR)  # never record_exception(): it stores the message
        span.end()


def begin(started: float | None = None, current: bool = True) -> Delivery | None:  # noqa: FBT001, FBT002 - _telemetry's call
    """A delivery starts: its span, current from now on when it records; ``None``: nothing to record.

    ``started``: when it began, a `time.perf_counter` reading, if earlier than now.
    ``current``: whether its span becomes the current one (not in a FastAPI dependency,
    whose context FastAPI's own spans enter and leave around it).
    """
    if _tracer is None or _instruments is None:
        _look()
        if _tracer is None and _instruments is None:
            return None
    return Delivery(_tracer, _instruments, started, current=current)
