"""Dispatchers that the ``CARECYCLE_WEBHOOKS`` tests name by dotted path."""

from __future__ import annotations

from carecycle_webhooks import RedisIdempotencyStore
from carecycle_webhooks.django import DjangoIdempotencyStore
from tests.adapters import AsyncRedisClient, Recorder

recorder = Recorder()
webhooks = recorder.dispatcher
not_a_dispatcher = object()
asyncio_store = Recorder(idempotency_store=RedisIdempotencyStore(AsyncRedisClient())).dispatcher
unknown_database = Recorder(idempotency_store=DjangoIdempotencyStore(using="elsewhere")).dispatcher
