"""What the dispatcher logs about a delivery's steps: ids, types and places, never PHI.

The flow (`_flow`) says what happened; both drivers log it through `log_note`, so the
sync and async paths write the same lines. Handlers' exception messages are left out
unless the dispatcher was built with ``log_exception_messages=True``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING

from ._flow import HandlerFailed, Refused, StoreFailed, TestCustomer

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._flow import Note
    from ._models import Event
    from ._verify import WebhookDelivery

__all__ = ["Throttle", "log_note", "log_store_failure", "safe_label"]

logger = logging.getLogger("carecycle_webhooks")


class Throttle:
    """A warning that many requests may call for, let through at most once every ``every`` seconds.

    Anyone who can reach the endpoint can make it refuse requests: one line now and then,
    with how many were refused, tells the operator as much as a line each, and the logs
    stay bounded. `note` counts one occurrence; `due` says whether to log now.
    """

    __slots__ = ("_count", "_every", "_last", "_lock")

    def __init__(self, every: float) -> None:
        self._every = every
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._count = 0

    def note(self) -> None:
        """Count one occurrence."""
        with self._lock:
            self._count += 1

    def due(self) -> int | None:
        """How many occurred since the last line, if a line is due now; else ``None``."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._every:
                return None
            self._last = now
            count, self._count = self._count, 0
            return count


def safe_label(value: str) -> str:
    """Printable, bounded text for a log (event types come from a signed payload, still)."""
    label = value[:100]
    return label if label.isprintable() else repr(label)


def _handler_name(handler: Callable[..., object]) -> str:
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{name}" if module else str(name)


def _frames(error: BaseException) -> str:
    # Where it failed, without the exception's message, which may hold PHI.
    return "".join(traceback.format_list(traceback.extract_tb(error.__traceback__))).rstrip()


def log_note(
    note: Note,
    handlers: tuple[Callable[..., object], ...],
    event: Event,
    delivery: WebhookDelivery,
    *,
    with_messages: bool,
) -> None:
    """Log a note of the flow (a `KeepMissed` is the dispatcher's, not a log line)."""
    if isinstance(note, HandlerFailed):
        _log_handler_failure(note, handlers[note.index], event, delivery, with_messages=with_messages)
    elif isinstance(note, StoreFailed):
        log_store_failure(note.action, note.error, delivery)
    elif isinstance(note, Refused):
        status: object = note.claim.status
        if status == "done":
            logger.info("webhook %s already processed: handlers not run again", delivery.webhook_id)
        elif status == "in_flight":
            logger.info("webhook %s is being processed by another worker: 409", delivery.webhook_id)
        elif status == "stale":
            logger.info(
                "webhook %s: a newer update of its customer was processed already: skipped as stale",
                delivery.webhook_id,
            )
        else:
            logger.error(
                "idempotency store answered acquire %s with an unknown status %s",
                delivery.webhook_id,
                safe_label(repr(status)),
                extra={"webhook_id": delivery.webhook_id},
            )
    elif isinstance(note, TestCustomer):
        logger.info("webhook %s: %s of a test customer: skipped", delivery.webhook_id, event.event_type)
    else:
        logger.debug("webhook %s: no handler for %s", delivery.webhook_id, safe_label(event.event_type))


def log_store_failure(action: str, error: BaseException, delivery: WebhookDelivery) -> None:
    """The store failed to ``action`` (its errors name hosts and ids, not payloads)."""
    logger.error(
        "idempotency store failed to %s %s: %s: %s",
        action,
        delivery.webhook_id,
        type(error).__qualname__,
        error,
        extra={"webhook_id": delivery.webhook_id},
    )


def _log_handler_failure(
    note: HandlerFailed,
    handler: Callable[..., object],
    event: Event,
    delivery: WebhookDelivery,
    *,
    with_messages: bool,
) -> None:
    extra = {"webhook_id": delivery.webhook_id, "event_type": event.event_type}
    # KeyboardInterrupt and SystemExit are raised on, to stop the process as asked.
    what = "was interrupted" if note.interrupted else "failed"
    if with_messages:
        logger.error(
            "handler %s %s on %s %s (attempt %s)",
            _handler_name(handler),
            what,
            safe_label(event.event_type),
            delivery.webhook_id,
            delivery.attempt,
            exc_info=note.error,
            extra=extra,
        )
        return
    logger.error(
        "handler %s %s on %s %s (attempt %s): %s (message hidden: it may hold PHI)\n%s",
        _handler_name(handler),
        what,
        safe_label(event.event_type),
        delivery.webhook_id,
        delivery.attempt,
        type(note.error).__qualname__,
        _frames(note.error),
        extra=extra,
    )
