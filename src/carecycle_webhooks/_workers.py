"""Whether this process serves with several worker processes: the in-memory store says so.

Each worker of ``gunicorn --workers 4`` or ``uvicorn --workers 2`` has its own memory, so an
`InMemoryIdempotencyStore` there lets a retry that reaches another worker run the handlers
again. Where the store is built inside such a server, this tells, cheaply and without
guessing: the server's own objects are on the call stack while it loads the application
(gunicorn's arbiter or worker, uvicorn's server or config, each with its number of
workers), and both read ``WEB_CONCURRENCY`` for their default number of workers.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import types

__all__ = ["several_workers"]

_SERVERS = ("gunicorn", "uvicorn")


def _workers_of(candidate: object) -> int | None:
    """The number of workers that a gunicorn or uvicorn object knows, if it is one."""
    if type(candidate).__module__.split(".")[0] not in _SERVERS:
        return None
    for settings in (getattr(candidate, "cfg", None), getattr(candidate, "config", None), candidate):
        workers = getattr(settings, "workers", None)
        if isinstance(workers, int) and not isinstance(workers, bool):
            return workers
    return None


def several_workers() -> str | None:
    """What shows that this process is one of several workers of a server, or None."""
    frame: types.FrameType | None = sys._getframe(1)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - once per store built
    while frame is not None:
        if "self" in frame.f_code.co_varnames:
            candidate = frame.f_locals.get("self")
            workers = _workers_of(candidate)
            if workers is not None and workers > 1:
                return f"{type(candidate).__module__.split('.')[0]} with {workers} workers"
        frame = frame.f_back
    concurrency = os.environ.get("WEB_CONCURRENCY", "").strip()
    if concurrency.isdigit() and int(concurrency) > 1:
        return f"WEB_CONCURRENCY={concurrency}"
    return None
