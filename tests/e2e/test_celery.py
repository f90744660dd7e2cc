"""The Celery example (examples/celery_queue): a real Redis, a real Celery worker and a real web endpoint.

Celery is never imported here (it would warn under ``filterwarnings = error``): the test
talks to the endpoint over HTTP and reads what the worker leaves behind, its log and the
events log that its handlers append to.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import EVENT_TYPES, SECRET, fixture_bytes, load_fixture
from tests.e2e.servers import BIN, EXAMPLES, Server, server, signed_request
from tests.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from typing_extensions import Self

    from tests.postgres_server import PostgresServer
    from tests.redis_server import RedisServer

CELERY_DIR = EXAMPLES / "celery_queue"
START_TIMEOUT = 30.0
PROCESSED_TIMEOUT = 30.0  # the retried job runs 1-2 s after its first try
STOP_TIMEOUT = 20.0
FAST = 2.0  # seconds: the endpoint only verifies, parses and queues
PHI = ("1EG4TE5MK73", "Delacroix", "1958-04-12", "+13128471928", "marcus.delacroix@example.com")


class Worker:
    """``celery -A celery_tasks worker`` in examples/celery_queue, in a process group of its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        command = [
            str(BIN / "celery"), "-A", "celery_tasks", "worker", "--pool", "prefork", "--concurrency", "2",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=CELERY_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_text()}")
            if " ready." in self.log_text():
                return
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready within {START_TIMEOUT} s:\n{self.log_text()}")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the main process, which stops and reaps its pool), else SIGKILL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        # The pool's processes belong to the group; none may be left, zombie or not.
        deadline = time.monotonic() + 5
        while group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = group_members(self.process.pid)
        if left:
            os.killpg(self.process.pid, signal.SIGKILL)
        assert not left, f"worker processes left behind: {left}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[str]:
    """``pid state`` of every process in process group ``pgid``, zombies included (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after its ')'.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid:
            members.append(f"{entry.name} {state}")
    return members


class Example:
    """The example running: its worker, its web endpoint and the events log."""

    def __init__(self, worker: Worker, web: Server, events_log: Path) -> None:
        self.worker = worker
        self.web = web
        self.events_log = events_log
        self.url = f"{web.url}/webhooks"
        self.client = httpx.Client(timeout=10)

    def post(self, body: bytes, msg_id: str, *, secret: str = SECRET) -> httpx.Response:
        started = time.monotonic()
        response = self.client.post(self.url, **signed_request(body, secret, msg_id))
        elapsed = time.monotonic() - started
        assert elapsed < FAST, f"{msg_id} answered in {elapsed:.2f} s"
        return response

    def processed(self) -> collections.Counter[str]:
        """How many times each webhook-id's handler completed."""
        if not self.events_log.exists():
            return collections.Counter()
        lines = self.events_log.read_text().splitlines()
        return collections.Counter(json.loads(line)["webhook_id"] for line in lines)

    def outcomes(self, msg_id: str) -> list[str]:
        """What each job of ``msg_id`` ended with, from the worker's log."""
        marker = f"webhook {msg_id} (try "
        return [line.rsplit(": ", 1)[1] for line in self.worker.log_text().splitlines() if marker in line]

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PROCESSED_TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {PROCESSED_TIMEOUT} s: {what}\nprocessed: {self.processed()}\n"
                    f"worker:\n{self.worker.log_text()[-6000:]}\nweb:\n{self.web.log_text()}"
                )
            time.sleep(0.05)


def environment(events_log: Path, redis_url: str) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_", "CELERY_"))
    }
    return {
        **inherited,
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "EVENTS_LOG": str(events_log),
        "PYTHONUNBUFFERED": "1",
    }


@contextlib.contextmanager
def running_example(
    redis_server: RedisServer, tmp: Path, *, database: int, database_url: str | None = None
) -> Iterator[Example]:
    """The worker (two prefork processes) and the web endpoint (gunicorn), on one Redis database.

    ``database`` is a Redis database no other test flushes; it is emptied first. With
    ``database_url``, the worker keeps its done marks and effects in PostgreSQL.
    """
    import redis

    if not (BIN / "celery").exists():
        message = "celery is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (required in CI)", pytrace=False)
        pytest.skip(message)
    redis_server.ensure_running()
    redis_url = f"redis://{redis_server.host}:{redis_server.port}/{database}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    events_log = tmp / "events.jsonl"
    env = environment(events_log, redis_url)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    started = time.monotonic()
    with (
        Worker(env, tmp / "worker.log") as worker,
        server("gunicorn", "celery_web:app", tmp=tmp, env=env, app_dir=CELERY_DIR) as web,
    ):
        worker.wait_ready()
        print(f"worker and web endpoint up in {time.monotonic() - started:.2f} s")  # noqa: T201
        running = Example(worker, web, events_log)
        try:
            yield running
        finally:
            running.client.close()
            stopping = time.monotonic()
            web.stop()
            worker.stop()
            print(f"stopped in {time.monotonic() - stopping:.2f} s")  # noqa: T201
    # Nothing of the payloads' PHI reaches either log.
    for text in (worker.log_text(), web.log_text()):
        for value in PHI:
            assert value not in text


@pytest.fixture(scope="module")
def celery(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example with Redis as broker and idempotency store (Redis database 1)."""
    with running_example(redis_server, tmp_path_factory.mktemp("celery"), database=1) as example:
        yield example


def test_each_event_is_processed_once_by_the_worker(celery: Example) -> None:
    ids = [f"msg_celery_{number}" for number in range(len(EVENT_TYPES))]
    for msg_id, event_type in zip(ids, EVENT_TYPES, strict=True):
        response = celery.post(fixture_bytes(event_type), msg_id)
        assert (response.status_code, response.json()) == (202, {"status": "queued"}), celery.web.log_text()
    unknown = b'{"event_type": "appointment.booked", "id": "appt_1"}'
    assert celery.post(unknown, "msg_celery_unknown").status_code == 202
    ids.append("msg_celery_unknown")
    celery.wait_until(lambda: all(celery.processed()[msg_id] for msg_id in ids), f"{ids} processed")
    for msg_id in ids:
        assert celery.processed()[msg_id] == 1
        assert celery.outcomes(msg_id) == ["processed"]
    records = {
        json.loads(line)["webhook_id"]: json.loads(line)
        for line in celery.events_log.read_text().splitlines()
    }
    assert records["msg_celery_2"] == {
        "webhook_id": "msg_celery_2",
        "event_type": "call.completed",
        "id": "dca4a483-af54-4899-a804-766ee5812537",
    }
    assert records["msg_celery_unknown"]["event_type"] == "appointment.booked"


def test_a_duplicate_delivery_is_queued_but_processed_once(celery: Example) -> None:
    body = fixture_bytes("customer.updated")
    assert celery.post(body, "msg_celery_dup").status_code == 202
    # Its job's outcome line, logged once the done mark is in (the handler's record comes first).
    celery.wait_until(lambda: "processed" in celery.outcomes("msg_celery_dup"), "first copy processed")
    # Svix's retry (its 202 was lost, say): signed anew, same webhook-id, queued again.
    response = celery.post(body, "msg_celery_dup")
    assert (response.status_code, response.json()) == (202, {"status": "queued"})
    celery.wait_until(lambda: "duplicate" in celery.outcomes("msg_celery_dup"), "second copy's job done")
    assert celery.outcomes("msg_celery_dup") == ["processed", "duplicate"]
    assert celery.processed()["msg_celery_dup"] == 1


def test_two_copies_in_quick_succession_are_processed_once(celery: Example) -> None:
    # The two worker processes may take them at the same moment: then one runs the
    # handler and the other gets 409 (in flight), retries later and finds it done.
    body = fixture_bytes("customer.created")
    for _ in range(2):
        assert celery.post(body, "msg_celery_twice").status_code == 202
    celery.wait_until(lambda: "duplicate" in celery.outcomes("msg_celery_twice"), "both copies' jobs done")
    outcomes = collections.Counter(celery.outcomes("msg_celery_twice"))
    assert outcomes["processed"] == outcomes["duplicate"] == 1
    assert set(outcomes) <= {"processed", "duplicate", "in_flight"}
    assert celery.processed()["msg_celery_twice"] == 1


def test_a_failing_handler_is_retried_by_celery_then_processed_once(celery: Example) -> None:
    payload = load_fixture("customer.created")
    payload["externalId"] = "fail-once"
    assert celery.post(json.dumps(payload).encode(), "msg_celery_fail_once").status_code == 202
    # The job logs its outcome after the handler's own record (once the done mark is in):
    # wait for that line, not for the record.
    celery.wait_until(
        lambda: "processed" in celery.outcomes("msg_celery_fail_once"), "processed on the retry"
    )
    assert celery.outcomes("msg_celery_fail_once") == ["handler_failed", "processed"]
    assert celery.processed()["msg_celery_fail_once"] == 1
    assert Path(f"{celery.events_log}.failed-once.msg_celery_fail_once").exists()
    log = celery.worker.log_text()
    assert "retry: Retry in" in log
    assert "failed on customer.created msg_celery_fail_once" in log
    # The handler's exception message stays out of the log (it may hold PHI); the
    # traceback's frames, which show the raising line of source, are logged.
    assert "ConnectionError (message hidden: it may hold PHI)" in log
    assert "ConnectionError: the CRM" not in log


def test_rejected_deliveries_are_not_queued(celery: Example) -> None:
    body = fixture_bytes("customer.created")
    forged = celery.post(body, "msg_celery_forged", secret="whsec_" + "A" * 32)
    assert (forged.status_code, forged.json()["error"]) == (400, "no_matching_signature")
    stale = signed_request(body, SECRET, "msg_celery_stale")
    stale["headers"]["webhook-timestamp"] = str(int(stale["headers"]["webhook-timestamp"]) - 3600)
    assert celery.client.post(celery.url, **stale).status_code == 400
    tampered = signed_request(body, SECRET, "msg_celery_tampered")
    tampered["content"] = body.replace(b"Lead", b"Active")
    assert celery.client.post(celery.url, **tampered).status_code == 400
    unsigned = celery.client.post(celery.url, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 400
    invalid = celery.post(b'{"event_type": "customer.created", "id": "not-a-uuid"}', "msg_celery_invalid")
    assert (invalid.status_code, invalid.json()["error"]) == (422, "invalid_payload")
    too_large = celery.client.post(celery.url, content=b" " * (10 * 1024 * 1024 + 1))
    assert too_large.status_code == 413
    assert celery.client.get(celery.url).status_code == 405
    assert celery.client.get(f"{celery.web.url}/health").text == "ok"
    # A delivery queued after them is processed: had any of them been queued, its job
    # would have run before (one queue, in order) and logged its webhook-id.
    assert celery.post(fixture_bytes("customer.updated"), "msg_celery_after").status_code == 202
    celery.wait_until(lambda: celery.processed()["msg_celery_after"] == 1, "the next delivery processed")
    web_log, worker_log = celery.web.log_text(), celery.worker.log_text()
    assert "webhook msg_celery_after queued as job" in web_log
    for msg_id in ("forged", "stale", "tampered", "invalid"):
        assert f"msg_celery_{msg_id} queued" not in web_log
        assert f"msg_celery_{msg_id}" not in worker_log


def test_an_unreachable_broker_is_answered_503(tmp_path: Path) -> None:
    # Nothing listens on this port: the endpoint cannot queue, so Svix must retry.
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    env = environment(tmp_path / "events.jsonl", nowhere)
    with server("gunicorn", "celery_web:app", tmp=tmp_path, env=env, app_dir=CELERY_DIR) as web:
        started = time.monotonic()
        response = httpx.post(
            f"{web.url}/webhooks",
            timeout=30,
            **signed_request(fixture_bytes("customer.created"), SECRET, "m"),
        )
        elapsed = time.monotonic() - started
    assert (response.status_code, response.json()) == (503, {"error": "queue_unavailable"})
    assert elapsed < 5, f"503 after {elapsed:.2f} s"
    assert not (tmp_path / "events.jsonl").exists()


# --------------------------------------------------------------------------- the PostgreSQL variant


@pytest.fixture(scope="module")
def celery_postgres(
    redis_server: RedisServer, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Example, str]]:
    """The example with DATABASE_URL: done marks and effect rows in PostgreSQL (Redis database 2)."""
    postgres_server.ensure_running()
    name = "celery_example"
    dsn = postgres_server.create_database(name)
    try:
        with running_example(
            redis_server, tmp_path_factory.mktemp("celery-pg"), database=2, database_url=dsn
        ) as example:
            yield example, dsn
    finally:
        postgres_server.ensure_running()
        postgres_server.drop_database(name)


def rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        return connection.execute(query).fetchall()


def ended(outcomes: list[str]) -> list[str]:
    """The outcomes that end a job: the ones it is not retried after."""
    return [outcome for outcome in outcomes if outcome in ("processed", "duplicate")]


def test_postgres_variant_commits_each_effect_once_with_its_done_mark(
    celery_postgres: tuple[Example, str],
) -> None:
    example, dsn = celery_postgres
    ids = [f"msg_pg_{number}" for number in range(len(EVENT_TYPES))]
    for msg_id, event_type in zip(ids, EVENT_TYPES, strict=True):
        assert example.post(fixture_bytes(event_type), msg_id).status_code == 202
    # A retried delivery, and two copies in quick succession: each is one job more.
    assert example.post(fixture_bytes("customer.updated"), ids[1]).status_code == 202
    body = fixture_bytes("customer.created")
    assert example.post(body, "msg_pg_twice").status_code == 202
    assert example.post(body, "msg_pg_twice").status_code == 202
    # A handler that fails on its first attempt: rolled back, retried by Celery, then processed.
    payload = json.loads(body)
    payload["externalId"] = "fail-once"
    assert example.post(json.dumps(payload).encode(), "msg_pg_fail_once").status_code == 202
    everything = [*ids, "msg_pg_twice", "msg_pg_fail_once"]
    example.wait_until(
        lambda: all("processed" in example.outcomes(msg_id) for msg_id in everything),
        f"{everything} processed",
    )
    # Each copy's job ends processed or duplicate; one that found the other in flight was
    # retried first (a CI run saw: in_flight, processed, duplicate).
    example.wait_until(
        lambda: all(len(ended(example.outcomes(msg_id))) == 2 for msg_id in (ids[1], "msg_pg_twice")),
        "every copy's job done",
    )
    effects = rows(dsn, "SELECT webhook_id, count(*) FROM crm_events GROUP BY webhook_id ORDER BY webhook_id")
    assert effects == sorted((msg_id, 1) for msg_id in everything)
    marks = rows(dsn, "SELECT webhook_id FROM carecycle_webhook_deliveries ORDER BY webhook_id")
    assert marks == sorted((msg_id,) for msg_id in everything)
    assert "processed" in example.outcomes("msg_pg_fail_once")
    assert len(example.outcomes("msg_pg_fail_once")) >= 2  # the failed try, then the processed one
