"""Deadlines for blocking socket I/O that has no timeout of its own.

A psycopg connection waits for its server without a timeout: a stalled PostgreSQL (a
paused process, a lost network path whose kernel still acknowledges) would hold a worker
past the 15 s Svix waits. `Watchdog.arm` gives a socket a deadline; past it, one thread
per process shuts the socket down (``shutdown(2)``, not ``close``: the descriptor stays
its owner's), which wakes whatever waits on it, in a thread or an event loop, with an
end of file: the driver raises, and its connection is broken for good.

A socket is always disarmed by its owner before the owner closes it, under the same lock
the watchdog fires under, so a descriptor number reused by another socket is never shut.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time

__all__ = ["Watchdog", "watchdog"]


class Watchdog:
    """Shuts sockets down at their deadlines, from one daemon thread started on first use."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._armed: dict[int, tuple[float, int]] = {}  # owner's id -> (deadline, descriptor)
        self._wake_at = math.inf
        self._started = False
        self.fired = 0  # how many sockets were shut down, for tests

    def arm(self, owner: object, fd: int, deadline: float) -> None:
        """Shut ``fd`` down at ``deadline`` (monotonic seconds), unless `disarm` comes first."""
        with self._cond:
            self._armed[id(owner)] = (deadline, fd)
            if not self._started:
                threading.Thread(target=self._run, name="carecycle-webhooks: deadlines", daemon=True).start()
                self._started = True
            elif deadline < self._wake_at:
                self._cond.notify()

    def disarm(self, owner: object) -> None:
        """Forget ``owner``'s deadline; from now on its socket is never touched."""
        with self._cond:
            self._armed.pop(id(owner), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for owner, (deadline, fd) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[owner]
                        self.fired += 1
                        _shut(fd)
                self._wake_at = min((deadline for deadline, _ in self._armed.values()), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


def _shut(fd: int) -> None:
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fd))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


_watchdog = Watchdog()


def watchdog() -> Watchdog:
    """This process's watchdog (a forked child gets one of its own: threads do not survive a fork)."""
    global _watchdog  # noqa: PLW0603 - replaced once per forked process
    if _watchdog.pid != os.getpid():
        _watchdog = Watchdog()
    return _watchdog
