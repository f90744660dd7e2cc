"""Coverage that is true: every module of the package is measured from its first import.

The package's own pytest plugin (a ``pytest11`` entry point) imports the package when
pytest loads its plugins, before pytest-cov would start measuring: its module-level
lines would be reported as never run (the plugin at 50 %, ``_errors.py`` at 21 %). So
scripts/test starts coverage before pytest (``coverage run -m pytest``). This test fails
if a run measures the package, but started after some of it was imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage
import pytest

import carecycle_webhooks

PACKAGE = Path(carecycle_webhooks.__file__).resolve().parent


def imported_modules() -> dict[str, Path]:
    """The package's modules imported in this process, by name, with their files."""
    found: dict[str, Path] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (name == "carecycle_webhooks" or name.startswith("carecycle_webhooks.")) and file:
            found[name] = Path(file).resolve()
    return found


def test_every_imported_module_is_measured_from_its_first_line() -> None:
    measuring = coverage.Coverage.current()
    if measuring is None:
        pytest.skip("this run is not measured (scripts/test runs it under coverage)")
    modules = imported_modules()
    # Those the plugin imports, before any test runs.
    assert {"carecycle_webhooks", "carecycle_webhooks._errors", "carecycle_webhooks.pytest_plugin"} <= set(
        modules
    )
    unmeasured: list[str] = []
    for name, file in sorted(modules.items()):
        if not file.is_relative_to(PACKAGE) or file.suffix != ".py":
            continue
        _, statements, _, missing, _ = measuring.analysis2(str(file))
        # The first statement of a module runs whenever it is imported.
        if statements and min(statements) in missing:
            unmeasured.append(name)
    assert not unmeasured, (
        f"imported before coverage started, so reported as never run: {unmeasured}; "
        "start coverage before pytest loads its plugins (coverage run -m pytest)"
    )
