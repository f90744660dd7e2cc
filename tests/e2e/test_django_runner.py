"""The Django store's exactly-once guarantees, checked by Django's own test runner on PostgreSQL.

Starts the session's PostgreSQL server (tests/postgres_server.py) and runs
``python -m django test tests.django_project.exactly_once`` in a subprocess, with the
project's settings and the server's DSN: the tests there inject the faults (a failing
first attempt, a worker SIGKILLed mid-handler, the delivery's session ended mid-delivery)
and count the effect rows and done marks per ``webhook-id``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import carecycle_webhooks

pytest.importorskip("django")
pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 120.0  # the run takes about 10 s; a hang fails instead of stalling the suite
DJANGO_TEST = [sys.executable, "-W", "error", "-m", "django", "test", "tests.django_project.exactly_once"]
TESTS = 5  # the Django tests in tests/django_project/exactly_once.py


def test_djangos_test_runner_passes_the_exactly_once_tests(postgres_server: Any) -> None:
    postgres_server.ensure_running()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DJANGO_"))}
    env["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    env["CARECYCLE_DJANGO_DSN"] = postgres_server.dsn
    # The package this process imports (the source tree, or the installed wheel), then the tests.
    package_root = str(Path(carecycle_webhooks.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [*DJANGO_TEST, "--noinput", "--verbosity", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = f"--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
    assert run.returncode == 0, output
    assert f"Ran {TESTS} tests" in run.stderr, output
    assert "\nOK" in run.stderr, output
