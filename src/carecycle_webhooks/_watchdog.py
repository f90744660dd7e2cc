"""Deadlines for blocking socket I/O that has no timeout of its own.

A psycopg connection waits for its server without a timeout: a stalled PostgreSQL (a
paused process, a lost network path whose kernel still acknowledges) would hold a worker
past the 15 s Svix waits. `Watchdog.arm` gives a socket a deadline; past it, one thread
per process shuts the socket down (``shutdown(2)``, not ``close``: the descriptor stays
its owner's), which wakes whatever waits on it, in a thread or an event loop, with an
end of file: the driver raises, and its connection is broken for good.

A socket is disarmed by its owner before the owner closes it, under the same lock the
watchdog fires under. But a socket can also be closed behind its owner's back: libpq
closes a connection's socket as soon as it sees the server gone, and the descriptor
number may then be reused by any other socket of the process (another delivery's
connection, a client's request). So `arm` notes which socket the descriptor is (its
device and inode), and the watchdog shuts a descriptor down only while it is still that
socket: checked on a duplicate of it, which the owner cannot close meanwhile.
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
        # owner's id -> (deadline, descriptor, the socket's (device, inode) when armed)
        self._armed: dict[int, tuple[float, int, tuple[int, int]]] = {}
        self._wake_at = math.inf
        self._started = False
        self.fired = 0  # how many sockets were shut down, for tests

    def arm(self, owner: object, fd: int, deadline: float) -> None:
        """Shut ``fd`` down at ``deadline`` (monotonic seconds), unless `disarm` comes first.

        Raises:
            OSError: ``fd`` is not an open descriptor.
        """
        identity = _identity(fd)
        with self._cond:
            self._armed[id(owner)] = (deadline, fd, identity)
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
                for owner, (deadline, fd, identity) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[owner]
                        duplicate = _still(fd, identity)
                        if duplicate is not None:
                            with duplicate, contextlib.suppress(OSError):
                                self.fired += 1  # before the shutdown wakes its owner
                                duplicate.shutdown(socket.SHUT_RDWR)
                self._wake_at = min((armed[0] for armed in self._armed.values()), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def _still(fd: int, identity: tuple[int, int]) -> socket.socket | None:
    """A duplicate of ``fd`` if it is still the socket armed, else None.

    The duplicate is the same socket until it is closed, whatever its owner does meanwhile.
    """
    try:
        duplicate = os.dup(fd)
    except OSError:
        return None  # closed since
    try:
        if _identity(duplicate) == identity:
            return socket.socket(fileno=duplicate)  # owns the duplicate from now on
    except OSError:
        pass
    os.close(duplicate)  # closed since, and the number reused by another socket or file
    return None


_watchdog = Watchdog()


def watchdog() -> Watchdog:
    """This process's watchdog (a forked child gets one of its own: threads do not survive a fork)."""
    global _watchdog  # noqa: PLW0603 - replaced once per forked process
    if _watchdog.pid != os.getpid():
        _watchdog = Watchdog()
    return _watchdog
