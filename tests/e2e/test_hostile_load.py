"""Hostile load under real servers: floods of large unsigned bodies, oversize and chunked bodies.

The attacker needs no secret: bodies are read before their signature can be checked. A
raw asyncio client sends each body in pieces and stops as soon as the server answers, as
an attacker's client would; the tests read the worker's peak memory from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import SECRET, fixture_bytes
from tests.e2e.servers import Server, server, signed_request

if TYPE_CHECKING:
    from collections.abc import Iterator

E2E = Path(__file__).parent
MIB = 1024 * 1024
PIECE = b"x" * (64 * 1024)
# A signature of the right shape that matches nothing: the body must be read and hashed.
FORGED = {"webhook-id": "msg_flood", "webhook-timestamp": "0", "webhook-signature": "v1," + "A" * 43 + "="}


def kib_of(pid: int, field: str) -> int:
    """A memory figure of a process (VmRSS, VmHWM: the peak), in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def post_raw(
    port: int,
    *,
    size: int,
    chunked: bool = False,
    declared: int | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 60.0,
) -> tuple[int | None, int, bytes]:
    """POST /webhooks; send the body in pieces until the server answers.

    Returns the status (``None`` if the connection ended without one), how many body bytes
    were sent before the answer came, and the answer's head and body.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fields = {"content-type": "application/json"} | {
        name.lower(): value for name, value in (headers if headers is not None else FORGED).items()
    }
    lines = ["POST /webhooks HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in fields.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {size if declared is None else declared}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = asyncio.ensure_future(reader.read(65536))
    sent = 0
    try:
        async with asyncio.timeout(timeout):
            while sent < size and not answer.done():
                data = body[sent : sent + len(PIECE)] if body is not None else PIECE[: size - sent]
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                await writer.drain()
                sent += len(data)
            if chunked and not answer.done():
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            head = await answer
    except (ConnectionError, asyncio.IncompleteReadError):
        # The server answered and closed while we were still sending: read what came.
        try:
            head = await asyncio.wait_for(answer, 2) if not answer.done() else answer.result()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            head = b""
    finally:
        if not answer.done():
            answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if not head.startswith(b"HTTP/1.1 "):
        return None, sent, head
    return int(head.split()[1]), sent, head


async def post_delivery(port: int, msg_id: str, *, chunked: bool = False) -> tuple[int | None, int, bytes]:
    """POST a real, signed customer.created delivery with `post_raw`."""
    request = signed_request(fixture_bytes("customer.created"), SECRET, msg_id)
    body: bytes = request["content"]
    return await post_raw(port, size=len(body), headers=request["headers"], body=body, chunked=chunked)


@pytest.fixture
def fastapi_receiver(tmp_path: Path) -> Iterator[Server]:
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET}
    with server("uvicorn", "hostile_fastapi:app", tmp=tmp_path, env=env, app_dir=E2E) as running:
        yield running


def test_a_flood_of_large_unsigned_bodies_stays_within_the_body_budget(fastapi_receiver: Server) -> None:
    assert fastapi_receiver.process is not None
    pid = fastapi_receiver.process.pid

    async def flood() -> list[int | None]:
        # Warm up with real deliveries first, so the baseline includes the parse path.
        for number in range(3):
            status, _, _ = await post_delivery(fastapi_receiver.port, f"msg_warm_{number}")
            assert status == 200
        return [
            status
            for status, _, _ in await asyncio.gather(
                *(post_raw(fastapi_receiver.port, size=10 * MIB) for _ in range(200))
            )
        ]

    baseline = kib_of(pid, "VmRSS")
    statuses = asyncio.run(flood())
    peak = kib_of(pid, "VmHWM")
    counts = {status: statuses.count(status) for status in set(statuses)}
    # Every one answered (none dropped), and only with a refusal.
    assert set(counts) <= {400, 413, 503}, counts
    assert counts.get(503, 0) > 0, counts  # the budget did refuse some
    grown_mib = (peak - baseline) / 1024
    print(f"flood: {counts}, RSS {baseline / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB")  # noqa: T201
    assert grown_mib <= 300, f"peak RSS grew by {grown_mib:.0f} MiB: {counts}"
    # And the receiver still works.
    status, _, head = asyncio.run(post_delivery(fastapi_receiver.port, "msg_after_flood"))
    assert status == 200, head
    assert "Exception in ASGI application" not in fastapi_receiver.log_text()


def test_idle_clients_declaring_large_bodies_do_not_keep_deliveries_out(fastapi_receiver: Server) -> None:
    async def scenario() -> int | None:
        idle = []
        for _ in range(4):  # 32 MiB declared in all: the whole default budget
            _, writer = await asyncio.open_connection("127.0.0.1", fastapi_receiver.port)
            head = "POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8388608\r\n\r\n{"
            writer.write(head.encode())
            await writer.drain()
            idle.append(writer)
        await asyncio.sleep(0.3)
        status, _, _ = await post_delivery(fastapi_receiver.port, "msg_beside_idle")
        for writer in idle:
            writer.close()
        return status

    assert asyncio.run(scenario()) == 200


def test_a_content_length_contradicted_by_chunked_framing_is_held_to_the_limit(
    fastapi_receiver: Server,
) -> None:
    assert fastapi_receiver.process is not None
    pid = fastapi_receiver.process.pid
    before = kib_of(pid, "VmRSS")
    status, sent, head = asyncio.run(
        post_raw(
            fastapi_receiver.port, size=100 * MIB, chunked=True, headers={**FORGED, "content-length": "1"}
        )
    )
    # Refused by the server's parser, or by us at the limit; or the connection was reset
    # before the answer could be read (the server refused it and closed).
    assert status in {400, 413, None}, head
    # Far less than the 100 MiB offered: the limit (10 MiB) and what the sockets buffered.
    assert sent < 32 * MIB
    assert (kib_of(pid, "VmHWM") - before) / 1024 < 100


def test_an_oversize_declared_body_is_refused_before_it_is_read(fastapi_receiver: Server) -> None:
    status, sent, head = asyncio.run(post_raw(fastapi_receiver.port, size=64 * MIB, declared=1024 * MIB))
    assert status == 413, head
    assert sent < 32 * MIB  # of the 1 GiB declared: only what the sockets buffered


def test_a_client_that_goes_away_mid_body_is_not_an_application_error(fastapi_receiver: Server) -> None:
    async def go_away() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", fastapi_receiver.port)
        writer.write(b"POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
        writer.write(b"{" * 1000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.5)  # the server notices the disconnect

    asyncio.run(go_away())
    status, _, _ = asyncio.run(post_delivery(fastapi_receiver.port, "msg_after_disconnect"))
    assert status == 200
    log = fastapi_receiver.log_text()
    assert "Exception in ASGI application" not in log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- Django


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_django_asgi_with_limit_webhook_bodies_refuses_before_django_reads(
    tmp_path: Path, chunked: bool
) -> None:
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET}
    with server("uvicorn", "hostile_django:asgi_application", tmp=tmp_path, env=env, app_dir=E2E) as running:
        size = 64 * MIB if chunked else 1024 * MIB
        status, sent, head = asyncio.run(post_raw(running.port, size=size, chunked=chunked))
        assert status == 413, head
        # Refused at once (declared) or as soon as the limit was passed (chunked): Django
        # received at most the limit, and the client never sent the rest.
        # (What the client sent before it read the answer is what the sockets buffered.)
        assert sent < 32 * MIB, sent
        # A real delivery, declared and chunked, still goes through.
        for number, chunk in enumerate((False, True)):
            request = signed_request(fixture_bytes("customer.created"), SECRET, f"msg_dj_asgi_{number}")
            if chunk:  # an iterator: httpx sends it chunked
                request["content"] = iter([request["content"]])
            response = httpx.post(f"{running.url}/webhooks", timeout=10, **request)
            assert (response.status_code, response.json()) == (200, {"status": "processed"})


def test_django_under_gunicorn_reads_chunked_bodies(tmp_path: Path) -> None:
    env = {"CARECYCLE_WEBHOOK_SECRET": SECRET}
    with server("gunicorn", "hostile_django:application", tmp=tmp_path, env=env, app_dir=E2E) as running:
        status, _, head = asyncio.run(post_delivery(running.port, "msg_dj_chunked", chunked=True))
        assert status == 200, head
        status, sent, head = asyncio.run(post_raw(running.port, size=11 * MIB, chunked=True))
        assert status == 413, head
        assert sent <= 11 * MIB
