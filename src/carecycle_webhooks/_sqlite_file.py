"""The file of `SQLiteIdempotencyStore` deleted or replaced while in use: seen, and never mispaired.

SQLite finds a database's log files (``-wal``, ``-shm``) by their names, and a database
opened with another's log is damaged. A worker that sees, at an acquire, that its path
names another file than the one it opened does not take a lease in the old file (a new
worker would not see it); it opens the path again only when the file and both log files
are gone, and otherwise fails every call (503) until it is restarted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from ._sqlite_pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FileWatch", "identity", "mispaired_hint"]

logger = logging.getLogger("carecycle_webhooks")


def identity(path: str) -> tuple[int, int]:
    """Which file ``path`` names now: its device and inode (one stat, on every acquire)."""
    status = os.stat(path)  # noqa: PTH116 - Path() would cost more than the stat
    return status.st_dev, status.st_ino


def mispaired_hint(path: str) -> str:
    """For a file that cannot be opened: what to do if its log files may be another database's."""
    if not any(os.path.exists(path + suffix) for suffix in ("-wal", "-shm")):  # noqa: PTH110
        return ""
    return (
        " (if the file was deleted or replaced while in use, its -wal and -shm files may belong to "
        "the old database: stop every process that uses it, then delete them, or all three files)"
    )


class FileWatch:
    """The steps of `SQLiteIdempotencyStore` that watch its file; it sets the attributes."""

    _path: str
    _file: tuple[int, int]  # the device and inode of the file this process opened
    _pool: Pool
    _gone: str | None  # why every call fails: the file was replaced
    _setup: Callable[[], tuple[int, int]]
    _connect: Callable[[bool], sqlite3.Connection]
    _current_pool: Callable[[], Pool]

    def _new_pool(self) -> Pool:
        """A pool whose new connections are refused when the path names another file by then."""
        return Pool(self._connect_to_ours)

    def _connect_to_ours(self, quick: bool) -> sqlite3.Connection:  # noqa: FBT001 - the pool's argument
        """`_connect`, and the file it opened is the one this process set up; else refused.

        Each call that finds no idle connection opens one by the path's name: one opened
        after the file was replaced would pair the new file with the old log files.
        """
        connection = self._connect(quick)
        try:
            self._check_file()
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    def _moved(self) -> bool:
        """Whether the path names another file than the one this process opened (one stat)."""
        try:
            return identity(self._path) != self._file
        except OSError:
            return True

    def _reopen_if_replaced(self) -> None:
        """Open the file again if it was deleted with its log, or fail every call from now on.

        Open connections would go on with the old file, which no new process sees: a
        restarted worker would run the handlers of ids this one marked done. SQLite finds a
        database's log (``-wal``, ``-shm``) by its name, and a database opened with another's
        log is damaged. So the store opens the path again only when the database and both
        log files are gone, and creates them anew; a file replaced, or deleted without its
        log, makes every call of this process fail (503) until it is restarted.
        """
        # The pool's lock: a child forked while another thread held it has a pool of its own.
        with self._current_pool().reopening:
            if self._gone is None and self._moved():
                self._reopen_moved()

    def _reopen_moved(self) -> None:
        # SQLite keeps the log files beside the file a symbolic link leads to: look there too.
        places = {self._path, os.path.realpath(self._path)}
        found = [place for place in places if os.path.lexists(place)]
        found += [
            place + suffix
            for place in places
            for suffix in ("-wal", "-shm")
            if os.path.lexists(place + suffix)
        ]
        if found:
            self._gone = (
                f"the SQLite idempotency store's file {self._path!r} was replaced or deleted while in "
                "use; its log files may belong to another database: stop every process that uses it, "
                "then start them again (to start over, delete the file and its -wal and -shm together)"
            )
            logger.error("%s", self._gone)
            return
        logger.warning(
            "the SQLite idempotency store's file %r was deleted with its log: creating it again", self._path
        )
        try:
            created = self._setup()
        except Exception:  # noqa: BLE001 - the calls that follow fail and are answered 503
            return
        # The pool first: a thread that finds the file its own again takes the new pool.
        old, self._pool = self._pool, self._new_pool()
        self._file = created
        old.close()  # its idle connections; those in use are closed once their call ends

    def _check_file(self) -> None:
        """Before a lease is taken: the file is still the one this process opened, else fail.

        One stat per acquire. A lease taken in a file that no new process opens would let
        two workers run the same delivery; the call fails instead (503: Svix retries).
        """
        self._refuse_if_gone()
        if self._moved():
            raise sqlite3.DatabaseError(
                f"the SQLite idempotency store's file {self._path!r} was deleted or replaced while in use"
            )

    def _refuse_if_gone(self) -> None:
        """Fail the call once this process found its file replaced (503 until a restart)."""
        if self._gone is not None:
            raise sqlite3.DatabaseError(self._gone)
