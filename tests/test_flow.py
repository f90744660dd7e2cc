"""The delivery flow, driven by hand: every decision, with no store, thread or event loop.

Each test sends the flow the outcomes a driver would send (a `Claim`, ``None`` for a
success, a `Failed`) or throws in what a driver throws (an interrupt, a cancellation),
and checks the steps it asks for and its answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from carecycle_webhooks._flow import (
    ACQUIRE,
    NO_HANDLER,
    Complete,
    Failed,
    HandlerFailed,
    KeepMissed,
    Note,
    Refused,
    Release,
    RunHandler,
    StoreFailed,
    TestCustomer,
    Wait,
    delivery_flow,
)
from carecycle_webhooks._idempotency import Claim, CommitFailed
from carecycle_webhooks._responses import (
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

if TYPE_CHECKING:
    from carecycle_webhooks._flow import Flow, Outcome, Step

CLAIM = Claim("acquired", "token-1")
DOWN = ConnectionError("store unreachable")
BOOM = ValueError("a handler failed")
ROLLED_BACK = CommitFailed("the delivery's transaction was not committed")


@pytest.fixture(autouse=True)
def real_retry_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("carecycle_webhooks._flow.RETRY_DELAYS", (0.1, 0.2, 0.4, 0.8))


def drive(flow: Flow, outcomes: list[Outcome]) -> tuple[list[Step], WebhookResponse]:
    """Send ``outcomes`` in order for the steps that take time; notes get ``None``."""
    steps: list[Step] = []
    pending = iter(outcomes)
    try:
        step = next(flow)
        while True:
            steps.append(step)
            step = flow.send(None if isinstance(step, Note) else next(pending))
    except StopIteration as done:
        assert next(pending, "none left") == "none left"
        return steps, done.value


def test_no_handler_is_ignored_and_touches_no_store() -> None:
    assert drive(delivery_flow(0, with_store=True), []) == ([NO_HANDLER], IGNORED)


@pytest.mark.parametrize(
    ("status", "answer"),
    [("done", DUPLICATE), ("in_flight", IN_FLIGHT), ("ACQUIRED", STORE_UNAVAILABLE)],
)
def test_a_lease_refused_runs_nothing(status: str, answer: WebhookResponse) -> None:
    claim = Claim(status, "")  # type: ignore[arg-type]  # an odd status too
    assert drive(delivery_flow(2, with_store=True), [claim]) == ([ACQUIRE, Refused(claim)], answer)


def test_a_failed_acquire_runs_nothing() -> None:
    steps, answer = drive(delivery_flow(1, with_store=True), [Failed(DOWN)])
    assert (steps, answer) == ([ACQUIRE, StoreFailed("acquire", DOWN)], STORE_UNAVAILABLE)


def test_every_handler_then_complete() -> None:
    steps, answer = drive(delivery_flow(2, with_store=True), [CLAIM, None, None, None])
    assert (steps, answer) == ([ACQUIRE, RunHandler(0), RunHandler(1), Complete(CLAIM)], PROCESSED)


def test_without_a_store_only_the_handlers_run() -> None:
    assert drive(delivery_flow(2, with_store=False), [None, None]) == (
        [RunHandler(0), RunHandler(1)],
        PROCESSED,
    )
    failed = drive(delivery_flow(2, with_store=False), [Failed(BOOM)])
    assert failed == ([RunHandler(0), HandlerFailed(0, BOOM)], HANDLER_FAILED)


def test_a_handler_failure_is_logged_then_the_lease_freed_and_the_rest_not_run() -> None:
    steps, answer = drive(delivery_flow(3, with_store=True), [CLAIM, None, Failed(BOOM), None])
    assert steps == [ACQUIRE, RunHandler(0), RunHandler(1), HandlerFailed(1, BOOM), Release(CLAIM)]
    assert answer == HANDLER_FAILED


def test_a_failed_release_is_logged_and_the_answer_stays_500() -> None:
    steps, answer = drive(delivery_flow(1, with_store=True), [CLAIM, Failed(BOOM), Failed(DOWN)])
    assert steps[-2:] == [Release(CLAIM), StoreFailed("release", DOWN)]
    assert answer == HANDLER_FAILED


def start(flow: Flow, *outcomes: Outcome) -> Step:
    step = next(flow)
    for outcome in outcomes:
        step = flow.send(outcome)
    return step


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(3)])
def test_an_interrupt_thrown_in_is_logged_then_the_lease_freed_then_raised_on(
    interrupt: BaseException,
) -> None:
    flow = delivery_flow(2, with_store=True)
    assert start(flow, CLAIM) == RunHandler(0)
    assert flow.throw(interrupt) == HandlerFailed(0, interrupt, interrupted=True)
    assert flow.send(None) == Release(CLAIM)
    with pytest.raises(type(interrupt)) as raised:
        flow.send(None)
    assert raised.value is interrupt


def test_a_cancellation_thrown_in_frees_the_lease_unlogged_then_is_raised_on() -> None:
    flow = delivery_flow(1, with_store=True)
    assert start(flow, CLAIM) == RunHandler(0)
    cancelled = asyncio.CancelledError()
    assert flow.throw(cancelled) == Release(CLAIM)
    with pytest.raises(asyncio.CancelledError) as raised:
        flow.send(None)
    assert raised.value is cancelled


def test_a_release_cut_short_is_run_again_to_its_end() -> None:
    flow = delivery_flow(1, with_store=True)
    start(flow, CLAIM)
    assert flow.throw(asyncio.CancelledError()) == Release(CLAIM)
    again = asyncio.CancelledError()
    assert flow.throw(again) == Release(CLAIM, to_the_end=True)
    assert flow.send(Failed(DOWN)) == StoreFailed("release", DOWN)
    with pytest.raises(asyncio.CancelledError) as raised:
        flow.send(None)
    assert raised.value is again


@pytest.mark.parametrize("recorded", [True, False])
def test_a_complete_cut_short_is_run_again_to_its_end_and_kept_if_it_fails(recorded: bool) -> None:
    flow = delivery_flow(1, with_store=True)
    assert start(flow, CLAIM, None) == Complete(CLAIM)
    assert flow.throw(asyncio.CancelledError()) == Complete(CLAIM, to_the_end=True)
    if not recorded:
        assert flow.send(Failed(DOWN)) == StoreFailed("complete", DOWN)
        assert flow.send(None) == KeepMissed(CLAIM)
    with pytest.raises(asyncio.CancelledError):
        flow.send(None)


def test_a_failed_complete_is_tried_again_and_answers_200_once_recorded() -> None:
    steps, answer = drive(
        delivery_flow(1, with_store=True),
        [CLAIM, None, Failed(DOWN, 10.0), None, Failed(DOWN, 10.2), None, None],
    )
    assert steps[2:] == [
        Complete(CLAIM),
        StoreFailed("complete", DOWN),
        Wait(0.1),
        Complete(CLAIM),
        StoreFailed("complete", DOWN),
        Wait(0.2),
        Complete(CLAIM),
    ]
    assert answer == PROCESSED


def test_a_complete_failing_every_time_is_kept_after_the_last_attempt() -> None:
    failures: list[Outcome] = []
    for attempt in range(5):
        failures += [Failed(DOWN, attempt * 0.5), None]  # each failure, then its wait
    steps, answer = drive(delivery_flow(1, with_store=True), [CLAIM, None, *failures[:-1]])
    assert [step for step in steps if isinstance(step, Wait)] == [Wait(0.1), Wait(0.2), Wait(0.4), Wait(0.8)]
    assert steps.count(Complete(CLAIM)) == 5
    assert steps[-2:] == [StoreFailed("complete", DOWN), KeepMissed(CLAIM)]
    assert answer == PROCESSED  # handled: Svix must not retry it


def test_no_retry_of_a_complete_past_the_retry_window() -> None:
    # A slow store: the second attempt fails 2.9 s after the first; 0.2 s more would pass 3 s.
    outcomes: list[Outcome] = [CLAIM, None, Failed(DOWN, 100.0), None, Failed(DOWN, 102.9)]
    steps, answer = drive(delivery_flow(1, with_store=True), outcomes)
    assert steps[2:] == [
        Complete(CLAIM),
        StoreFailed("complete", DOWN),
        Wait(0.1),
        Complete(CLAIM),
        StoreFailed("complete", DOWN),
        KeepMissed(CLAIM),
    ]
    assert answer == PROCESSED


def test_a_cancellation_while_waiting_to_retry_keeps_the_mark_and_is_raised_on() -> None:
    flow = delivery_flow(1, with_store=True)
    assert start(flow, CLAIM, None, Failed(DOWN), None) == Wait(0.1)
    assert flow.throw(asyncio.CancelledError()) == KeepMissed(CLAIM)
    with pytest.raises(asyncio.CancelledError):
        flow.send(None)


def test_a_flow_closed_while_a_handler_runs_asks_for_nothing_more() -> None:
    flow = delivery_flow(1, with_store=True)
    assert start(flow, CLAIM) == RunHandler(0)
    flow.close()  # GeneratorExit: no Release asked of a driver that is gone


# ---------------------------------------------------------------- a transactional store's failed commit


def test_a_commit_that_failed_answers_503_at_once_with_no_retry_and_no_mark_kept() -> None:
    # The handlers' writes were rolled back with the done mark: a 2xx would lose the event.
    steps, answer = drive(delivery_flow(1, with_store=True), [CLAIM, None, Failed(ROLLED_BACK, 10.0)])
    assert steps == [ACQUIRE, RunHandler(0), Complete(CLAIM), StoreFailed("complete", ROLLED_BACK)]
    assert answer == NOT_COMMITTED
    assert answer.status_code == 503


def test_a_commit_that_failed_on_a_retry_of_the_done_mark_answers_503() -> None:
    steps, answer = drive(
        delivery_flow(1, with_store=True),
        [CLAIM, None, Failed(DOWN, 10.0), None, Failed(ROLLED_BACK, 10.1)],
    )
    assert steps[2:] == [
        Complete(CLAIM),
        StoreFailed("complete", DOWN),
        Wait(0.1),
        Complete(CLAIM),
        StoreFailed("complete", ROLLED_BACK),
    ]
    assert answer == NOT_COMMITTED


def test_a_commit_that_failed_on_the_last_attempt_answers_503_and_keeps_no_mark() -> None:
    failures: list[Outcome] = []
    for attempt in range(4):
        failures += [Failed(DOWN, attempt * 0.5), None]
    steps, answer = drive(
        delivery_flow(1, with_store=True), [CLAIM, None, *failures, Failed(ROLLED_BACK, 2.0)]
    )
    assert steps[-2:] == [Complete(CLAIM), StoreFailed("complete", ROLLED_BACK)]
    assert not any(isinstance(step, KeepMissed) for step in steps)
    assert answer == NOT_COMMITTED


def test_a_complete_cut_short_whose_commit_failed_keeps_no_mark() -> None:
    flow = delivery_flow(1, with_store=True)
    assert start(flow, CLAIM, None) == Complete(CLAIM)
    assert flow.throw(asyncio.CancelledError()) == Complete(CLAIM, to_the_end=True)
    assert flow.send(Failed(ROLLED_BACK)) == StoreFailed("complete", ROLLED_BACK)
    with pytest.raises(asyncio.CancelledError):
        flow.send(None)  # raised on: no KeepMissed asked for


def test_a_stale_claim_is_acknowledged_and_runs_nothing() -> None:
    stale = Claim("stale")
    steps, answer = drive(delivery_flow(2, with_store=True), [stale])
    assert steps == [ACQUIRE, Refused(stale)]
    assert answer is STALE


def test_a_test_customer_is_skipped_before_the_store_is_asked() -> None:
    steps, answer = drive(delivery_flow(2, with_store=True, test_customer=True), [])
    assert steps == [TestCustomer()]
    assert answer is TEST_CUSTOMER
