"""Secret resolvers of the wrong shape: each line marked ``# E:`` must be a mypy error."""

from __future__ import annotations

from carecycle_webhooks import Dispatcher


def by_number(tenant: int) -> str:
    return str(tenant)


def two_arguments(tenant: str, region: str) -> str:
    return tenant + region


def answers_a_number(tenant: str) -> int:
    return len(tenant)


Dispatcher(by_number)  # E: arg-type
Dispatcher(two_arguments)  # E: arg-type
Dispatcher(answers_a_number)  # E: arg-type
Dispatcher("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").handle(b"", {}, tenant=42)  # E: arg-type
Dispatcher("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", skip_out_of_order="yes")  # E: arg-type
