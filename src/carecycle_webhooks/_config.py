"""Configuration from the environment: the endpoint's secret.

Standard library only at import (and `_errors`), so that the command line can share it
without loading pydantic for ``--help``; the verifier loads when a secret is checked.

The endpoint's secret is read from ``CARECYCLE_WEBHOOK_SECRET`` when none is given in
code: one ``whsec_...`` secret, or several separated by whitespace while a secret is
being rotated. Messages name the variable and the position of a bad secret, never a
secret's value.
"""

from __future__ import annotations

import base64
import os
import secrets as _random
from typing import TYPE_CHECKING

from ._errors import WebhookConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["SECRET_ENV", "new_secret", "secrets_from_environment"]

SECRET_ENV = "CARECYCLE_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret


def new_secret() -> str:
    """A fresh random endpoint secret in Svix's format (``whsec_`` and 24 random bytes, base64)."""
    return "whsec_" + base64.b64encode(_random.token_bytes(24)).decode()


def secrets_from_environment(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The endpoint's secrets from ``CARECYCLE_WEBHOOK_SECRET``, each checked.

    Args:
        environ: Where to read the variable; ``os.environ`` by default.

    Returns:
        The secrets, in the order given (several while a secret is being rotated).

    Raises:
        WebhookConfigurationError: The variable is unset, empty, or holds a value that is
            not base64 (with or without ``whsec_``); the message names the variable, never the value.
    """
    value = (os.environ if environ is None else environ).get(SECRET_ENV)
    if value is None:
        raise WebhookConfigurationError(
            f"no webhook secret: pass one to Dispatcher(...) or set {SECRET_ENV} to the endpoint's "
            "whsec_... secret (several separated by spaces while rotating)"
        )
    secrets = tuple(value.split())
    if not secrets:
        raise WebhookConfigurationError(
            f"{SECRET_ENV} is set but empty: set it to the endpoint's whsec_... secret"
        )
    for position, secret in enumerate(secrets, start=1):
        problem = _problem(secret)
        if problem is not None:
            label = (
                f"secret #{position} of {len(secrets)} in {SECRET_ENV}" if len(secrets) > 1 else SECRET_ENV
            )
            raise WebhookConfigurationError(f"{label}: {problem}")
    return secrets


def _problem(secret: str) -> str | None:
    # The message is taken out of the except block, so that the error raised names the
    # variable and carries no chained cause.
    from ._verify import decode_secrets

    try:
        decode_secrets(secret)
    except WebhookConfigurationError as error:
        return str(error)  # says what is wrong, never the secret itself
    return None
