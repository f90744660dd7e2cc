"""Many tenants under real servers: gunicorn with several Flask workers, uvicorn with 2 FastAPI workers.

Two tenants, each with its own secret, read by the resolver from a file; one SQLite store
for every worker. Each tenant's deliveries verify with its own secret only, an unknown
tenant is 404, one webhook-id runs once per tenant whichever worker gets it, and a
secret rotated in the file takes effect within the cache TTL without a restart.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from carecycle_webhooks.testing import generate_secret
from tests.conftest import OTHER_SECRET, SECRET, fixture_bytes
from tests.e2e.servers import server, signed_request

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.servers import Server

E2E = Path(__file__).parent
TTL = 1.0  # seconds a worker keeps a tenant's secret
WORKERS = 3  # gunicorn's; uvicorn runs 2


@pytest.fixture(
    params=[("gunicorn", "tenant_app:flask_app", WORKERS), ("uvicorn", "tenant_app:app", 2)],
    ids=["flask-gunicorn", "fastapi-uvicorn"],
)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    kind, app, workers = request.param
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"acme": SECRET, "globex": OTHER_SECRET}))
    env = {
        "EVENTS_LOG": str(tmp_path / "events.log"),
        "TENANTS_FILE": str(tenants),
        "SQLITE_PATH": str(tmp_path / "webhooks.sqlite3"),
        "SECRET_CACHE_TTL": str(TTL),
    }
    with server(kind, app, tmp=tmp_path, env=env, workers=workers, app_dir=E2E) as started:
        yield started


def ran(running: Server) -> list[tuple[str, str, str]]:
    path = Path(running.env["EVENTS_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [(tenant, webhook_id, pid) for tenant, webhook_id, pid in (line.split() for line in lines)]


def post(running: Server, tenant: str, secret: str, msg_id: str) -> httpx.Response:
    """One delivery on a connection of its own, so that the server's workers share them."""
    body = fixture_bytes("customer.created")
    return httpx.post(f"{running.url}/webhooks/{tenant}", timeout=30, **signed_request(body, secret, msg_id))


def test_two_tenants_under_several_workers(running: Server) -> None:
    for round_ in range(4):  # enough new connections to reach more than one worker
        for tenant, secret in (("acme", SECRET), ("globex", OTHER_SECRET)):
            response = post(running, tenant, secret, "msg_shared")
            expected = {"status": "processed" if round_ == 0 else "duplicate"}
            assert (response.status_code, response.json()) == (200, expected)
    crossed = post(running, "globex", SECRET, "msg_crossed")
    assert (crossed.status_code, crossed.json()["error"]) == (400, "no_matching_signature")
    unknown = post(running, "initech", SECRET, "msg_unknown")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown_tenant"})
    runs = collections.Counter((tenant, webhook_id) for tenant, webhook_id, _ in ran(running))
    assert runs == {("acme", "msg_shared"): 1, ("globex", "msg_shared"): 1}


def test_a_rotated_secret_takes_effect_within_the_ttl_without_a_restart(running: Server) -> None:
    assert running.process is not None
    pid = running.process.pid
    for number in range(6):  # every worker likely holds acme's old secret now
        assert post(running, "acme", SECRET, f"msg_before_{number}").status_code == 200
    rotated = generate_secret()
    tenants = Path(running.env["TENANTS_FILE"])
    staged = tenants.with_suffix(".new")  # then renamed: no worker reads half a file
    staged.write_text(json.dumps({"acme": rotated, "globex": OTHER_SECRET}))
    staged.replace(tenants)
    time.sleep(TTL + 0.2)  # bounded: the TTL is what is under test
    for number in range(6):
        response = post(running, "acme", rotated, f"msg_after_{number}")
        assert (response.status_code, response.json()) == (200, {"status": "processed"})
    old = post(running, "acme", SECRET, "msg_old_secret")
    assert (old.status_code, old.json()["error"]) == (400, "no_matching_signature")
    assert (running.process.pid, running.process.poll()) == (pid, None)  # the same server, not restarted
    after = [
        (tenant, webhook_id) for tenant, webhook_id, _ in ran(running) if webhook_id.startswith("msg_after_")
    ]
    assert after == [("acme", f"msg_after_{number}") for number in range(6)]
