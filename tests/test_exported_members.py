from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import carecycle_webhooks


def test_all_is_exactly_what_is_exported() -> None:
    # Adapter submodules (carecycle_webhooks.flask, ...) are public modules, not exported names.
    public = {
        name
        for name in dir(carecycle_webhooks)
        if not name.startswith("_") and not isinstance(getattr(carecycle_webhooks, name), types.ModuleType)
    } | {"__version__"}
    assert set(carecycle_webhooks.__all__) == public
    # Kept sorted by ruff (RUF022: constants first, then the rest alphabetically).
    assert len(carecycle_webhooks.__all__) == len(set(carecycle_webhooks.__all__))


def test_every_exported_name_resolves() -> None:
    fresh = importlib.reload(carecycle_webhooks)
    for name in fresh.__all__:
        assert getattr(fresh, name) is not None


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="does_not_exist"):
        carecycle_webhooks.does_not_exist  # type: ignore[attr-defined]  # noqa: B018


def test_version() -> None:
    from importlib.metadata import version

    assert carecycle_webhooks.__version__ == version("carecycle-webhooks")


def test_import_loads_neither_pydantic_nor_svix_nor_a_framework() -> None:
    code = (
        "import sys, carecycle_webhooks;"
        "heavy = {'pydantic', 'svix', 'standardwebhooks', 'flask', 'django', 'fastapi',"
        " 'starlette', 'redis'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_parsing_loads_no_framework_and_not_svix_api_client() -> None:
    code = (
        "import sys, carecycle_webhooks as c;"
        "c.WebhookVerifier('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');"
        'c.parse_unverified_event(b\'{"event_type": "x"}\');'
        "heavy = {'svix', 'flask', 'django', 'fastapi', 'starlette', 'redis', 'httpx'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_api_reference_shows_every_exported_name_once_by_concept() -> None:
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "reference" / "carecycle_webhooks.md").read_text()
    shown = [
        line.removeprefix("::: carecycle_webhooks.") for line in page.splitlines() if line.startswith(":::")
    ]
    assert sorted(shown) == sorted(set(carecycle_webhooks.__all__) - {"__version__"})
