"""pytest-django: the tests' own secret, before Django imports webhooks.py."""

from __future__ import annotations

import os

import pytest

from carecycle_webhooks.testing import generate_secret

# pytest imports conftest.py before pytest-django sets Django up.
os.environ["CARECYCLE_WEBHOOK_SECRET"] = generate_secret()


@pytest.fixture
def carecycle_webhook_secret() -> str:
    """The dispatcher's secret: carecycle_delivery signs with it."""
    return os.environ["CARECYCLE_WEBHOOK_SECRET"]
