"""The example project of the Django guide (examples/django_project), run as its user runs it.

- its pytest-django tests pass (``pytest`` in the project's directory, with its pytest.ini);
- ``python manage.py check`` passes with the secret set, and without it (or with a wrong
  one) fails with ``carecycle_webhooks.E002``, naming the variable and never the value.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import carecycle_webhooks
from carecycle_webhooks.testing import generate_secret

pytest.importorskip("django")

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
TIMEOUT = 120.0  # each run takes a few seconds; a hang fails instead of stalling the suite


def run(*command: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    """``command`` in the project's directory, with this process's package (and pytest-django)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CARECYCLE_", "PYTEST_"))}
    paths = [str(Path(carecycle_webhooks.__file__).resolve().parent.parent)]
    spec = importlib.util.find_spec("pytest_django")
    if spec is not None and spec.origin is not None:
        paths.append(str(Path(spec.origin).resolve().parent.parent))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["DJANGO_DB"] = ":memory:"  # nothing written next to the project
    if secret is not None:
        env["CARECYCLE_WEBHOOK_SECRET"] = secret
    return subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT,
        env=env,
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
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", secret=None)
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
