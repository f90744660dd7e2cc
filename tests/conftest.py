from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from svix.webhooks import Webhook as SvixWebhook

FIXTURES = Path(__file__).parent / "fixtures"
EVENT_TYPES = ("customer.created", "customer.updated", "call.completed")

# CI runs more examples; a developer's loop stays quick. CARECYCLE_HYPOTHESIS_PROFILE
# chooses: scripts/matrix asks for "dev", as its runs check versions, not more inputs.
# No deadline in either: an example's time is not what these tests check (speed is the
# benchmarks' job), and on a loaded machine a first, cold example took 293 ms against
# hypothesis's default of 200 ms, which failed a CI run.
settings.register_profile("ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(
    os.environ.get("CARECYCLE_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

SECRET = "whsec_" + base64.b64encode(b"carecycle-webhooks-test-secret-0001").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"carecycle-webhooks-other-secret-02").decode()


def load_fixture(event_type: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{event_type}.json").read_text())


def fixture_bytes(event_type: str) -> bytes:
    return (FIXTURES / f"{event_type}.json").read_bytes()


def svix_headers(
    body: bytes | str,
    *,
    secret: str = SECRET,
    msg_id: str = "msg_2Lm1bFf5ZsqHw5e2yd0DgPzm5Tx",
    timestamp: int | None = None,
    prefix: str = "webhook",
) -> dict[str, str]:
    """Headers for ``body`` as Svix sends them, signed by svix's own ``Webhook.sign``."""
    when = (
        datetime.datetime.now(tz=datetime.timezone.utc)
        if timestamp is None
        else (datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc))
    )
    text = body.decode() if isinstance(body, bytes) else body
    signature = SvixWebhook(secret).sign(msg_id, when, text)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(when.timestamp())),
        f"{prefix}-signature": signature,
    }


@pytest.fixture(params=EVENT_TYPES)
def event_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def redis_server():
    """A real ``redis-server`` on a free loopback port for the whole session (see tests/redis_server.py).

    Tests may stop and restart it; `redis_client` starts it again if a test left it stopped.
    """
    from tests.redis_server import RedisServer, find_redis_server

    server = RedisServer(find_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.close()


def _redis_options() -> dict[str, Any]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: an outage surfaces at once (redis-py's default retries take seconds).
    return {
        "host": "127.0.0.1",
        "socket_timeout": 1,
        "socket_connect_timeout": 1,
        "retry": Retry(NoBackoff(), 0),
    }


@pytest.fixture
def redis_client(redis_server):
    """A synchronous ``redis.Redis`` on `redis_server`, its database flushed before the test."""
    import redis

    redis_server.ensure_running()
    client = redis.Redis(port=redis_server.port, **_redis_options())
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def async_redis_client(redis_server, redis_client):
    """Connects a ``redis.asyncio.Redis`` on `redis_server`, inside the test's own event loop.

    An asyncio client belongs to the loop it first runs on, and the tests call
    ``asyncio.run`` themselves, so this is a factory of async context managers::

        async def main() -> None:
            async with async_redis_client() as client:
                ...

        asyncio.run(main())

    The database is flushed before the test (by `redis_client`); the client is closed
    (``aclose``) when the block exits.
    """
    import contextlib

    import redis.asyncio

    @contextlib.asynccontextmanager
    async def connect():
        client = redis.asyncio.Redis(port=redis_server.port, **_redis_options())
        try:
            yield client
        finally:
            await client.aclose()

    return connect


# --------------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on a free loopback port for the whole session (tests/postgres_server.py).

    Tests may stop, crash (``kill -9``), pause and restart it; `postgres_dsn` starts it again
    (or resumes it) if a test left it stopped or paused.
    """
    from tests.postgres_server import PostgresServer, find_postgres_bindir

    server = PostgresServer(find_postgres_bindir())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """A libpq connection string to the session server's ``postgres`` database, the server running."""
    postgres_server.ensure_running()
    return str(postgres_server.dsn)


@pytest.fixture
def postgres_database(postgres_server):
    """A fresh, empty database for this test (dropped after it); yields its libpq connection string."""
    import uuid

    postgres_server.ensure_running()
    name = f"test_{uuid.uuid4().hex[:16]}"
    dsn = postgres_server.create_database(name)
    try:
        yield dsn
    finally:
        postgres_server.ensure_running()
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_table() -> str:
    """A table name no other test uses, for tests that share the ``postgres`` database."""
    import uuid

    return f"carecycle_test_{uuid.uuid4().hex[:16]}"


@pytest.fixture(autouse=True)
def quick_done_mark_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry a failed done mark within milliseconds, not seconds: tests of a store down.

    tests/test_flow.py holds the real schedule; a test that needs it sets it back.
    """
    monkeypatch.setattr("carecycle_webhooks._flow.RETRY_DELAYS", (0.001, 0.002, 0.004, 0.008))
