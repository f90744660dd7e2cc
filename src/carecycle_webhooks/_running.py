"""Running handlers: threads, event loops and cancellations, for the dispatcher.

- `PROPAGATED`: what a handler raises that stops the process and is raised on.
- `run_to_completion`: an async handler's coroutine, run from synchronous code.
- `outlast_cancellation`: wait for what must not be cut short (a handler's thread, the
  store call that records an outcome), whatever cancellations arrive.
- `keep_handed_over`: hold a task that finishes a delivery whose request was cancelled
  until it ends, and retrieve its exception so that asyncio never logs it (PHI).

asyncio is imported where it is used: the synchronous path imports this module, and a
process that runs no async handler never needs asyncio (an AWS Lambda function's cold
start is shorter without it).
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable

__all__ = ["PROPAGATED", "cancel_requested", "keep_handed_over", "outlast_cancellation", "run_to_completion"]


# Raised by a handler, these stop the process: they propagate (after the lease is
# released). Any other BaseException a handler raises is a handler failure.
PROPAGATED = (KeyboardInterrupt, SystemExit)


# Deliveries handed over by cancelled requests, kept alive until their outcome is recorded
# (the event loop only keeps weak references to its tasks).
_handed_over: set[asyncio.Task[Any]] = set()


def keep_handed_over(task: asyncio.Task[Any]) -> None:
    """Keep ``task`` alive until it ends (the loop holds its tasks weakly), then forget it."""
    _handed_over.add(task)
    task.add_done_callback(_forget_handed_over)


def _forget_handed_over(task: asyncio.Task[Any]) -> None:
    _handed_over.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so that asyncio never logs it (it may carry PHI)


async def outlast_cancellation(work: asyncio.Future[Any]) -> bool:
    """Wait for ``work`` to end, whatever cancellations arrive meanwhile; whether one did.

    For what must not be cut short: a handler's thread (it cannot be stopped, and its
    outcome must be recorded) and the store call that records an outcome.
    """
    import asyncio  # the caller's loop has loaded it; see the module docstring

    cancelled = False
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:  # noqa: PERF203 - rare: the loop turns once per cancellation
            cancelled = True
    return cancelled


def cancel_requested() -> bool:
    """Whether the running task was asked to stop, as far as this Python can tell.

    A ``CancelledError`` that a handler raises of its own accord is a failure of that
    handler. Python 3.11 counts the requests to cancel a task; 3.10 cannot tell, and a
    ``CancelledError`` is then taken for a cancellation.
    """
    import asyncio  # the caller's loop has loaded it; see the module docstring

    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable


def run_to_completion(awaitable: Awaitable[object]) -> object:
    """Run an awaitable (an async handler's, an async secret resolver's) from synchronous code."""
    import asyncio  # only for async handlers and resolvers; see the module docstring

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    # A loop is already running in this thread (handle() called from async code):
    # asyncio.run() cannot nest, so the coroutine gets a loop in a helper thread.
    failure: list[BaseException] = []
    result: list[object] = []
    context = contextvars.copy_context()

    def run() -> None:
        try:
            result.append(context.run(asyncio.run, _await(awaitable)))
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="carecycle-webhooks-async-handler")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
