"""Peak memory of one verified parse of a call.completed with a 2 MB transcript.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--transcript-mb 2] [--runs 3]``

Ours (``parse_event``) vs the peer (svix ``Webhook.verify`` + ``json.loads``), each as the
peak memory used on top of the body, as a multiple of the body's size. Two methods:

1. tracemalloc, in this process, after a warm-up: ``reset_peak``, parse, peak minus the
   memory traced before. It sees every Python object (including the str that
   pydantic-core creates) but not pydantic-core's own Rust allocations, such as its parsed
   JSON tree.
2. RSS, in a fresh child process per run: the body is read from a file, the library is
   imported and warmed up on a small delivery, then ``ru_maxrss`` is read before and after
   the parse. Reported as the ``ru_maxrss`` growth and, more tightly, as the peak above
   the RSS just before the parse (``/proc/self/statm``, Linux only): ``ru_maxrss`` is a
   high-water mark, so the growth alone can hide a peak below an earlier one.

Target: ours <= 4x the body size. Prints the verdicts; always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import _payloads as p
from svix.webhooks import Webhook

from carecycle_webhooks import parse_event

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET = 4.0

# Runs in a fresh interpreter: argv = [mode, variant, body file, headers file, warm-up file].
# mode "maxrss": ru_maxrss before and after the parse. mode "hwm" (Linux): reset the
# peak-RSS mark (/proc/self/clear_refs) after reading VmRSS, parse, read VmHWM. The two
# modes run in separate processes because resetting the mark also lowers ru_maxrss.
_CHILD = """
import gc, json, resource, sys
mode, variant, body_path, headers_path, warm_path = sys.argv[1:6]
with open(body_path, "rb") as f:
    body = f.read()
with open(headers_path, "rb") as f:
    meta = json.load(f)
with open(warm_path, "rb") as f:
    warm = json.load(f)
warm_body = warm["body"].encode()
if variant == "ours":
    from carecycle_webhooks import parse_event
    def run(body, headers):
        return parse_event(body, headers, meta["secret"])
else:
    from svix.webhooks import Webhook
    wh = Webhook(meta["secret"])
    def run(body, headers):
        wh.verify(body, headers)
        return json.loads(body)
run(warm_body, warm["headers"])  # imports, schema build, caches
gc.collect()
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(key)
out = {}
if mode == "maxrss":
    scale = 1 if sys.platform == "darwin" else 1024
    out["before"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    result = run(body, meta["headers"])
    out["after"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
else:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out["before"] = status("VmRSS")
    result = run(body, meta["headers"])
    out["after"] = status("VmHWM")
print(json.dumps(out))
"""

# ru_maxrss is inherited across (v)fork + exec on Linux: a child started straight from
# this process would report this process's peak. A tiny launcher keeps the floor low.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def _traced_peak(fn: Callable[[], object]) -> tuple[int, int]:
    """(peak, retained) bytes traced on top of what was allocated before ``fn`` ran."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        current, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return peak - base, current - base


def _mb(n: float) -> str:
    return f"{n / 1e6:7.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transcript-mb", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per method and variant (median)")
    args = parser.parse_args()

    body = p.call_completed_body(int(args.transcript_mb * 1_000_000))
    headers = p.sign(body)
    size = len(body)
    print(f"Python {platform.python_version()} on {platform.machine()}")
    print(f"call.completed body: {size:,} bytes ({args.transcript_mb:g} MB transcript, UTF-8, non-ASCII)")
    print(f"target: ours <= {TARGET:g}x the body size (peak on top of the body)")

    svix_wh = Webhook(p.SECRET)

    def ours() -> object:
        return parse_event(body, headers, p.SECRET)

    def peer() -> object:
        svix_wh.verify(body, headers)
        return json.loads(body)

    variants: dict[str, Callable[[], object]] = {"ours": ours, "peer": peer}
    for fn in variants.values():  # warm-up outside tracing
        fn()

    print()
    print("1. tracemalloc (Python-heap allocations only; pydantic-core's Rust heap is not seen)")
    traced: dict[str, tuple[int, int]] = {}
    for name, fn in variants.items():
        runs = [_traced_peak(fn) for _ in range(args.runs)]
        peaks = sorted(peak for peak, _ in runs)
        traced[name] = (peaks[len(peaks) // 2], runs[-1][1])
    for name, (peak, retained) in traced.items():
        print(
            f"  {name}: peak {_mb(peak)} = {peak / size:5.2f}x body;"
            f"  retained by the result {_mb(retained)} = {retained / size:5.2f}x"
        )
    ratio = traced["ours"][0] / traced["peer"][0]
    print(f"  ours: {p.verdict(traced['ours'][0] / size, TARGET)};  ratio ours/peer {ratio:.3f}")

    print()
    print(f"2. RSS in a fresh process per run ({args.runs} runs each, alternating, median)")
    modes = ("maxrss", "hwm") if Path("/proc/self/clear_refs").exists() else ("maxrss",)
    rss: dict[tuple[str, str], list[float]] = {(m, v): [] for m in modes for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        headers_path = Path(tmp) / "headers.json"
        warm_path = Path(tmp) / "warm.json"
        body_path.write_bytes(body)
        warm_body = p.fixture_text("customer.created").encode("utf-8")
        signed_at = 0.0
        for _ in range(args.runs):
            if time.time() - signed_at > 120:  # the default tolerance is 5 minutes
                headers_path.write_text(json.dumps({"headers": p.sign(body), "secret": p.SECRET}))
                warm_path.write_text(json.dumps({"body": warm_body.decode(), "headers": p.sign(warm_body)}))
                signed_at = time.time()
            for (mode, name), values in rss.items():
                files = [str(body_path), str(headers_path), str(warm_path)]
                done = subprocess.run(
                    [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, mode, name, *files],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    sys.exit(f"{mode} {name} child failed:\n{done.stderr}")
                out = json.loads(done.stdout)
                values.append(float(out["after"] - out["before"]))
    labels = {
        "maxrss": "ru_maxrss growth (after - before the parse)",
        "hwm": "peak RSS above RSS before the parse (VmHWM reset via clear_refs)",
    }
    for mode in modes:
        print(f"  {labels[mode]}:")
        growth = {name: p.median(rss[mode, name]) for name in variants}
        for name, value in growth.items():
            print(f"    {name}: {_mb(value)} = {value / size:5.2f}x body")
        ratio_text = f"{growth['ours'] / growth['peer']:.3f}" if growth["peer"] > 0 else "n/a (peer 0)"
        print(f"    ours: {p.verdict(growth['ours'] / size, TARGET)};  ratio ours/peer {ratio_text}")


if __name__ == "__main__":
    main()
