"""The example project of the Django guide (examples/django_project), run as its user runs it.

- its pytest-django tests pass (``pytest`` in the project's directory, with its pytest.ini);
- ``python manage.py check`` passes with the secret set, and without it (or with a wrong
  one) fails with ``carecycle_webhooks.E002``, naming the variable and never the value;
- under ``runserver``, a delivery is processed and the handler's log line appears in the
  terminal through the project's ``LOGGING``, beside Django's request line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import carecycle_webhooks
from carecycle_webhooks.testing import generate_secret
from tests.conftest import fixture_bytes, load_fixture
from tests.e2e.servers import signed_request
from tests.redis_server import free_port

pytest.importorskip("django")

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
TIMEOUT = 120.0  # each run takes a few seconds; a hang fails instead of stalling the suite


def project_env(secret: str | None) -> dict[str, str]:
    """The environment of the project's commands: this process's package (and pytest-django)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CARECYCLE_", "PYTEST_"))}
    paths = [str(Path(carecycle_webhooks.__file__).resolve().parent.parent)]
    spec = importlib.util.find_spec("pytest_django")
    if spec is not None and spec.origin is not None:
        paths.append(str(Path(spec.origin).resolve().parent.parent))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["DJANGO_DB"] = ":memory:"  # nothing written next to the project
    if secret is not None:
        env["CARECYCLE_WEBHOOK_SECRET"] = secret
    return env


def run(*command: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    """``command`` in the project's directory."""
    return subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT,
        env=project_env(secret),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_projects_pytest_django_tests_pass() -> None:
    if importlib.util.find_spec("pytest_django") is None:
        if os.environ.get("CI"):
            pytest.fail("pytest-django is in the dev extra: CI runs this test")
        pytest.skip("pytest-django is not installed (pip install -e '.[dev]')")
    # Hypothesis's plugin (installed here, not a dependency of the project) stays out:
    # importing it took about a second.
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", secret=None)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\b3 passed\b", output), output


def test_manage_py_check_passes_with_the_secret() -> None:
    result = run("manage.py", "check", "--fail-level", "WARNING", secret=generate_secret())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        (None, "or the CARECYCLE_WEBHOOK_SECRET environment variable (the endpoint's 'whsec_...' secret)"),
        ("whsec_%%%%", "the CARECYCLE_WEBHOOK_SECRET environment variable: the webhook secret is not valid"),
    ],
)
def test_manage_py_check_reports_a_missing_or_invalid_secret(secret: str | None, words: str) -> None:
    result = run("manage.py", "check", secret=secret)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "SystemCheckError" in output, output  # reported by the check, not a traceback
    assert "?: (carecycle_webhooks.E002) " in output, output
    assert words in output, output
    assert "%%%%" not in output, output


def test_runserver_shows_the_handlers_log_lines(tmp_path: Path) -> None:
    secret, port = generate_secret(), free_port()
    env = {**project_env(secret), "DJANGO_DB": str(tmp_path / "db.sqlite3"), "PYTHONUNBUFFERED": "1"}
    migrate = [sys.executable, "manage.py", "migrate", "--verbosity", "0"]
    subprocess.run(migrate, cwd=PROJECT, env=env, check=True, timeout=TIMEOUT)
    log = tmp_path / "runserver.log"
    command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/"
        deadline = time.monotonic() + 30
        while True:  # until it answers (405 to a GET), within the deadline
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url, timeout=1).status_code == 405:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = fixture_bytes("customer.created")
        response = httpx.post(url, timeout=10, **signed_request(body, secret, "msg_runserver_1"))
        assert (response.status_code, response.json()) == (200, {"status": "processed"})
        # runserver writes its access line after the response has gone out: wait for it
        # (bounded) before stopping the server, or the line may never be written.
        deadline = time.monotonic() + 10
        while '"POST /webhooks/' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=15)
    text = log.read_text()
    event_id = load_fixture("customer.created")["id"]
    assert f"INFO myproject.webhooks: customer.created: customer {event_id}" in text, text
    assert '"POST /webhooks/ HTTP/1.1" 200' in text, text
