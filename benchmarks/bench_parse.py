"""Throughput of a verified parse: carecycle_webhooks vs svix verify + json.loads.

Run: ``.venv/bin/python benchmarks/bench_parse.py [--rounds 30] [--round-ms 20]``

Ours, two ways: the one-call ``parse_event(body, headers, secret)`` and a prebuilt
``WebhookVerifier(secret).parse(body, headers)``. The peer (the status quo): a prebuilt
``svix.webhooks.Webhook(secret)`` whose ``.verify(body, headers)`` is followed by
``json.loads(body)`` (an untyped dict). Each payload is timed in interleaved rounds
(the order rotates every round) with the garbage collector off; each round's per-call
time is one sample and the medians are compared. Verify-only and parse-only rows are
measured the same way, for context (no target).

Targets (median per-call time, ours / peer): customer.created <= 0.90, call.completed with
a ~50 KB transcript <= 0.75. Prints the verdicts; always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import _payloads as p
from svix.webhooks import Webhook

import carecycle_webhooks
from carecycle_webhooks import WebhookVerifier, parse_event, parse_unverified_event

if TYPE_CHECKING:
    from collections.abc import Callable

_RESIGN_AFTER_S = 120  # the default tolerance is 5 minutes


@dataclass
class Case:
    name: str
    body: bytes
    target: float
    headers: dict[str, str]
    signed_at: float


def _cases() -> list[Case]:
    specs = [
        ("customer.created (fixture)", p.fixture_text("customer.created").encode("utf-8"), 0.90),
        ("call.completed, ~50 KB transcript", p.call_completed_body(50_000), 0.75),
    ]
    return [Case(name, body, target, p.sign(body), time.time()) for name, body, target in specs]


def _check(case: Case) -> None:
    """Both sides accept the delivery and agree on the content; fail loudly before timing if not."""
    event = parse_event(case.body, case.headers, p.SECRET)
    Webhook(p.SECRET).verify(case.body, case.headers)
    loaded = json.loads(case.body)
    if event.model_dump(mode="json", by_alias=True, exclude_unset=True).keys() != loaded.keys():
        sys.exit(f"{case.name}: parsed event and json.loads disagree on the keys")
    if getattr(event, "transcript", None) != loaded.get("transcript"):
        sys.exit(f"{case.name}: transcripts differ")


def _calibrate(fn: Callable[[], object], round_ms: float) -> int:
    """Calls per round so that one round of ``fn`` takes about ``round_ms``."""
    for _ in range(3):
        fn()
    n = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter_ns() - start
        if elapsed >= 2_000_000 or n >= 1 << 20:
            return max(1, int(n * round_ms * 1e6 / elapsed))
        n *= 2


def _run(
    case: Case, candidates: dict[str, Callable[[], object]], rounds: int, round_ms: float
) -> dict[str, float]:
    """Median per-call time in µs of each candidate, over ``rounds`` interleaved rounds."""
    n = min(_calibrate(fn, round_ms) for fn in candidates.values())  # the same count for all
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if time.time() - case.signed_at > _RESIGN_AFTER_S:
            case.headers.update(p.sign(case.body))  # outside the timed region
            case.signed_at = time.time()
        order = names[r % len(names) :] + names[: r % len(names)]
        gc.collect()
        gc.disable()
        try:
            for name in order:
                fn = candidates[name]
                start = time.perf_counter_ns()
                for _ in range(n):
                    fn()
                samples[name].append((time.perf_counter_ns() - start) / n / 1000)
        finally:
            gc.enable()
    print(f"  {rounds} rounds x {n} calls per candidate")
    return {name: p.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--round-ms", type=float, default=20.0, help="target duration of one round")
    args = parser.parse_args()

    print(f"Python {platform.python_version()} on {platform.machine()}")
    print(f"carecycle_webhooks from {carecycle_webhooks.__file__}")
    verifier = WebhookVerifier(p.SECRET)
    svix_wh = Webhook(p.SECRET)  # built once: fair to the peer

    for case in _cases():
        _check(case)
        body = case.body
        headers = case.headers

        def ours_parse_event(body: bytes = body, headers: dict[str, str] = headers) -> object:
            return parse_event(body, headers, p.SECRET)

        def ours_verifier(body: bytes = body, headers: dict[str, str] = headers) -> object:
            return verifier.parse(body, headers)

        def peer(body: bytes = body, headers: dict[str, str] = headers) -> object:
            svix_wh.verify(body, headers)
            return json.loads(body)

        def ours_verify_only(body: bytes = body, headers: dict[str, str] = headers) -> object:
            return verifier.verify(body, headers)

        def ours_parse_only(body: bytes = body) -> object:
            return parse_unverified_event(body)

        def peer_verify_only(body: bytes = body, headers: dict[str, str] = headers) -> None:
            svix_wh.verify(body, headers)

        def peer_json_only(body: bytes = body) -> object:
            return json.loads(body)

        candidates: dict[str, Callable[[], object]] = {
            "ours: parse_event(body, headers, secret)": ours_parse_event,
            "ours: WebhookVerifier(secret).parse (prebuilt)": ours_verifier,
            "peer: svix Webhook.verify + json.loads": peer,
            "  ours: WebhookVerifier.verify only": ours_verify_only,
            "  ours: parse_unverified_event only": ours_parse_only,
            "  peer: svix Webhook.verify only": peer_verify_only,
            "  peer: json.loads only": peer_json_only,
        }
        print()
        print(f"{case.name}: body {len(body):,} bytes")
        medians = _run(case, candidates, args.rounds, args.round_ms)
        width = max(map(len, candidates))
        for name, value in medians.items():
            print(f"  {name:<{width}}  {value:9.2f} µs/call")
        peer_us = medians["peer: svix Webhook.verify + json.loads"]
        for label, key in (
            ("parse_event", "ours: parse_event(body, headers, secret)"),
            ("WebhookVerifier.parse", "ours: WebhookVerifier(secret).parse (prebuilt)"),
        ):
            ratio = medians[key] / peer_us
            print(f"  ratio ours/peer ({label}): {ratio:.3f}   {p.verdict(ratio, case.target)}")


if __name__ == "__main__":
    main()
