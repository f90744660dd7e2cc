"""Exactly-once effects of `DjangoIdempotencyStore` on PostgreSQL, run by Django's own test runner.

``python -m django test tests.django_project.exactly_once`` (settings
``tests.django_project.settings``; tests/e2e/test_django_runner.py starts the server and
runs it). `TransactionTestCase`: every delivery commits for real, as in production, and
the tables are emptied after each test.

Faults (see tests/django_project/urls.py): a handler failing on its first attempt; a
worker process SIGKILLed in the middle of its handler; the delivery's database session
ended mid-delivery by ``pg_terminate_backend`` from another connection, which is what a
server restart does to it. Deliveries not answered 2xx are sent again, as Svix does.
"""

# The ORM's results are unknown to pyright (django-stubs' QuerySet returns typing.Self).
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connection
from django.test import Client, TransactionTestCase

from carecycle_webhooks.django.models import ProcessedWebhook
from carecycle_webhooks.testing import sign
from tests.conftest import SECRET, fixture_bytes
from tests.django_project.effects.models import Effect
from tests.django_project.urls import FAULTS

ROOT = Path(__file__).resolve().parent.parent.parent
WAIT = 10.0  # the longest a test waits for a worker or for the server
ROUNDS = 20  # Svix-style retries of a delivery not answered 2xx


def deliver(webhook_id: str) -> tuple[int, dict[str, Any]]:
    """POST a signed ``customer.created`` delivery to ``/webhooks/``; its status and JSON body."""
    # Django closes broken connections when a request starts; its test client skips that.
    close_old_connections()
    signed = sign(fixture_bytes("customer.created"), secret=SECRET, webhook_id=webhook_id)
    response = Client().post(
        "/webhooks/", data=signed.body, content_type="application/json", headers=dict(signed.headers)
    )
    return response.status_code, json.loads(response.content)


def deliver_until_2xx(webhook_id: str) -> tuple[int, dict[str, Any]]:
    """Deliver ``webhook_id`` again until it is answered 2xx, as Svix retries (bounded)."""
    for _ in range(ROUNDS):
        status, body = deliver(webhook_id)
        if 200 <= status < 300:  # Svix's success range
            return status, body
        time.sleep(0.05)  # Svix waits between attempts; the server ends a dead worker's session
    raise AssertionError(f"{webhook_id} was not answered 2xx in {ROUNDS} attempts")


def effects(webhook_id: str) -> int:
    return Effect.objects.filter(webhook_id=webhook_id).count()


def marked(webhook_id: str) -> bool:
    return ProcessedWebhook.objects.filter(webhook_id=webhook_id).exists()


def kill_a_worker_mid_handler(webhook_id: str) -> None:
    """Deliver ``webhook_id`` in a worker process and SIGKILL it once its handler wrote its row."""
    signed = sign(fixture_bytes("customer.created"), secret=SECRET, webhook_id=webhook_id)
    env = {**os.environ, "CARECYCLE_DJANGO_DATABASE": str(connection.settings_dict["NAME"])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.django_project.worker"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdin is not None
        assert worker.stdout is not None
        worker.stdin.write(json.dumps({"body": signed.body.decode(), "headers": dict(signed.headers)}))
        worker.stdin.close()
        line = worker.stdout.readline().strip()  # bounded by the handler's own 60 s wait
        assert line == "inside", f"the worker said {line!r}, not 'inside'"
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(WAIT) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(WAIT)
        if worker.stdout is not None:
            worker.stdout.close()


class ExactlyOnceTests(TransactionTestCase):
    """Each fault alone: the first attempt leaves nothing, the retry runs the handler once."""

    def setUp(self) -> None:
        FAULTS.attempted.clear()

    def test_a_duplicate_runs_nothing(self) -> None:
        assert deliver("msg_once") == (200, {"status": "processed"})
        assert deliver("msg_once") == (200, {"status": "duplicate"})
        assert (effects("msg_once"), marked("msg_once")) == (1, True)

    def test_a_failure_on_the_first_attempt_is_rolled_back_and_the_retry_runs_once(self) -> None:
        assert deliver("msg-fail") == (500, {"error": "handler_failed"})
        assert (effects("msg-fail"), marked("msg-fail")) == (0, False)  # its row rolled back
        assert deliver("msg-fail") == (200, {"status": "processed"})
        assert deliver("msg-fail") == (200, {"status": "duplicate"})
        assert (effects("msg-fail"), marked("msg-fail")) == (1, True)

    def test_a_worker_killed_mid_handler_leaves_nothing_and_the_retry_runs_once(self) -> None:
        kill_a_worker_mid_handler("msg-kill")
        assert (effects("msg-kill"), marked("msg-kill")) == (0, False)  # no lease to wait out
        assert deliver_until_2xx("msg-kill") == (200, {"status": "processed"})
        assert (effects("msg-kill"), marked("msg-kill")) == (1, True)

    def test_a_session_ended_mid_delivery_is_503_and_the_retry_runs_once(self) -> None:
        status, body = deliver("msg-drop")
        assert (status, body["error"]) == (503, "not_committed")
        assert (effects("msg-drop"), marked("msg-drop")) == (0, False)
        assert deliver("msg-drop") == (200, {"status": "processed"})
        assert (effects("msg-drop"), marked("msg-drop")) == (1, True)


class SvixRetriesTests(TransactionTestCase):
    """Every fault in one run, then Svix-style retries: one effect row and one done mark per id."""

    def setUp(self) -> None:
        FAULTS.attempted.clear()

    def test_every_webhook_id_has_one_effect_row_and_one_done_mark_and_nothing_else(self) -> None:
        ids = [f"msg_{n:02d}" for n in range(24)]
        ids += [f"msg_{n:02d}-fail" for n in range(24, 30)]
        ids += [f"msg_{n:02d}-drop" for n in range(30, 33)]
        ids += [f"msg_{n:02d}-kill" for n in range(33, 35)]
        answers: Counter[int] = Counter()
        for webhook_id in ids:
            if webhook_id.endswith("-kill"):
                kill_a_worker_mid_handler(webhook_id)
            else:
                answers[deliver(webhook_id)[0]] += 1
        assert answers == Counter({200: 24, 500: 6, 503: 3}), answers
        for webhook_id in ids:  # Svix sends again what was not answered 2xx, then once more
            assert deliver_until_2xx(webhook_id)[0] == 200
            assert deliver(webhook_id) == (200, {"status": "duplicate"})
        rows = Counter(Effect.objects.values_list("webhook_id", flat=True))
        assert rows == Counter(ids), rows  # exactly one each, and no other
        marks = sorted(ProcessedWebhook.objects.values_list("webhook_id", flat=True))
        assert marks == sorted(ids), marks
