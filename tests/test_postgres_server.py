"""The test PostgreSQL server itself (tests/postgres_server.py): what other tests rely on."""

from __future__ import annotations

import time

import pytest

psycopg = pytest.importorskip("psycopg")


def test_a_crash_keeps_committed_rows_and_drops_open_transactions(postgres_server, postgres_database):
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
    open_conn = psycopg.connect(postgres_database)
    open_conn.execute("INSERT INTO t VALUES (2)")  # never committed
    postgres_server.restart(crash=True)
    open_conn.close()
    with psycopg.connect(postgres_database) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]


def _state(pid: int) -> str:
    from pathlib import Path

    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return "X"  # exited meanwhile: not running either


def test_a_paused_server_accepts_nothing_until_resumed(postgres_server, postgres_dsn):
    with psycopg.connect(postgres_dsn) as idle:  # a backend of its own, stalled too
        idle.execute("SELECT 1")
        with postgres_server.paused():
            children = postgres_server._children()
            assert len(children) >= 2  # the background workers and our backend
            # A signal is delivered asynchronously: each process stops within moments.
            deadline = time.monotonic() + 5
            while not {_state(pid) for pid in [postgres_server.pid, *children]} <= {"T", "X"}:
                assert time.monotonic() < deadline, {pid: _state(pid) for pid in children}
                time.sleep(0.01)
    with postgres_server.paused():
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(postgres_dsn, connect_timeout=1)
        assert time.monotonic() - started < 5
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_server_does_not_run_as_root(postgres_dsn):
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    import os
    from pathlib import Path

    owner = Path(row[0]).stat().st_uid
    assert owner != 0 or os.geteuid() != 0
