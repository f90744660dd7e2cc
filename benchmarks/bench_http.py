"""Requests per second through ``webhook_view`` vs a bare svix endpoint of the same framework.

Run: ``.venv/bin/python benchmarks/bench_http.py [--rounds 12] [--seconds 2] [--warmup 2]
[--connections 8] [--frameworks flask,django,fastapi] [--min-ids 20000] [--no-pin]
[--loadgen auto|wrk|python]``

Per framework, one server process with ONE worker (Flask and Django under gunicorn with a
sync worker, FastAPI under uvicorn) serves two routes of the same app (``http_apps/``):

* bare: ``svix.webhooks.Webhook(secret).verify(body, headers)`` (the ``Webhook`` built once,
  at import) + ``json.loads(body)``, then 200;
* ours: ``webhook_view(dispatcher)``, a ``Dispatcher`` with an ``InMemoryIdempotencyStore``
  and a trivial handler for each event type (FastAPI: ``async def`` handlers; plain ``def``
  handlers, run in a worker thread, are measured too, for context);
* bare, again: the bare endpoint at a second path, an A/A control. It differs from bare
  only by the measurement's noise, so its ratio shows how far apart two identical
  endpoints come out on this machine (on a shared 2-core VM, several percent).

The load comes from a second process on 127.0.0.1: ``wrk`` (one thread) with a generated
Lua script that sends the ``customer.created`` fixture under pre-signed headers (svix's
``Webhook.sign``, current timestamp), each request with its own ``webhook-id``: fresh ids
for every wrk run, never reused within a run (sized from the warm-up's rate), so no
delivery is a duplicate. On a machine with 2+ cores the server is pinned to CPU 0 and the
load generator to CPU 1. After a warm-up, the endpoints are measured in rounds: a round
runs each endpoint twice, in an order and then in its reverse (A B C C B A), so that a
steady drift of the machine's speed during the round weighs on every endpoint alike, and
the order rotates from round to round. The ratio judged is the median, over the rounds,
of ours / bare within one round: this cancels the drift between rounds, which on a shared
VM moves one endpoint's requests per second by 20 % or more; the A/A control shows how
much noise is left. The ratio of the
median requests per second, of all requests over all time, and of server CPU time per
request are printed too.
Every response must be 2xx: any other status, or a repeated id, invalidates the result
and is printed as such.

Target: ours >= 0.90 x bare (requests per second), for each framework; 0.85 with
``--store sqlite``; none with ``--store redis``. Prints the
verdicts; always exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import itertools
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import _payloads as p
import httpx
from _http_loadgen import WRK_SCRIPT
from svix.webhooks import Webhook

import carecycle_webhooks

if TYPE_CHECKING:
    from collections.abc import Iterator

    from typing_extensions import Self

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "http_apps"
BIN = Path(sys.executable).parent
TARGETS = {"memory": 0.90, "sqlite": 0.85, "redis": None}
"""ours/bare to reach, by ``--store``: 0.90 with the in-memory store, 0.85 with SQLite (issue
11: two write transactions per delivery); Redis is reported, without a target."""
START_TIMEOUT = 30.0
SERVER_CPU, LOADGEN_CPU = 0, 1


@dataclass
class Framework:
    key: str
    title: str
    server: str  # "gunicorn" or "uvicorn"
    app: str
    endpoints: dict[str, str]  # label -> path; the first is the peer, the second is judged
    context: tuple[str, ...] = ()  # labels measured for context only (no verdict)


CONTROL = "bare, again"  # the A/A control: the peer's endpoint at a second path
_SYNC = {"bare": "/bare", "ours": "/ours", CONTROL: "/bare-again"}
FRAMEWORKS = {
    "flask": Framework("flask", "Flask", "gunicorn", "flask_bench:app", _SYNC, context=(CONTROL,)),
    "django": Framework(
        "django", "Django", "gunicorn", "django_bench:application", _SYNC, context=(CONTROL,)
    ),
    "fastapi": Framework(
        "fastapi",
        "FastAPI",
        "uvicorn",
        "fastapi_bench:app",
        {**_SYNC, "ours, sync handlers": "/ours-sync-handlers"},
        context=(CONTROL, "ours, sync handlers"),
    ),
}


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    non2xx: int
    socket_errors: dict[str, int]
    issued: int
    lines: int
    wrapped: int
    p50_ms: float
    p99_ms: float
    statuses: str
    server_cpu_s: float = 0.0  # CPU time of the server's processes during the run

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else math.inf

    @property
    def utilisation(self) -> float:
        return self.server_cpu_s / self.duration_s if self.duration_s else 0.0


@dataclass
class Samples:
    results: list[LoadResult] = field(default_factory=list)

    @property
    def median_rps(self) -> float:
        return p.median([r.rps for r in self.results])

    @property
    def mean_rps(self) -> float:
        """Every request of every round over their whole time."""
        seconds = sum(r.duration_s for r in self.results)
        return sum(r.requests for r in self.results) / seconds if seconds else 0.0

    @property
    def median_cpu_us(self) -> float:
        return p.median([r.cpu_us_per_request for r in self.results])

    @property
    def non2xx(self) -> int:
        return sum(r.non2xx for r in self.results)

    @property
    def socket_errors(self) -> int:
        return sum(sum(r.socket_errors.values()) for r in self.results)

    @property
    def wrapped(self) -> int:
        return sum(r.wrapped for r in self.results)


# ---------------------------------------------------------------------- pre-signed requests


class Signer:
    """Writes files of distinct ``webhook-id`` s signed by svix's ``Webhook.sign`` now."""

    def __init__(self, body: bytes, workdir: Path) -> None:
        self.body = body
        self.text = body.decode("utf-8")
        self.workdir = workdir
        self.webhook = Webhook(p.SECRET)
        self.run_tag = secrets.token_hex(4)  # ids differ from any earlier run's too
        self.counter = itertools.count()

    def ids_file(self, count: int) -> Path:
        now = datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0)
        timestamp = str(int(now.timestamp()))
        path = self.workdir / "ids.tsv"
        lines = []
        for _ in range(count):
            msg_id = f"msg_{self.run_tag}{next(self.counter):018d}"  # 30 characters, like Svix's
            lines.append(f"{msg_id}\t{timestamp}\t{self.webhook.sign(msg_id, now, self.text)}\n")
        path.write_text("".join(lines), encoding="ascii")
        return path

    def one(self) -> dict[str, str]:
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        msg_id = f"msg_{self.run_tag}{next(self.counter):018d}"
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(msg_id, now, self.text),
            "content-type": "application/json",
        }


# ---------------------------------------------------------------------- processes

STORES = {
    "memory": "InMemoryIdempotencyStore",
    "sqlite": "SQLiteIdempotencyStore, a file in a temporary directory (shared by nothing else)",
    "redis": "RedisIdempotencyStore (synchronous redis.Redis client), a redis-server on 127.0.0.1 "
    "without persistence, pinned with the server",
}


@contextlib.contextmanager
def _store(kind: str, workdir: Path, cpu: int | None) -> Iterator[dict[str, str]]:
    """The environment that tells the apps (``_bench_common.store``) which store to build."""
    if kind == "sqlite":
        yield {"BENCH_STORE": "sqlite", "BENCH_SQLITE_PATH": str(workdir / "idempotency.sqlite3")}
        return
    if kind != "redis":
        yield {"BENCH_STORE": kind}
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH: apt-get install redis-server")
    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        preexec_fn=lambda: _pin(cpu),  # noqa: PLW1509 - no threads in this process yet
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield {"BENCH_STORE": "redis", "BENCH_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(
        self, framework: Framework, workdir: Path, cpu: int | None, store_env: dict[str, str]
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{framework.key}-server.log"
        if framework.server == "gunicorn":
            self.command = [
                str(BIN / "gunicorn"), "--chdir", str(APPS), "-b", f"127.0.0.1:{self.port}",
                "--workers", "1", "--worker-class", "sync", "--log-level", "warning", framework.app,
            ]  # fmt: skip
        else:
            self.command = [
                str(BIN / "uvicorn"), "--app-dir", str(APPS), "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1", "--no-access-log",
                "--log-level", "warning", framework.app,
            ]  # fmt: skip
        self.cpu = cpu
        self.env = {**os.environ, **store_env, "BENCH_WEBHOOK_SECRET": p.SECRET, "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=BENCH.parent,
                start_new_session=True,
                preexec_fn=lambda: _pin(self.cpu),  # noqa: PLW1509 - no threads in this process yet
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.__exit__()
        sys.exit(f"server did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of every process in the server's session (Linux)."""
        if self.process is None:
            return 0.0
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[3]) == self.process.pid:  # pgrp: the session leader's pid
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")


class LoadGenerator:
    def __init__(self, kind: str, connections: int, workdir: Path, body_file: Path, cpu: int | None) -> None:
        self.kind = kind
        self.connections = connections
        self.workdir = workdir
        self.body_file = body_file
        self.cpu = cpu
        self.script = workdir / "bench.lua"
        self.script.write_text(WRK_SCRIPT, encoding="utf-8")

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
            first = (version.stdout or version.stderr).splitlines()[0].split("Copyright")[0].strip()
            return f"{first} (1 thread, {self.connections} connections, Lua-generated requests)"
        return (
            f"Python asyncio fallback ({self.connections} connections); wrk not found: "
            "install it (apt-get install -y wrk) for trustworthy numbers"
        )

    def run(self, url: str, ids_file: Path, seconds: int) -> LoadResult:
        if self.kind == "wrk":
            command = [
                "wrk", "-t1", f"-c{self.connections}", f"-d{seconds}s", "--timeout", "5s",
                "-s", str(self.script), url, "--", str(ids_file), str(self.body_file), "1",
            ]  # fmt: skip
        else:
            command = [
                sys.executable, str(BENCH / "_http_loadgen.py"), url, str(ids_file),
                str(self.body_file), str(self.connections), str(seconds),
            ]  # fmt: skip
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=lambda: _pin(self.cpu),
        )
        for line in completed.stdout.splitlines():
            if line.startswith("BENCHRESULT "):
                return _parse_result(line)
        sys.exit(f"load generator failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")


def _combine(results: list[LoadResult]) -> LoadResult:
    """Several runs of one endpoint as one: their requests over their time."""
    statuses = ",".join(r.statuses for r in results if r.statuses)
    return LoadResult(
        requests=sum(r.requests for r in results),
        duration_s=sum(r.duration_s for r in results),
        non2xx=sum(r.non2xx for r in results),
        socket_errors={
            name: sum(r.socket_errors.get(name, 0) for r in results) for name in results[0].socket_errors
        },
        issued=sum(r.issued for r in results),
        lines=sum(r.lines for r in results),
        wrapped=sum(r.wrapped for r in results),
        p50_ms=p.median([r.p50_ms for r in results]),
        p99_ms=max(r.p99_ms for r in results),
        statuses=statuses,
        server_cpu_s=sum(r.server_cpu_s for r in results),
    )


def _parse_result(line: str) -> LoadResult:
    values = dict(item.split("=", 1) for item in line.split()[1:])
    return LoadResult(
        requests=int(values["requests"]),
        duration_s=int(values["duration_us"]) / 1e6,
        non2xx=int(values["non2xx"]),
        socket_errors={name: int(values[name]) for name in ("connect", "read", "write", "timeout")},
        issued=int(values["issued"]),
        lines=int(values["lines"]),
        wrapped=int(values["wrapped"]),
        p50_ms=int(values["p50_us"]) / 1000,
        p99_ms=int(values["p99_us"]) / 1000,
        statuses=values.get("statuses", ""),
    )


# ---------------------------------------------------------------------- the benchmark


def _sanity_check(server: Server, framework: Framework, signer: Signer) -> None:
    """Every endpoint accepts a signed delivery; ours deduplicates a replay (the store is on)."""
    for label, path in framework.endpoints.items():
        headers = signer.one()
        first = httpx.post(server.url + path, content=signer.body, headers=headers, timeout=10)
        if first.status_code != 200:
            sys.exit(f"{framework.title} {label}: {first.status_code} {first.text}\n{server.log_tail()}")
        if label not in ("bare", CONTROL):
            replay = httpx.post(server.url + path, content=signer.body, headers=headers, timeout=10)
            if replay.json() != {"status": "duplicate"} or first.json() != {"status": "processed"}:
                sys.exit(f"{framework.title} {label}: unexpected answers {first.text} / {replay.text}")


def _ids_needed(rps: float, seconds: float, minimum: int, connections: int) -> int:
    return max(minimum, math.ceil(rps * seconds * 2) + connections)


def _measure(server: Server, loadgen: LoadGenerator, url: str, ids: Path, seconds: int) -> LoadResult:
    before = server.cpu_seconds()
    result = loadgen.run(url, ids, seconds)
    result.server_cpu_s = server.cpu_seconds() - before
    return result


def _fmt_result(result: LoadResult) -> str:
    text = (
        f"{result.rps:8,.0f} rps (p50 {result.p50_ms:5.2f} ms; server CPU {result.cpu_us_per_request:4.0f} µs"
        f"/request, busy {result.utilisation:4.0%})"
    )
    problems = []
    if result.non2xx:
        problems.append(f"NON-2xx {result.non2xx} [{result.statuses}]")
    if sum(result.socket_errors.values()):
        errors = {name: count for name, count in result.socket_errors.items() if count}
        problems.append(f"socket errors {errors}")
    if result.wrapped:
        problems.append(f"IDS REPEATED {result.wrapped}")
    return text + ("  !! " + "; ".join(problems) if problems else "")


def bench_framework(
    framework: Framework,
    args: argparse.Namespace,
    loadgen: LoadGenerator,
    signer: Signer,
    workdir: Path,
    store_env: dict[str, str],
) -> dict[str, Samples]:
    server_version = importlib.metadata.version(framework.server)
    framework_version = importlib.metadata.version(framework.key)
    if framework.server == "gunicorn":
        how = f"gunicorn {server_version}, 1 sync worker (--workers 1 --worker-class sync)"
    else:
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        how = f"uvicorn {server_version}, 1 worker process ({loop} loop, {http})"
    print()
    print(f"{framework.title} {framework_version} under {how}")
    labels = list(framework.endpoints)
    samples = {label: Samples() for label in labels}
    server_cpu = SERVER_CPU if loadgen.cpu is not None else None
    with Server(framework, workdir, server_cpu, store_env) as server:
        _sanity_check(server, framework, signer)
        estimate: dict[str, float] = {}
        for label in labels:
            ids = signer.ids_file(_ids_needed(0, 0, args.min_ids, args.connections))
            warm = _measure(server, loadgen, server.url + framework.endpoints[label], ids, args.warmup)
            estimate[label] = warm.rps
            print(f"  warm-up  {label:<20} {_fmt_result(warm)}")
        # A round runs the endpoints in an order and then in its reverse (A B C C B A), so
        # that a drift of the machine's speed during the round weighs on each endpoint
        # alike; the order rotates from round to round, each endpoint starting equally often.
        rounds = math.ceil(args.rounds / len(labels)) * len(labels)
        for r in range(rounds):
            order = labels[r % len(labels) :] + labels[: r % len(labels)]
            runs: dict[str, list[LoadResult]] = {label: [] for label in labels}
            for label in order + order[::-1]:
                ids = signer.ids_file(
                    _ids_needed(estimate[label], args.seconds, args.min_ids, args.connections)
                )
                result = _measure(server, loadgen, server.url + framework.endpoints[label], ids, args.seconds)
                runs[label].append(result)
                estimate[label] = max(estimate[label], result.rps)
            for label in labels:
                combined = _combine(runs[label])
                samples[label].results.append(combined)
                print(f"  round {r + 1:<2} {label:<20} {_fmt_result(combined)}")
        if server.process is not None and server.process.poll() is not None:
            print(f"  !! the server exited during the run:\n{server.log_tail()}")
    return samples


def _report(framework: Framework, samples: dict[str, Samples], target: float | None) -> str:
    labels = list(framework.endpoints)
    peer = samples[labels[0]]
    lines = []
    for label in labels:
        s = samples[label]
        lines.append(
            f"  median {label:<20} {s.median_rps:8,.0f} rps, server CPU {s.median_cpu_us:4.0f} µs/request;"
            f" non-2xx {s.non2xx}, socket errors {s.socket_errors}, repeated ids {s.wrapped}"
        )
    invalid = [label for label in labels if samples[label].non2xx or samples[label].wrapped]
    for label in labels[1:]:
        ratio = p.median([o.rps / b.rps for o, b in zip(samples[label].results, peer.results, strict=True)])
        if label == CONTROL:
            verdict = "A/A control: the same endpoint as bare; its distance from 1 is the noise"
        elif label in framework.context or target is None:
            verdict = "context only (no target)"
        else:
            verdict = f"target >= {target:.2f}: {'MET' if ratio >= target else 'NOT MET'}"
        lines.append(f"  ratio {label}/bare (median of per-round ratios): {ratio:.3f}   {verdict}")
        medians = samples[label].median_rps / peer.median_rps
        mean = samples[label].mean_rps / peer.mean_rps
        cpu = peer.median_cpu_us / samples[label].median_cpu_us
        lines.append(
            f"    also: of the median rps {medians:.3f}; all requests over all time {mean:.3f}; "
            f"by server CPU per request {cpu:.3f}"
        )
    busy = min(r.utilisation for s in samples.values() for r in s.results)
    if busy < 0.85:
        lines.append(
            f"  ! the server was busy only {busy:.0%} of some round: another process took its CPU, "
            "or the load generator did not keep it saturated; the rps are less reliable than the CPU column"
        )
    if invalid:
        lines.append(
            "  !!!!! INVALID COMPARISON: non-2xx responses or repeated webhook-ids on "
            f"{', '.join(invalid)} !!!!!"
        )
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # `timeout` or a shell's kill: leave through the `with` blocks, which stop the servers.
    sys.exit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=12, help="rounds, each timing every endpoint twice (A B C C B A)"
    )
    parser.add_argument("--seconds", type=int, default=2, help="duration of one timed run")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up run per endpoint, seconds")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--frameworks", default="flask,django,fastapi", help="comma-separated subset")
    parser.add_argument("--min-ids", type=int, default=20_000, help="fewest pre-signed ids per run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to CPUs")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--store",
        choices=STORES,
        default="memory",
        help="ours' idempotency store: in memory, a SQLite file in a temporary directory, a redis-server",
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.frameworks.split(",") if name.strip()]
    if unknown := [name for name in chosen if name not in FRAMEWORKS]:
        parser.error(f"unknown frameworks {unknown}; choose from {', '.join(FRAMEWORKS)}")

    kind = args.loadgen
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    if kind == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not on PATH: apt-get install -y wrk (or --loadgen python)")
    cpus = os.cpu_count() or 1
    pin = not args.no_pin and cpus >= 2 and hasattr(os, "sched_setaffinity")

    body = p.fixture_text("customer.created").encode("utf-8")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-http-")))
        body_file = workdir / "body.json"
        body_file.write_bytes(body)
        loadgen = LoadGenerator(kind, args.connections, workdir, body_file, LOADGEN_CPU if pin else None)
        signer = Signer(body, workdir)
        store_env = stack.enter_context(_store(args.store, workdir, SERVER_CPU if pin else None))

        print("HTTP throughput: webhook_view(dispatcher) vs a bare svix verify + json.loads endpoint")
        print(f"Python {platform.python_version()} on {platform.machine()}, {cpus} CPUs")
        with contextlib.suppress(OSError):
            load = Path("/proc/loadavg").read_text().split()[:3]
            print(f"Load average before the run: {' '.join(load)} (the machine should be otherwise idle)")
        print(f"carecycle_webhooks from {carecycle_webhooks.__file__}")
        print(
            "Server: ONE worker process per framework"
            + (f", pinned to CPU {SERVER_CPU}" if pin else " (not pinned)")
        )
        print(
            f"Load:   {loadgen.describe()}, from a second process on 127.0.0.1"
            + (f", pinned to CPU {LOADGEN_CPU}" if pin else " (not pinned)")
        )
        print(f"Store:  ours' idempotency store is {STORES[args.store]}")
        print(
            f"Payload: customer.created fixture, {len(body):,} bytes; every request has its own "
            "webhook-id, signed by svix's Webhook.sign"
        )
        print(
            f"Rounds: {args.rounds} (up to a multiple of the endpoints), each running every endpoint "
            f"twice for {args.seconds:g} s, in an order and its reverse (A B C C B A; the order rotates), "
            f"after a {args.warmup:g} s warm-up each; median of the per-round ratios judged"
        )

        reports = []
        for name in chosen:
            framework = FRAMEWORKS[name]
            samples = bench_framework(framework, args, loadgen, signer, workdir, store_env)
            report = _report(framework, samples, TARGETS[args.store])
            print(report)
            reports.append(f"{framework.title}:\n{report}")

    print()
    target = TARGETS[args.store]
    goal = "no target" if target is None else f"target ours >= {target:.2f} x bare"
    print(f"Summary (1 server worker, {STORES[args.store]}; {goal})")
    for report in reports:
        print(report)


if __name__ == "__main__":
    main()
