"""pytest-django set-up: a secret of the tests' own, before Django imports ``myproject.webhooks``."""

from __future__ import annotations

import os

import pytest

from carecycle_webhooks.testing import generate_secret

# Module level: pytest imports conftest.py before pytest-django sets Django up.
os.environ["CARECYCLE_WEBHOOK_SECRET"] = generate_secret()


@pytest.fixture
def carecycle_webhook_secret() -> str:
    """The secret the project's dispatcher was built with: carecycle_delivery signs with it."""
    return os.environ["CARECYCLE_WEBHOOK_SECRET"]
