"""DjangoIdempotencyStore: exactly-once effects through Django's ORM, on SQLite and PostgreSQL.

Real transactions on real databases (as Django's ``TransactionTestCase`` runs them, not
inside a test's own transaction): a SQLite file and a PostgreSQL server started for the
session (tests/postgres_server.py). Every test that takes the ``alias`` fixture runs on
both. Handlers write `Effect` rows with the ORM; the store's done marks are
`ProcessedWebhook` rows.
"""

# django-stubs' QuerySet methods return typing.Self, which pyright's target (Python 3.10) lacks:
# the ORM's results are unknown to it here, not wrong.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false
# pyright: reportUnknownLambdaType=false

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters import django_settings

if not django_settings.configured():
    django_settings.configure()

from django.core.management import call_command
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.test import AsyncClient, Client

from carecycle_webhooks import Claim, CommitFailed, CustomerCreatedEvent, Dispatcher, current_delivery
from carecycle_webhooks.django import DjangoIdempotencyStore, webhook_view
from carecycle_webhooks.django.models import ProcessedWebhook
from carecycle_webhooks.testing import sign
from tests.adapters.django_effects.models import Effect, Unique
from tests.adapters.django_urls import serve, serve_async
from tests.conftest import SECRET, fixture_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from carecycle_webhooks import WebhookResponse

ROOT = Path(__file__).resolve().parent.parent.parent
WAIT = 10.0  # the longest any test waits for another thread or process


# --------------------------------------------------------------------------- databases


def _migrate(alias: str) -> None:
    call_command("migrate", database=alias, run_syncdb=True, verbosity=0)


@pytest.fixture(scope="module")
def sqlite_alias() -> str:
    _migrate("default")
    return "default"


@pytest.fixture(scope="module")
def postgres_alias(postgres_server: Any) -> Iterator[str]:
    name = "carecycle_django_store"
    postgres_server.create_database(name)
    django_settings.add_database(
        "postgres",
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "HOST": postgres_server.host,
            "PORT": str(postgres_server.port),
            "OPTIONS": {"connect_timeout": 5},
        },
    )
    _migrate("postgres")
    try:
        yield "postgres"
    finally:
        connections["postgres"].close()
        postgres_server.ensure_running()
        postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database alias with no rows, on SQLite and on PostgreSQL."""
    name: str = request.getfixturevalue(f"{request.param.removesuffix('ql')}_alias")
    for model in (Effect, Unique, ProcessedWebhook):
        model.objects.using(name).all().delete()
    try:
        yield name
    finally:
        connections.close_all()


def effects(alias: str, webhook_id: str = "msg_1") -> int:
    return Effect.objects.using(alias).filter(webhook_id=webhook_id).count()


def marked(alias: str, webhook_id: str = "msg_1") -> bool:
    return ProcessedWebhook.objects.using(alias).filter(webhook_id=webhook_id).exists()


# --------------------------------------------------------------------------- deliveries


def signed(webhook_id: str = "msg_1") -> tuple[bytes, dict[str, str]]:
    delivery = sign(fixture_bytes("customer.created"), secret=SECRET, webhook_id=webhook_id)
    return delivery.body, dict(delivery.headers)


def writer(
    alias: str,
    *,
    store: DjangoIdempotencyStore | None = None,
    then: Callable[[], object] | None = None,
    **options: Any,
) -> Dispatcher:
    """A dispatcher whose handler writes an `Effect` row, then calls ``then``."""
    webhooks = Dispatcher(SECRET, idempotency_store=store or DjangoIdempotencyStore(using=alias), **options)

    @webhooks.on("customer.created")
    def write(event: CustomerCreatedEvent) -> None:
        Effect.objects.using(alias).create(webhook_id=current_delivery().webhook_id, event_id=event.id)
        if then is not None:
            then()

    return webhooks


def answer(response: WebhookResponse) -> tuple[int, dict[str, Any]]:
    return response.status_code, json.loads(response.body)


class InThread:
    """One delivery handled in a thread of its own (a second worker), with its own connection."""

    def __init__(self, deliver: Callable[[], WebhookResponse]) -> None:
        self.response: WebhookResponse | None = None
        self._deliver = deliver
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.response = self._deliver()
        finally:
            connections.close_all()  # this thread's own connections

    def join(self) -> WebhookResponse:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the delivery did not end"
        assert self.response is not None
        return self.response


# --------------------------------------------------------------------------- the app


def test_migrations_are_up_to_date() -> None:
    # Exits 1 when the models changed without a migration.
    call_command("makemigrations", "carecycle_webhooks", check=True, dry_run=True, verbosity=0)


def test_importing_the_adapter_and_building_the_store_need_no_settings() -> None:
    code = (
        "from carecycle_webhooks.django import DjangoIdempotencyStore, webhook_view;"
        "from django.conf import settings;"
        "store = DjangoIdempotencyStore(using='other');"
        "print(settings.configured, store.using, repr(store))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["False", "other", "DjangoIdempotencyStore(using='other')"]


def test_prune_every_must_be_a_positive_number() -> None:
    from carecycle_webhooks import WebhookConfigurationError

    for wrong in (0, -1, True, 1.5):
        with pytest.raises(WebhookConfigurationError, match="prune_every"):
            DjangoIdempotencyStore(prune_every=wrong)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- exactly once


def test_writes_commit_with_the_done_mark_and_a_duplicate_runs_nothing(alias: str) -> None:
    webhooks = writer(alias)
    serve(webhooks)
    client = Client()
    body, headers = signed()
    first = client.post("/webhooks/", data=body, content_type="application/json", headers=headers)
    assert (first.status_code, first.json()) == (200, {"status": "processed"})
    assert (effects(alias), marked(alias)) == (1, True)
    again = client.post("/webhooks/", data=body, content_type="application/json", headers=headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert effects(alias) == 1


def test_a_failing_handler_rolls_back_its_writes_and_frees_the_id(alias: str) -> None:
    failures = [RuntimeError("first attempt fails")]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    webhooks = writer(alias, then=fail_once)
    assert answer(webhooks.handle(*signed())) == (500, {"error": "handler_failed"})
    assert (effects(alias), marked(alias)) == (0, False)  # its Effect row was rolled back
    # Svix's retry runs the handler once, and this time its writes commit.
    assert answer(webhooks.handle(*signed())) == (200, {"status": "processed"})
    assert (effects(alias), marked(alias)) == (1, True)


def test_a_transaction_a_handler_broke_is_not_committed(alias: str) -> None:
    # A database error caught without a savepoint of its own: Django would roll the
    # transaction back without a word; the delivery must not be answered 2xx.
    def break_the_transaction() -> None:
        try:
            with transaction.atomic(using=alias, savepoint=False):
                for _ in range(2):  # the same primary key twice
                    Effect.objects.using(alias).create(id=10**6, webhook_id="x", event_id=uuid.UUID(int=0))
        except IntegrityError:
            pass

    webhooks = writer(alias, then=break_the_transaction)
    response = webhooks.handle(*signed())
    assert response.status_code == 503
    assert json.loads(response.body)["error"] == "not_committed"
    assert (effects(alias), marked(alias)) == (0, False)
    assert Effect.objects.using(alias).count() == 0


def test_a_commit_that_fails_is_503_and_keeps_nothing(postgres_alias: str) -> None:
    alias = postgres_alias
    for model in (Effect, Unique, ProcessedWebhook):
        model.objects.using(alias).all().delete()

    def violate_at_commit() -> None:  # a deferred constraint: only COMMIT finds it
        Unique.objects.using(alias).create(value="twice")
        Unique.objects.using(alias).create(value="twice")

    webhooks = writer(alias, then=violate_at_commit)
    try:
        response = webhooks.handle(*signed())
        assert response.status_code == 503
        assert json.loads(response.body)["error"] == "not_committed"
        assert (effects(alias), marked(alias), Unique.objects.using(alias).count()) == (0, False, 0)
    finally:
        connections.close_all()


def test_commit_failed_names_no_value_of_the_handlers_writes(postgres_alias: str) -> None:
    alias = postgres_alias
    Unique.objects.using(alias).all().delete()
    store = DjangoIdempotencyStore(using=alias)
    claim = store.acquire("msg_phi", lease=datetime.timedelta(minutes=1))
    Unique.objects.using(alias).create(value="Delacroix 1EG4-TE5-MK72")
    Unique.objects.using(alias).create(value="Delacroix 1EG4-TE5-MK72")
    try:
        with pytest.raises(CommitFailed) as raised:
            store.complete("msg_phi", claim.token, ttl=datetime.timedelta(hours=1))
        assert "Delacroix" not in str(raised.value)
        assert raised.value.__cause__ is None
        assert raised.value.__suppress_context__ or raised.value.__context__ is None
    finally:
        connections.close_all()


def test_a_mark_committed_meanwhile_by_a_worker_this_one_could_not_see_rolls_this_run_back(
    postgres_alias: str,
) -> None:
    # As under REPEATABLE READ, where a snapshot older than the lock hides a finished run:
    # the done mark is written over an expired one only, so this run's writes are rolled back.
    alias = postgres_alias
    for model in (Effect, ProcessedWebhook):
        model.objects.using(alias).all().delete()
    store = DjangoIdempotencyStore(using=alias)
    claim = store.acquire("msg_1", lease=datetime.timedelta(minutes=1))
    Effect.objects.using(alias).create(webhook_id="msg_1", event_id=uuid.UUID(int=2))
    now = datetime.datetime.now(datetime.timezone.utc)

    def another_worker() -> None:
        try:
            ProcessedWebhook.objects.using(alias).create(
                webhook_id="msg_1", done_at=now, expires_at=now + datetime.timedelta(hours=1)
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=another_worker)  # bypasses the lock, commits on its own connection
    thread.start()
    thread.join(WAIT)
    try:
        with pytest.raises(CommitFailed, match="marked it done meanwhile"):
            store.complete("msg_1", claim.token, ttl=datetime.timedelta(hours=1))
        assert (effects(alias), marked(alias)) == (0, True)
    finally:
        connections.close_all()


def test_a_token_not_open_in_this_thread_commits_and_frees_nothing(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    lease, ttl = datetime.timedelta(minutes=1), datetime.timedelta(hours=1)
    claim = store.acquire("msg_1", lease=lease)
    with pytest.raises(CommitFailed, match="no transaction of this delivery is open"):
        store.complete("msg_1", "someone-else", ttl=ttl)
    store.release("msg_1", "someone-else")  # nothing of it here: no error, nothing freed
    assert store.acquire("msg_1", lease=lease) == Claim("in_flight")
    store.complete("msg_1", claim.token, ttl=ttl)
    assert marked(alias)


def test_an_expired_mark_is_run_again_and_marked_anew(alias: str) -> None:
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
    ProcessedWebhook.objects.using(alias).create(
        webhook_id="msg_1", done_at=long_ago, expires_at=long_ago + datetime.timedelta(hours=48)
    )
    assert answer(writer(alias).handle(*signed())) == (200, {"status": "processed"})
    mark = ProcessedWebhook.objects.using(alias).get(webhook_id="msg_1")
    assert str(mark) == "msg_1"
    assert mark.expires_at > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=47)
    assert effects(alias) == 1


# --------------------------------------------------------------------------- concurrent copies


def hold_the_first(alias: str, store: DjangoIdempotencyStore, copy_store: DjangoIdempotencyStore) -> None:
    """A delivery held in its handler, a copy of it meanwhile (409 at once), then after it."""
    inside, release = threading.Event(), threading.Event()

    def wait_for_the_test() -> None:
        inside.set()
        assert release.wait(WAIT)

    first = InThread(lambda: writer(alias, store=store, then=wait_for_the_test).handle(*signed()))
    try:
        assert inside.wait(WAIT)
        started = time.monotonic()
        copy = writer(alias, store=copy_store).handle(*signed())
        assert answer(copy)[0] == 409
        assert time.monotonic() - started < 1.0  # at once: the copy never waits for the first
    finally:
        release.set()
    assert answer(first.join()) == (200, {"status": "processed"})
    assert answer(writer(alias, store=copy_store).handle(*signed())) == (200, {"status": "duplicate"})
    assert effects(alias) == 1


def test_a_concurrent_copy_in_the_same_process_is_409_at_once(alias: str) -> None:
    store = DjangoIdempotencyStore(using=alias)
    hold_the_first(alias, store, store)


def test_a_concurrent_copy_in_another_worker_is_409_at_once_on_postgresql(postgres_alias: str) -> None:
    # Two stores: two workers, whose only common ground is the database (an advisory lock).
    for model in (Effect, ProcessedWebhook):
        model.objects.using(postgres_alias).all().delete()
    try:
        hold_the_first(
            postgres_alias,
            DjangoIdempotencyStore(using=postgres_alias),
            DjangoIdempotencyStore(using=postgres_alias),
        )
    finally:
        connections.close_all()


def test_a_delivery_left_open_holds_its_id_in_this_process_for_the_lease_only(alias: str) -> None:
    # A delivery whose complete or release never came (its thread's connection closed):
    # the database ended its transaction; the process's own note of it lasts the lease.
    store = DjangoIdempotencyStore(using=alias)
    lease = datetime.timedelta(milliseconds=200)

    def leave_open() -> None:
        try:
            assert store.acquire("msg_1", lease=lease).status == "acquired"
        finally:
            connections.close_all()

    thread = threading.Thread(target=leave_open)
    thread.start()
    thread.join(WAIT)
    assert store.acquire("msg_1", lease=lease) == Claim("in_flight")
    time.sleep(0.25)  # past the lease
    claim = store.acquire("msg_1", lease=lease)
    assert claim.status == "acquired"
    store.release("msg_1", claim.token)
    assert (effects(alias), marked(alias)) == (0, False)


def test_inside_an_atomic_block_of_ones_own_the_delivery_is_a_savepoint(alias: str) -> None:
    # A Django TestCase, or dispatch() in a job's own transaction: the delivery's writes and
    # done mark are part of the outer transaction, and commit or roll back with it.
    failures = [RuntimeError("first attempt fails")]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    webhooks = writer(alias, then=fail_once)

    def outer_transaction() -> None:
        with transaction.atomic(using=alias):
            Effect.objects.using(alias).create(webhook_id="outer", event_id=uuid.UUID(int=1))
            assert webhooks.handle(*signed()).status_code == 500  # rolled back to its savepoint
            assert Effect.objects.using(alias).filter(webhook_id="outer").exists()
            assert answer(webhooks.handle(*signed())) == (200, {"status": "processed"})
            assert (effects(alias), marked(alias)) == (1, True)
            raise LookupError  # the outer transaction rolls back: the delivery with it

    with pytest.raises(LookupError):
        outer_transaction()
    assert (effects(alias), marked(alias), Effect.objects.using(alias).count()) == (0, False, 0)


def test_sqlite_another_worker_waits_for_the_write_lock_then_sees_the_mark(sqlite_alias: str) -> None:
    alias = sqlite_alias
    for model in (Effect, ProcessedWebhook):
        model.objects.using(alias).all().delete()
    inside, release = threading.Event(), threading.Event()

    def wait_for_the_test() -> None:
        inside.set()
        assert release.wait(WAIT)

    first = InThread(lambda: writer(alias, then=wait_for_the_test).handle(*signed()))
    assert inside.wait(WAIT)
    copy = InThread(lambda: writer(alias).handle(*signed()))  # another store: another worker
    copy.thread.join(0.3)
    assert copy.thread.is_alive()  # waiting for the write lock, within the busy timeout
    release.set()
    assert answer(first.join()) == (200, {"status": "processed"})
    assert answer(copy.join()) == (200, {"status": "duplicate"})
    assert effects(alias) == 1
    connections.close_all()


def test_sqlite_a_write_lock_held_past_the_busy_timeout_is_503(sqlite_alias: str) -> None:
    alias = sqlite_alias
    ProcessedWebhook.objects.using(alias).all().delete()
    quick = dict(connections[alias].settings_dict, OPTIONS={"timeout": 0.2})
    django_settings.add_database("sqlite_quick", quick)
    inside, release = threading.Event(), threading.Event()

    def wait_for_the_test() -> None:
        inside.set()
        assert release.wait(WAIT)

    first = InThread(lambda: writer(alias, then=wait_for_the_test).handle(*signed("msg_slow")))
    try:
        assert inside.wait(WAIT)
        started = time.monotonic()
        other = writer("sqlite_quick").handle(*signed("msg_other"))  # another id, another worker
        assert answer(other) == (503, {"error": "idempotency_store_unavailable"})
        assert time.monotonic() - started < 2.0
    finally:
        release.set()
        connections.close_all()
    assert answer(first.join()) == (200, {"status": "processed"})


# --------------------------------------------------------------------------- a worker killed


def test_a_worker_killed_mid_handler_leaves_nothing_and_the_retry_runs_once(alias: str) -> None:
    settings = {k: v for k, v in connections[alias].settings_dict.items() if k != "TEST"}
    body, headers = signed()
    env = {**os.environ, "CARECYCLE_TEST_DATABASE": json.dumps(settings, default=str)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.adapters.django_worker"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdin is not None
        assert worker.stdout is not None
        worker.stdin.write(json.dumps({"body": body.decode(), "headers": headers}))
        worker.stdin.close()
        assert worker.stdout.readline().strip() == "inside"  # its Effect row is written, uncommitted
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(WAIT) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(WAIT)
        if worker.stdout is not None:
            worker.stdout.close()
    assert (effects(alias), marked(alias)) == (0, False)  # nothing left behind, no lease to wait out
    webhooks = writer(alias)
    deadline = time.monotonic() + WAIT
    retried = webhooks.handle(*signed())
    while retried.status_code == 409 and time.monotonic() < deadline:
        # PostgreSQL ends the dead worker's session when it sees the socket closed.
        time.sleep(0.05)
        retried = webhooks.handle(*signed())
    assert answer(retried) == (200, {"status": "processed"})
    assert (effects(alias), marked(alias)) == (1, True)


def test_a_stuck_transaction_is_ended_by_postgresql_after_the_lease(postgres_alias: str) -> None:
    alias = postgres_alias
    for model in (Effect, ProcessedWebhook):
        model.objects.using(alias).all().delete()
    webhooks = writer(alias, then=lambda: time.sleep(1.0), lease=datetime.timedelta(milliseconds=300))
    try:
        response = webhooks.handle(*signed())
        assert response.status_code == 503
        assert json.loads(response.body)["error"] == "not_committed"
        close_old_connections()  # as Django does between requests: the server ended that session
        assert (effects(alias), marked(alias)) == (0, False)
        assert answer(writer(alias).handle(*signed())) == (200, {"status": "processed"})
    finally:
        connections.close_all()


# --------------------------------------------------------------------------- views


def test_the_sync_view_under_asgi(alias: str) -> None:
    serve(writer(alias))
    body, headers = signed()

    async def deliver() -> Any:
        return await AsyncClient().post(
            "/webhooks/", data=body, content_type="application/json", headers=headers
        )

    response = asyncio.run(deliver())
    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert (effects(alias), marked(alias)) == (1, True)


def test_an_async_view_awaiting_handle_async(alias: str) -> None:
    threads: list[int] = []
    webhooks = writer(alias, then=lambda: threads.append(threading.get_ident()))
    serve_async(webhooks)
    body, headers = signed()

    async def deliver() -> list[Any]:
        threads.append(threading.get_ident())  # the event loop's
        client = AsyncClient()
        return [
            await client.post("/webhooks/", data=body, content_type="application/json", headers=headers)
            for _ in range(2)
        ]

    first, again = asyncio.run(deliver())
    assert (first.status_code, first.json()) == (200, {"status": "processed"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert threads[0] != threads[1]  # the handler ran off the loop, in the delivery's thread
    assert (effects(alias), marked(alias)) == (1, True)


def test_the_view_stays_out_of_atomic_requests(alias: str) -> None:
    # ATOMIC_REQUESTS would make the delivery's transaction a savepoint, committed after the answer.
    seen: list[tuple[bool, list[str]]] = []
    connection = connections[alias]

    def note() -> None:
        seen.append((connection.in_atomic_block, list(connection.savepoint_ids)))

    webhooks = writer(alias, then=note)
    view = webhook_view(webhooks)
    assert getattr(view, "_non_atomic_requests", set()) == {alias}
    serve(webhooks)
    settings = connection.settings_dict
    settings["ATOMIC_REQUESTS"] = True
    try:
        body, headers = signed()
        response = Client().post("/webhooks/", data=body, content_type="application/json", headers=headers)
    finally:
        settings["ATOMIC_REQUESTS"] = False
    assert response.status_code == 200
    assert seen == [(True, [])]  # the outermost block: its commit is known before the answer


# --------------------------------------------------------------------------- pruning and set-up


def test_prune_deletes_expired_marks_oldest_first_bounded(alias: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    for age in range(10):
        expired = now - datetime.timedelta(hours=age + 1)
        ProcessedWebhook.objects.using(alias).create(
            webhook_id=f"old_{age}", done_at=expired, expires_at=expired
        )
    ProcessedWebhook.objects.using(alias).create(
        webhook_id="live", done_at=now, expires_at=now + datetime.timedelta(hours=1)
    )
    store = DjangoIdempotencyStore(using=alias)
    assert store.prune(limit=4) == 4
    left = set(ProcessedWebhook.objects.using(alias).values_list("webhook_id", flat=True))
    assert left == {"live"} | {f"old_{age}" for age in range(6)}  # the 4 oldest went first
    # Every prune_every deliveries, up to twice as many are pruned after the commit.
    webhooks = writer(alias, store=DjangoIdempotencyStore(using=alias, prune_every=2))
    for webhook_id in ("msg_1", "msg_2"):
        assert webhooks.handle(*signed(webhook_id)).status_code == 200
    assert ProcessedWebhook.objects.using(alias).filter(expires_at__lte=now).count() == 2


def test_an_unsupported_database_is_answered_503() -> None:
    django_settings.add_database("unsupported", {"ENGINE": "django.db.backends.dummy"})
    store = DjangoIdempotencyStore(using="unsupported")
    from carecycle_webhooks import WebhookConfigurationError

    with pytest.raises(WebhookConfigurationError, match="PostgreSQL and SQLite"):
        store.acquire("msg_1", lease=datetime.timedelta(minutes=1))
    webhooks = Dispatcher(SECRET, idempotency_store=DjangoIdempotencyStore(using="unsupported"))
    webhooks.on("customer.created")(lambda event: None)
    assert answer(webhooks.handle(*signed()))[0] == 503
    assert store.prune() == 0  # upkeep never raises
