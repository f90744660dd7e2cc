"""Idempotency stores that are not stores: each line marked ``# E:`` must be a mypy error."""

from __future__ import annotations

import datetime

from carecycle_webhooks import AsyncIdempotencyStore, Claim, Dispatcher, IdempotencyStore

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class OnlyAcquires:
    def acquire(self, key: str, *, lease: datetime.timedelta) -> Claim:
        return Claim("acquired", "token")


class SyncMethodsNamedAsync:
    # The async protocol's names, but its methods are not coroutines.
    def acquire_async(self, key: str, *, lease: datetime.timedelta) -> Claim:
        return Claim("acquired", "token")

    def complete_async(self, key: str, token: str, *, ttl: datetime.timedelta) -> None: ...

    def release_async(self, key: str, token: str) -> None: ...


Dispatcher(SECRET, idempotency_store=OnlyAcquires())  # E: arg-type
Dispatcher(SECRET, idempotency_store=SyncMethodsNamedAsync())  # E: arg-type
sync_store: IdempotencyStore = SyncMethodsNamedAsync()  # E: assignment
async_store: AsyncIdempotencyStore = OnlyAcquires()  # E: assignment
