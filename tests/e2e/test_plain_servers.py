"""The plain WSGI application under gunicorn and the plain ASGI application under uvicorn.

Real servers on a free loopback port, real HTTP: a delivery is processed once and its
copy answered as a duplicate, a chunked body is read whole (gunicorn de-chunks it and
sets ``wsgi.input_terminated``), a body over the limit is answered 413 whether it
declares its length or is chunked, and other methods get 405.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, fixture_bytes
from tests.e2e.servers import server, signed_request

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.servers import Server

E2E = Path(__file__).parent
LIMIT = 64 * 1024


@pytest.fixture(params=[("gunicorn", "plain_app:wsgi"), ("uvicorn", "plain_app:asgi")], ids=["wsgi", "asgi"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    kind, app = request.param
    env = {
        "CARECYCLE_WEBHOOK_SECRET": SECRET,
        "EVENTS_LOG": str(tmp_path / "events.log"),
        "MAX_BODY_SIZE": str(LIMIT),
    }
    with server(kind, app, tmp=tmp_path, env=env, app_dir=E2E) as started:
        yield started


def ran(running: Server) -> list[str]:
    path = Path(running.env["EVENTS_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def chunked(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


def test_deliveries_over_real_http(running: Server) -> None:
    url = f"{running.url}/webhooks"
    body = fixture_bytes("customer.created")
    with httpx.Client(timeout=30) as client:
        first = client.post(url, **signed_request(body, SECRET, "msg_plain_1"))
        again = client.post(url, **signed_request(body, SECRET, "msg_plain_1"))
        assert (first.status_code, first.json()) == (200, {"status": "processed"})
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})

        request = signed_request(body, SECRET, "msg_plain_chunked")
        response = client.post(url, content=chunked(body), headers=request["headers"])
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert (response.status_code, response.json()) == (200, {"status": "processed"})

        large = b" " * (LIMIT + 1)
        declared = client.post(url, **signed_request(large, SECRET, "msg_plain_large"))
        assert (declared.status_code, declared.json()) == (413, {"error": "body_too_large", "limit": LIMIT})
        streamed = client.post(url, content=chunked(large), headers=request["headers"])
        assert (streamed.status_code, streamed.json()["error"]) == (413, "body_too_large")

        get = client.get(url)
        assert (get.status_code, get.headers["allow"]) == (405, "POST")
    assert ran(running) == ["msg_plain_1", "msg_plain_chunked"]
