"""A real PostgreSQL server for the tests, on a free loopback port, in a temporary directory.

`PostgresServer` runs ``initdb`` in its own temporary directory and starts ``postgres`` on
``127.0.0.1`` (its Unix socket inside that directory too, never ``/var/run/postgresql``),
waits until it accepts connections, and stops it by PID. Durability is traded for speed
(``fsync=off``): a test server needs no crash safety against power loss, and a killed
process still leaves its writes in the kernel's page cache, so `crash` + `start` behaves as
a real crash recovery would. ``synchronous_commit`` stays on: off, a commit acknowledged
just before a `crash` could be lost with the WAL buffers, which no real server allows.

PostgreSQL refuses to run as root. CI runs as root: then ``initdb`` and ``postgres`` run as
the unprivileged ``postgres`` user (Debian's package creates it), or ``nobody`` without it,
and the temporary directory is given to that user.

`pause` (SIGSTOP) stalls every backend, not only the postmaster, and `crash` (SIGKILL)
takes all of them down at once, as a lost machine would: each of the postmaster's
children is signalled by its process id (read from /proc: they leave the postmaster's
process group).

The binaries are required in CI: missing ones fail the tests there (a skip would hide them);
elsewhere they skip with the install hint. ``scripts/test`` installs them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["INSTALL_HINT", "PostgresServer", "find_postgres_bindir"]

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, postgres) are not found in /usr/lib/postgresql/*/bin, "
    "`pg_config --bindir` or PATH: install them (apt-get install postgresql, brew install postgresql, ...) "
    "to run the PostgreSQL idempotency tests"
)

HOST = "127.0.0.1"
USER = "postgres"  # the database superuser initdb creates (not the operating-system user)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_NEEDED = ("initdb", "postgres", "pg_isready", "psql")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _has_binaries(bindir: str) -> bool:
    return all(os.access(Path(bindir) / name, os.X_OK) for name in _NEEDED)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,): the newest installed version wins.
    digits = re.findall(r"\d+", path.parent.name)
    return tuple(int(d) for d in digits)


def _candidate_bindirs() -> Iterator[str]:
    yield from (
        str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            yield out.stdout.strip()
    postgres = shutil.which("postgres")
    if postgres is not None:
        yield str(Path(postgres).resolve().parent)


def find_postgres_bindir() -> str:
    """The directory holding ``initdb``, ``postgres``, ``pg_isready`` and ``psql``.

    Fails the test run in CI when none is found, skips elsewhere.
    """
    for bindir in _candidate_bindirs():
        if bindir and _has_binaries(bindir):
            return bindir
    if os.environ.get("CI"):
        pytest.fail(f"{INSTALL_HINT} (required in CI: these tests are never skipped there)", pytrace=False)
    pytest.skip(INSTALL_HINT)


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None unless we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(
        "running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL"
    )


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, served on ``127.0.0.1:port`` on demand.

    Args:
        bindir: The directory of ``initdb`` and ``postgres`` (see `find_postgres_bindir`).
        port: The port to listen on; a free one by default. It stays the same across
            `stop`, `crash` and `start`, so that clients reconnect to the same address.
        settings: Extra ``postgres -c name=value`` settings.

    The cluster is created (``initdb``) on the first `start`; the data survives `stop`,
    `crash` and `restart`, and is removed by `close`.
    """

    def __init__(
        self, bindir: str, *, port: int | None = None, settings: dict[str, str] | None = None
    ) -> None:
        self.bindir = bindir
        self.host = HOST
        self.port = free_port() if port is None else port
        self.settings = dict(settings or {})
        self.directory = Path(tempfile.mkdtemp(prefix="carecycle-postgres-"))
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_path = self.directory / "postgres.log"
        self._owner = _unprivileged_user()
        self.socket_dir.mkdir()
        if self._owner is not None:
            for path in (self.directory, self.socket_dir):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None
        self._initialised = False

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port}, running={self.running})"

    # ------------------------------------------------------------------ addresses

    @property
    def dsn(self) -> str:
        """A libpq connection string to the ``postgres`` database (as the ``postgres`` superuser)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """A libpq connection string to ``database`` on this server."""
        return f"host={self.host} port={self.port} user={USER} dbname={database} connect_timeout=5"

    def url_for(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:port/database``, for tools that want a URL."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    # ------------------------------------------------------------------ processes

    @property
    def running(self) -> bool:
        """Whether our postmaster is alive (not whether it answers)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The postmaster's process id (also the id of the server's process group)."""
        if self._process is None:
            raise RuntimeError(f"{self!r} is not running")
        return self._process.pid

    def _binary(self, name: str) -> str:
        return str(Path(self.bindir) / name)

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that run a server binary as the unprivileged owner, when we are root."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._owner is None:
            return {"env": env}
        env["HOME"] = str(self.directory)
        env["USER"] = env["LOGNAME"] = self._owner.pw_name
        return {"env": env, "user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}

    def log_tail(self) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def _initdb(self) -> None:
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                [
                    self._binary("initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    USER,
                    "--auth",
                    "trust",  # loopback only, a throwaway cluster
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                timeout=120,
                check=False,
                **self._as_owner(),
            )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{self.log_tail()}")
        self._initialised = True

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "log_min_messages": "warning",
            **self.settings,
        }
        command = [self._binary("postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def ready(self, *, timeout: float = 1.0) -> bool:
        """Whether the server accepts connections now (``pg_isready``)."""
        try:
            result = subprocess.run(
                [
                    self._binary("pg_isready"),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--username",
                    USER,
                    "--dbname",
                    "postgres",
                    "--timeout",
                    str(max(1, round(timeout))),
                ],
                capture_output=True,
                timeout=timeout + 2,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start the server (``initdb`` first, once) and wait until it accepts connections.

        After a `crash` the server runs crash recovery first, and the port or the shared
        memory may still be held for a moment: a server that exits at once is started
        again until the deadline.

        Raises:
            RuntimeError: It did not accept connections within ``timeout`` seconds.
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        if not self._initialised:
            self._initdb()
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    start_new_session=True,  # not in our process group: a Ctrl-C of the tests is ours only
                    **self._as_owner(),
                )
            while time.monotonic() < deadline and self.running:
                # Our process must be alive *and* answering: not some other server on the port.
                if self.ready() and self.running:
                    return
                time.sleep(0.05)
            if self.running:
                self.stop()
                raise RuntimeError(
                    f"postgres on {self.host}:{self.port} did not accept connections within {timeout} s:\n"
                    f"{self.log_tail()}"
                )
            self._process = None
            if time.monotonic() >= deadline:
                raise RuntimeError(f"postgres on {self.host}:{self.port} exited at start:\n{self.log_tail()}")
            time.sleep(0.2)

    def _children(self) -> list[int]:
        """The postmaster's child processes (backends, background workers), from /proc.

        PostgreSQL's children call setsid(): a signal to the postmaster's process group
        does not reach them, so each is signalled by its own id.
        """
        children: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(self.pid):
                children.append(int(entry.name))
        return children

    def _signal_group(self, signum: int) -> None:
        """``signum`` to the postmaster first (so it starts no more children), then to each child."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)
        # Listed after the postmaster got the signal, and again, a few times: a child it forked
        # just before then is signalled too.
        signalled: set[int] = set()
        for _ in range(5):
            children = [pid for pid in self._children() if pid not in signalled]
            if not children:
                break
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
                signalled.add(pid)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: a fast shutdown (SIGINT: clients are disconnected, open
        transactions rolled back), then SIGKILL to the whole group after ``timeout`` seconds.
        No-op if stopped."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._signal_group(signal.SIGCONT)  # a paused server would not handle SIGINT
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._process.wait(timeout=timeout)
        self._process = None

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend at once: the next `start` runs crash
        recovery, and every committed transaction is still there; open ones are gone."""
        if self._process is None:
            return
        self._signal_group(signal.SIGCONT)
        self._signal_group(signal.SIGKILL)
        self._process.wait(timeout=STOP_TIMEOUT)
        self._process = None

    def restart(self, *, crash: bool = False) -> None:
        """`stop` (or `crash`, ``kill -9``), then `start` on the same port with the same data."""
        if crash:
            self.crash()
        else:
            self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server if a test left it stopped (or resume it if one left it paused)."""
        if self.running:
            self._signal_group(signal.SIGCONT)
        else:
            self.start()

    def pause(self) -> None:
        """Stall the server (SIGSTOP to every process of it): connections are still accepted
        by the kernel, nothing is answered."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT); it then answers what it was sent meanwhile."""
        if self.running:
            self._signal_group(signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """`pause` for the block, and `resume` after it, whatever happens in it."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    # ------------------------------------------------------------------ databases

    def psql(self, sql: str, *, database: str = "postgres", timeout: float = 30.0) -> str:
        """Run ``sql`` with ``psql`` (no Python driver needed) and return its unaligned output.

        Raises:
            RuntimeError: ``psql`` failed.
        """
        result = subprocess.run(
            [
                self._binary("psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set",
                "ON_ERROR_STOP=1",
                "--dbname",
                self.dsn_for(database),
                "--command",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (a lower-case identifier) and return its DSN."""
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain lower-case identifier: {name!r}")
        # FILE_COPY: copying the small template is much faster than WAL-logging it (PG 15+).
        strategy = " STRATEGY FILE_COPY" if self.server_version() >= 15 else ""
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop the database ``name`` (its connections are ended first), if it exists."""
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain lower-case identifier: {name!r}")
        force = " WITH (FORCE)" if self.server_version() >= 13 else ""
        self.psql(f"DROP DATABASE IF EXISTS {name}{force}")

    def server_version(self) -> int:
        """The server's major version (from ``postgres --version``)."""
        if not hasattr(self, "_version"):
            out = subprocess.run(
                [self._binary("postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            match = re.search(r"(\d+)(?:\.\d+)?", out)
            self._version = int(match.group(1)) if match else 0
        return self._version

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
