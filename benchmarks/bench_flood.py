"""Peak memory of one uvicorn worker under a flood of large, unsigned bodies: ours against bare.

The attacker needs no secret: every body is read before its signature can be checked.
Each endpoint gets a fresh server process (``http_apps/fastapi_bench.py``, one worker),
three real deliveries to warm it up, then ``--bodies`` concurrent requests of
``--body-mib`` MiB each with a forged signature, sent in 64 KiB pieces by a raw asyncio
client that stops sending as soon as the server answers (as an attacker's client would).
The worker's peak RSS (VmHWM in /proc) above its RSS before the flood is reported, with
the answers' status codes and the wall time. Target: ours grows by at most 300 MiB for
200 bodies of 10 MiB, every answer 400, 413 or 503.

Usage: .venv/bin/python benchmarks/bench_flood.py [--bodies 200] [--body-mib 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from _payloads import SECRET, fixture_text
from svix.webhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PIECE = b"x" * (64 * 1024)
MIB = 1024 * 1024
FORGED = {"webhook-id": "msg_flood", "webhook-timestamp": "0", "webhook-signature": "v1," + "A" * 43 + "="}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


async def post(
    port: int, path: str, size: int, headers: dict[str, str], body: bytes | None = None
) -> int | None:
    """POST ``size`` bytes to ``path`` in pieces until the server answers; its status, or None."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {size}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = asyncio.ensure_future(reader.read(1024))
    sent = 0
    try:
        while sent < size and not answer.done():
            data = body[sent : sent + len(PIECE)] if body is not None else PIECE[: size - sent]
            writer.write(data)
            await writer.drain()
            sent += len(data)
        head = await asyncio.wait_for(answer, 120)
    except (ConnectionError, asyncio.IncompleteReadError):
        head = answer.result() if answer.done() and not answer.exception() else b""
    finally:
        if not answer.done():
            answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None


def signed(number: int) -> tuple[bytes, dict[str, str]]:
    body = fixture_text("customer.created").encode()
    msg_id = f"msg_warm_{number}_{time.monotonic_ns()}"
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    signature = Webhook(SECRET).sign(msg_id, now, body.decode())
    return body, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def run(path: str, bodies: int, body_mib: int) -> dict[str, object]:
    port = free_port()
    env = {**os.environ, "BENCH_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    command = [
        str(BIN / "uvicorn"), "--app-dir", str(ROOT / "benchmarks" / "http_apps"), "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--log-level", "warning", "fastapi_bench:app",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)

        async def flood() -> tuple[list[int | None], float]:
            for number in range(3):
                body, headers = signed(number)
                await post(port, path, len(body), headers, body)
            started = time.perf_counter()
            statuses = await asyncio.gather(
                *(post(port, path, body_mib * MIB, FORGED) for _ in range(bodies))
            )
            return list(statuses), time.perf_counter() - started

        before = kib(server.pid, "VmRSS")
        statuses, seconds = asyncio.run(flood())
        peak = kib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(timeout=30)
    counts = {status: statuses.count(status) for status in sorted(set(statuses), key=str)}
    return {
        "grown_mib": (peak - before) / 1024,
        "peak_mib": peak / 1024,
        "statuses": counts,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bodies", type=int, default=200)
    parser.add_argument("--body-mib", type=int, default=10)
    options = parser.parse_args()
    print(
        f"{options.bodies} concurrent bodies of {options.body_mib} MiB, forged signatures, one uvicorn worker"
    )
    results = {
        name: run(path, options.bodies, options.body_mib)
        for name, path in (("bare", "/bare"), ("ours", "/ours"))
    }
    for name, result in results.items():
        print(
            f"{name:5} peak RSS +{result['grown_mib']:7.0f} MiB (peak {result['peak_mib']:.0f} MiB)"
            f"  {result['seconds']:5.1f} s  answers {result['statuses']}"
        )
    ours, bare = results["ours"], results["bare"]
    ratio = float(ours["grown_mib"]) / max(float(bare["grown_mib"]), 1.0)  # type: ignore[arg-type]
    answered = set(ours["statuses"]) <= {400, 413, 503}  # type: ignore[arg-type]
    met = float(ours["grown_mib"]) <= 300 and answered  # type: ignore[arg-type]
    verdict = "MET" if met else "NOT MET"
    print(f"ours/bare peak growth: {ratio:.3f}; target (ours <= 300 MiB, answers 400/413/503): {verdict}")


if __name__ == "__main__":
    main()
