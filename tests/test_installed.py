"""What the built wheel must contain; the test command runs the suite once against it."""

from __future__ import annotations

import os
from importlib.metadata import files
from pathlib import Path

import pytest

import carecycle_webhooks

PACKAGE = Path(carecycle_webhooks.__file__).parent
SOURCE = Path(__file__).parent.parent / "src"
# Every module, subpackages too (the Django app's models and migrations).
SOURCES = sorted(p.relative_to(SOURCE).as_posix() for p in (SOURCE / "carecycle_webhooks").rglob("*.py"))


def test_py_typed_ships() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_every_module_ships() -> None:
    shipped = {f.as_posix() for f in files("carecycle-webhooks") or () if f.suffix == ".py"}
    assert "carecycle_webhooks/django/migrations/0001_initial.py" in SOURCES
    if os.environ.get("CARECYCLE_WEBHOOKS_TEST_WHEEL"):
        assert set(SOURCES) <= shipped
        assert "py.typed" in {Path(str(f)).name for f in files("carecycle-webhooks") or ()}


@pytest.mark.skipif(not os.environ.get("CARECYCLE_WEBHOOKS_TEST_WHEEL"), reason="only in the wheel run")
def test_running_against_the_installed_wheel() -> None:
    assert "site-packages" in str(PACKAGE)
    assert "src" not in PACKAGE.parts
