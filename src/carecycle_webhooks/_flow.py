"""One delivery's decisions, free of I/O: a generator that the dispatcher's drivers run.

`delivery_flow` yields steps and is sent their outcomes, in the manner of httpx's
``auth_flow``: the sync driver (`_drivers.drive`) and the async driver
(`_drivers_async.drive_async`) only carry the steps out (a store call, a handler, a log
line, a wait) and send back what happened. Every decision is taken here, once:

- a test customer's event, with ``skip_test_customers``: skipped (200, nothing runs);
- no handler: ignored (200);
- the store refuses the lease: duplicate (200), stale (200: with ``skip_out_of_order``, a
  newer update of the customer ran already), in flight (409), or an unknown status,
  which is a store failure like a failed acquire (503, nothing runs);
- a handler fails: logged first, then the lease is freed (500);
- a handler's ``KeyboardInterrupt`` or ``SystemExit`` (logged), or a cancellation,
  thrown in by the driver: the lease is freed, then it is raised on;
- every handler returned: the id is marked done (200). A mark the store fails to record
  is tried again within the request, a few times over about `RETRY_WITHIN` seconds; past
  that, the driver keeps it, and the dispatcher's next delivery records it first;
- unless the store raised `CommitFailed`: a transactional store, whose commit of the
  handlers' writes with the done mark failed, so nothing of them remains (503, so that
  Svix retries; no retry here, no mark kept: it would mark done what never took effect);
- a ``complete`` or ``release`` cut short by a cancellation is run again to its end.

Outcomes: a `Claim` for `Acquire`, ``None`` for a success, a `Failed` for a failure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import cast

from ._idempotency import Claim, CommitFailed
from ._responses import (
    DUPLICATE,
    HANDLER_FAILED,
    IGNORED,
    IN_FLIGHT,
    NOT_COMMITTED,
    PROCESSED,
    STALE,
    STORE_UNAVAILABLE,
    TEST_CUSTOMER,
    WebhookResponse,
)
from ._running import PROPAGATED

__all__ = [
    "ACQUIRE",
    "NO_HANDLER",
    "RETRY_DELAYS",
    "RETRY_WITHIN",
    "Acquire",
    "Complete",
    "Failed",
    "Flow",
    "HandlerFailed",
    "KeepMissed",
    "NoHandler",
    "Note",
    "Outcome",
    "Refused",
    "Release",
    "RunHandler",
    "Step",
    "StoreFailed",
    "TestCustomer",
    "Wait",
    "delivery_flow",
]

RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8)
"""Seconds between the attempts to record a done mark the store failed to record..."""

RETRY_WITHIN = 3.0
"""...and no further attempt once this many seconds have passed since the first failure."""


# ---------------------------------------------------------------- outcomes


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """A store call or a handler raised ``error``; ``at`` is the driver's monotonic time."""

    error: BaseException
    at: float = 0.0


# ---------------------------------------------------------------- steps that take time


@dataclasses.dataclass(frozen=True, slots=True)
class Acquire:
    """Ask the store for the delivery's lease; send back its `Claim` or a `Failed`."""


ACQUIRE = Acquire()


@dataclasses.dataclass(frozen=True, slots=True)
class RunHandler:
    """Run handler ``index``; send back ``None`` or a `Failed`, or throw its interrupt in."""

    index: int


@dataclasses.dataclass(frozen=True, slots=True)
class Complete:
    """Mark the delivery done; ``to_the_end``: whatever cancellations arrive meanwhile."""

    claim: Claim
    to_the_end: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """Free the delivery's lease; ``to_the_end``: whatever cancellations arrive meanwhile."""

    claim: Claim
    to_the_end: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """Sleep this many seconds before the next attempt."""

    seconds: float


# ---------------------------------------------------------------- notes: done at once, nothing sent back


class Note:
    """A step done at once (a log line, a missed mark kept); the driver sends back ``None``."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class NoHandler(Note):
    """Log that the event has no handler."""


NO_HANDLER = NoHandler()


@dataclasses.dataclass(frozen=True, slots=True)
class TestCustomer(Note):
    """Log that the event, about a test customer, is skipped (``skip_test_customers``)."""

    __test__ = False  # not a test class, whatever pytest's collector thinks of its name


TEST_CUSTOMER_NOTE = TestCustomer()


@dataclasses.dataclass(frozen=True, slots=True)
class Refused(Note):
    """Log why the store did not hand the lease over (``claim.status``)."""

    claim: Claim


@dataclasses.dataclass(frozen=True, slots=True)
class StoreFailed(Note):
    """Log that the store failed to ``action`` (acquire, complete, release)."""

    action: str
    error: BaseException


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerFailed(Note):
    """Log that handler ``index`` failed, or was ``interrupted`` (the error is raised on)."""

    index: int
    error: BaseException
    interrupted: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class KeepMissed(Note):
    """Keep the done mark the store failed to record, for the dispatcher's next delivery."""

    claim: Claim


# The first handlers' steps, made once: a delivery creates as few objects as it can.
_RUN_HANDLER = tuple(RunHandler(index) for index in range(8))

Step = Acquire | RunHandler | Complete | Release | Wait | Note
Outcome = Claim | Failed | None
Flow = Generator[Step, Outcome, WebhookResponse]


# ---------------------------------------------------------------- the flow


def _refused(status: object) -> WebhookResponse:
    """The answer when the store did not hand the lease over."""
    if status == "done":
        return DUPLICATE
    if status == "stale":
        return STALE
    if status == "in_flight":
        return IN_FLIGHT
    return STORE_UNAVAILABLE  # a store that breaks the protocol: a store failure, run nothing


def delivery_flow(  # noqa: C901, PLR0912 - every decision, in one place
    handler_count: int, *, with_store: bool, test_customer: bool = False
) -> Flow:
    """The steps of one delivery to ``handler_count`` handlers; returns the answer.

    Args:
        handler_count: How many handlers the event has (0: ignored).
        with_store: Whether the dispatcher has an idempotency store.
        test_customer: The event is about a test customer, and the dispatcher skips those.
    """
    if test_customer:
        yield TEST_CUSTOMER_NOTE
        return TEST_CUSTOMER
    if not handler_count:
        yield NO_HANDLER
        return IGNORED
    claim: Claim | None = None
    if with_store:
        outcome = yield ACQUIRE
        if isinstance(outcome, Failed):  # any store failure: answer 503, run nothing
            yield StoreFailed("acquire", outcome.error)
            return STORE_UNAVAILABLE
        claim = cast("Claim", outcome)
        if claim.status != "acquired":
            yield Refused(claim)
            return _refused(claim.status)
    for index in range(handler_count):
        try:
            outcome = yield _RUN_HANDLER[index] if index < len(_RUN_HANDLER) else RunHandler(index)
        except GeneratorExit:
            raise
        except BaseException as error:
            # KeyboardInterrupt or SystemExit (raised on, to stop the process as asked), or
            # the request cancelled: free the lease, so that Svix's retry runs the handlers.
            if isinstance(error, PROPAGATED):
                yield HandlerFailed(index, error, interrupted=True)
            if claim is not None:
                yield from _release(claim)
            raise
        if isinstance(outcome, Failed):
            yield HandlerFailed(index, outcome.error)  # logged before the lease is freed
            if claim is not None:
                yield from _release(claim)
            return HANDLER_FAILED
    if claim is not None:
        # The handlers succeeded: the answer is 200 whatever happens here (Svix must not
        # retry), unless a transactional store rolled their writes back (CommitFailed).
        failed = yield from _record(Complete(claim))
        if failed is not None:
            return (yield from _retry_complete(claim, failed))
    return PROCESSED


def _record(step: Complete | Release) -> Generator[Step, Outcome, Failed | None]:
    """``step``, and its failure if any; if a cancellation cuts it short, see `_cut_short`."""
    try:
        outcome = yield step
    except GeneratorExit:
        raise
    except BaseException:
        yield from _cut_short(step)
        raise
    return outcome if isinstance(outcome, Failed) else None


def _cut_short(step: Complete | Release) -> Generator[Step, Outcome, None]:
    """Run ``step`` again to its end, whatever cancellations arrive; the caller raises on.

    A repeated complete or release changes nothing: the handlers' outcome is recorded
    anyway (a success marked done; a failure's lease freed, so a retry need not wait).
    """
    outcome = yield dataclasses.replace(step, to_the_end=True)
    if isinstance(outcome, Failed):
        yield StoreFailed("complete" if isinstance(step, Complete) else "release", outcome.error)
        if isinstance(step, Complete) and not isinstance(outcome.error, CommitFailed):
            yield KeepMissed(step.claim)


def _release(claim: Claim) -> Generator[Step, Outcome, None]:
    failed = yield from _record(Release(claim))
    if failed is not None:  # the lease expires on its own
        yield StoreFailed("release", failed.error)


def _retry_complete(claim: Claim, failed: Failed) -> Generator[Step, Outcome, WebhookResponse]:
    """Try a done mark again for a few seconds after ``failed``; past that, keep it.

    A `CommitFailed` ends it at once: nothing was committed, Svix must retry (503).
    """
    first_failure = failed.at
    delays = iter(RETRY_DELAYS)
    while True:
        yield StoreFailed("complete", failed.error)
        if isinstance(failed.error, CommitFailed):
            return NOT_COMMITTED
        delay = next(delays, None)
        if delay is None or failed.at + delay - first_failure > RETRY_WITHIN:
            break
        try:
            yield Wait(delay)
        except GeneratorExit:
            raise
        except BaseException:  # cancelled while waiting: keep the mark, then raise on
            yield KeepMissed(claim)
            raise
        again = yield from _record(Complete(claim))
        if again is None:
            return PROCESSED
        failed = again
    yield KeepMissed(claim)
    return PROCESSED
