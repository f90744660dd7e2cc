"""Cold start, whole processes: carecycle_webhooks vs svix.

Run: ``.venv/bin/python benchmarks/bench_cold_start.py [--runs 20]``

Each variant is a fresh ``python -c ...`` (this interpreter), timed from spawn to exit;
the variants run alternately (the order rotates every round) after two warm-up runs
each, and the medians are compared.

(a) ``import carecycle_webhooks`` vs ``import svix.webhooks``; target ratio <= 0.40.
(b) import + the first verified parse of the customer.created fixture, vs
    ``import svix.webhooks`` + ``Webhook(secret).verify(...)`` + ``json.loads``; target <= 0.50.
    Both children read the same precomputed JSON file (body, headers, secret), signed
    now and re-signed if the run gets near the 5-minute tolerance.
(c) an AWS Lambda cold start: import + build the handler (a `Dispatcher` with one
    handler, `aws_lambda.webhook_handler`) + the first event (a function URL's, the
    same delivery) handled, vs the same peer as (b); target <= 0.30 (issue 12).

Every module that either side imports is timed from its bytecode cache, as it would load
in a deployment (pip compiles what it installs; a Lambda package ships the ``.pyc``
files). An editable install, or ``PYTHONDONTWRITEBYTECODE`` set in the environment, leaves
a package without one, and each child would compile it anew: such modules are compiled
once before the warm-up, and the script says how many.

``python -c pass`` is timed too, as the floor, and, for context, what any pydantic-based
(c) pays before its own work: ``import pydantic`` and one model class (built lazily, so no
validator). Prints the verdicts; always exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import py_compile
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _payloads as p

_RESIGN_AFTER_S = 120

_READ = (
    "import json, sys\nwith open(sys.argv[1], 'rb') as f:\n    d = json.load(f)\nbody = d['body'].encode()\n"
)

VARIANTS = {
    "floor: pass": "pass",
    "context: pydantic + one model class": "from pydantic import BaseModel, ConfigDict\n"
    "class Model(BaseModel):\n    model_config = ConfigDict(defer_build=True)\n    name: str\n",
    "(a) ours: import carecycle_webhooks": "import carecycle_webhooks",
    "(a) peer: import svix.webhooks": "import svix.webhooks",
    "(b) ours: import + parse_event": _READ
    + "import carecycle_webhooks\n"
    + "event = carecycle_webhooks.parse_event(body, d['headers'], d['secret'])\n"
    + "assert event.event_type == 'customer.created'\n",
    "(c) ours: Lambda cold start, first event": _READ
    + "event = {'version': '2.0', 'requestContext': {'http': {'method': 'POST'}},\n"
    + "         'headers': d['headers'], 'body': d['body'], 'isBase64Encoded': False}\n"
    + "import carecycle_webhooks\nfrom carecycle_webhooks.aws_lambda import webhook_handler\n"
    + "webhooks = carecycle_webhooks.Dispatcher(d['secret'])\n"
    + "webhooks.on('customer.created')(lambda event: None)\n"
    + "answer = webhook_handler(webhooks)(event, None)\n"
    + "assert answer['statusCode'] == 200, answer\n",
    "(b) peer: import + svix verify + json.loads": _READ
    + "import svix.webhooks\n"
    + "svix.webhooks.Webhook(d['secret']).verify(body, d['headers'])\n"
    + "payload = json.loads(body)\n"
    + "assert payload['event_type'] == 'customer.created'\n",
}

COMPARISONS = (
    ("(a) import", "(a) ours: import carecycle_webhooks", "(a) peer: import svix.webhooks", 0.40),
    (
        "(b) import + first verified parse",
        "(b) ours: import + parse_event",
        "(b) peer: import + svix verify + json.loads",
        0.50,
    ),
    (
        "(c) Lambda: import + handler + first event",
        "(c) ours: Lambda cold start, first event",
        "(b) peer: import + svix verify + json.loads",
        0.30,
    ),
)


def _write_delivery(path: Path) -> None:
    body = p.fixture_text("customer.created").encode("utf-8")
    data = {"body": body.decode("utf-8"), "headers": p.sign(body), "secret": p.SECRET}
    path.write_text(json.dumps(data), encoding="utf-8")


def _run_once(code: str, delivery: Path, cwd: str) -> float:
    """Wall time in ms of one child process; exits if the child fails."""
    start = time.perf_counter_ns()
    done = subprocess.run(
        [sys.executable, "-c", code, str(delivery)], cwd=cwd, capture_output=True, text=True, check=False
    )
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if done.returncode != 0:
        sys.exit(f"child failed ({done.returncode}):\n{code}\n{done.stderr}")
    return elapsed


_LIST_SOURCES = (
    "import json, sys\n"
    "print(json.dumps(sorted({getattr(m, '__file__', None) or '' for m in list(sys.modules.values())})))\n"
)


def _compile_missing_bytecode(delivery: Path, cwd: str) -> int:
    """Compiles each module a variant imports that has no bytecode cache; how many there were.

    Without this, ``PYTHONDONTWRITEBYTECODE`` (or a read-only package directory) makes
    every child compile those modules from source, which no deployment pays at each start.
    """
    sources: set[str] = set()
    for code in VARIANTS.values():
        done = subprocess.run(
            [sys.executable, "-c", code + "\n" + _LIST_SOURCES, str(delivery)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        sources.update(json.loads(done.stdout.splitlines()[-1]))
    missing = 0
    for source in sorted(sources):
        if not source.endswith(".py") or not Path(source).is_file():
            continue
        cached = Path(importlib.util.cache_from_source(source))
        if cached.is_file() and cached.stat().st_mtime >= Path(source).stat().st_mtime:
            continue
        missing += 1
        if py_compile.compile(source, doraise=False) is None:
            print(f"warning: could not write the bytecode cache of {source}: its children compile it")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per variant")
    args = parser.parse_args()

    print(f"Python {platform.python_version()} on {platform.machine()}: {sys.executable}")
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        delivery = Path(tmp) / "delivery.json"
        _write_delivery(delivery)
        signed_at = time.time()
        compiled = _compile_missing_bytecode(delivery, tmp)
        print(f"bytecode caches written for {compiled} imported modules that had none")
        for code in VARIANTS.values():  # warm-up: bytecode caches, page cache
            for _ in range(2):
                _run_once(code, delivery, tmp)
        for r in range(args.runs):
            if time.time() - signed_at > _RESIGN_AFTER_S:
                _write_delivery(delivery)
                signed_at = time.time()
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[name].append(_run_once(VARIANTS[name], delivery, tmp))

    medians = {name: p.median(values) for name, values in samples.items()}
    floor = medians["floor: pass"]
    width = max(map(len, names))
    print(f"{args.runs} runs per variant, interleaved; median wall time per process:")
    for name in names:
        lo, hi = min(samples[name]), max(samples[name])
        extra = "" if name == "floor: pass" else f"  ({medians[name] - floor:7.1f} ms above the floor)"
        print(f"  {name:<{width}}  {medians[name]:7.1f} ms  [min {lo:6.1f}, max {hi:6.1f}]{extra}")
    print()
    peer_b = medians["(b) peer: import + svix verify + json.loads"]
    context = medians["context: pydantic + one model class"] / peer_b
    print(f"(context) pydantic + one model class / the (b) peer: {context:.3f}")
    for label, ours, peer, target in COMPARISONS:
        ratio = medians[ours] / medians[peer]
        above = (medians[ours] - floor) / (medians[peer] - floor)
        print(f"{label}: ratio ours/peer {ratio:.3f}   {p.verdict(ratio, target)}")
        print(f"    (above the floor only: {above:.3f}, for context)")


if __name__ == "__main__":
    main()
