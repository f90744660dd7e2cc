"""Each example receiver under its real server, receiving svix-signed HTTP deliveries."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import EVENT_TYPES, SECRET, fixture_bytes
from tests.e2e.servers import Server, server, signed_request

if TYPE_CHECKING:
    from pathlib import Path

EXAMPLES = [
    pytest.param("gunicorn", "flask_app:app", id="flask-gunicorn"),
    pytest.param("gunicorn", "django_app:application", id="django-gunicorn"),
    pytest.param("uvicorn", "fastapi_app:app", id="fastapi-uvicorn"),
]


def events_log(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def exercise(running: Server, log: Path) -> None:
    url = f"{running.url}/webhooks"
    with httpx.Client(timeout=10) as client:
        for number, event_type in enumerate(EVENT_TYPES):
            response = client.post(
                url, **signed_request(fixture_bytes(event_type), SECRET, f"msg_e2e_{number}")
            )
            assert (response.status_code, response.json()) == (200, {"status": "processed"}), (
                running.log_text()
            )
        # Svix's retry of a processed delivery: 2xx, handler not run again.
        again = client.post(url, **signed_request(fixture_bytes("customer.created"), SECRET, "msg_e2e_0"))
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        unknown = b'{"event_type": "appointment.booked", "id": "appt_1"}'
        assert client.post(url, **signed_request(unknown, SECRET, "msg_e2e_unknown")).status_code == 200
        # Bad signature, stale timestamp, tampered body.
        forged = signed_request(fixture_bytes("customer.created"), "whsec_" + "A" * 32, "msg_forged")
        assert client.post(url, **forged).status_code == 400
        stale = signed_request(fixture_bytes("customer.created"), SECRET, "msg_stale")
        stale["headers"]["webhook-timestamp"] = str(int(stale["headers"]["webhook-timestamp"]) - 3600)
        assert client.post(url, **stale).status_code == 400
        tampered = signed_request(fixture_bytes("customer.created"), SECRET, "msg_tampered")
        tampered["content"] = tampered["content"].replace(b"Lead", b"Active")
        assert client.post(url, **tampered).status_code == 400
        invalid = b'{"event_type": "customer.created", "id": "not-a-uuid"}'
        assert client.post(url, **signed_request(invalid, SECRET, "msg_invalid")).status_code == 422
        assert client.get(url).status_code == 405
    assert events_log(log) == [
        {
            "webhook_id": "msg_e2e_0",
            "event_type": "customer.created",
            "id": "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b",
        },
        {
            "webhook_id": "msg_e2e_1",
            "event_type": "customer.updated",
            "id": "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b",
        },
        {
            "webhook_id": "msg_e2e_2",
            "event_type": "call.completed",
            "id": "dca4a483-af54-4899-a804-766ee5812537",
        },
        {"webhook_id": "msg_e2e_unknown", "event_type": "appointment.booked", "id": "appt_1"},
    ]
    # Nothing of the payloads' PHI reaches the server's log.
    output = running.log_text()
    for value in ("1EG4TE5MK73", "Delacroix", "1958-04-12", "+13128471928"):
        assert value not in output


@pytest.mark.parametrize(("kind", "app"), EXAMPLES)
def test_example_in_memory(kind: str, app: str, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET, "EVENTS_LOG": str(log)}
    with server(kind, app, tmp=tmp_path, env=env) as running:
        exercise(running, log)


@pytest.mark.parametrize(("kind", "app"), EXAMPLES)
def test_example_with_redis(kind: str, app: str, tmp_path: Path, redis_server, redis_client) -> None:
    log = tmp_path / "events.jsonl"
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET, "EVENTS_LOG": str(log), "REDIS_URL": redis_server.url}
    with server(kind, app, tmp=tmp_path, env=env, workers=2) as running:
        exercise(running, log)
    assert redis_client.get("carecycle-webhooks:msg_e2e_0") == b"done"


def test_example_secret_rotation(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    old = "whsec_" + "b2xkLXNlY3JldC1mb3ItdGhlLXJvdGF0aW9uLXRlc3Q="
    env = {"CARECYCLE_WEBHOOK_SECRET": f"{SECRET} {old}", "EVENTS_LOG": str(log)}
    with server("uvicorn", "fastapi_app:app", tmp=tmp_path, env=env) as running:
        for number, secret in enumerate((SECRET, old)):
            request = signed_request(fixture_bytes("customer.created"), secret, f"msg_rot_{number}")
            assert httpx.post(f"{running.url}/webhooks", timeout=10, **request).status_code == 200
    assert len(events_log(log)) == 2
