"""What customer order (``skip_out_of_order``) costs a store: acquire + complete, in process.

Usage (from the repository root)::

    PYTHONPATH=src:. python benchmarks/bench_order.py [--seconds 1] [--rounds 3] [--stores sqlite,redis]

For each store, the same pair of calls without an `Order` and with one, timed in A B B A
order per round in one thread; the figure is each variant's best run, in microseconds per
delivery (acquire, then complete). Every delivery has a new id; with an order, the customers
are 1,000, each delivery a newer update of one of them (so their rows and keys exist, as in
production). SQLite: a file in a temporary directory. Redis: a ``redis-server`` started on
a free loopback port (tests/redis_server.py), a synchronous client for the synchronous
methods and an asyncio client for the async ones.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carecycle_webhooks import RedisIdempotencyStore, SQLiteIdempotencyStore
from carecycle_webhooks._idempotency import Order

if TYPE_CHECKING:
    from collections.abc import Callable

LEASE = datetime.timedelta(minutes=2)
TTL = datetime.timedelta(hours=1)
CUSTOMERS = 1_000
_ids = itertools.count()


def sync_pair(store: Any, *, ordered: bool) -> Callable[[], None]:
    def pair() -> None:
        n = next(_ids)
        key = f"msg_{n}"
        if ordered:
            order = Order(f"customer-{n % CUSTOMERS}", n)
            claim = store.acquire(key, lease=LEASE, order=order)
            store.complete(key, claim.token, ttl=TTL, order=order)
        else:
            claim = store.acquire(key, lease=LEASE)
            store.complete(key, claim.token, ttl=TTL)

    return pair


def async_pair(store: Any, loop: asyncio.AbstractEventLoop, *, ordered: bool) -> Callable[[int], None]:
    async def pairs(count: int) -> None:
        for _ in range(count):
            n = next(_ids)
            key = f"msg_{n}"
            if ordered:
                order = Order(f"customer-{n % CUSTOMERS}", n)
                claim = await store.acquire_async(key, lease=LEASE, order=order)
                await store.complete_async(key, claim.token, ttl=TTL, order=order)
            else:
                claim = await store.acquire_async(key, lease=LEASE)
                await store.complete_async(key, claim.token, ttl=TTL)

    return lambda count: loop.run_until_complete(pairs(count))


def per_call(run: Callable[[int], None], seconds: float) -> float:
    """Microseconds per pair over about ``seconds`` (batches of 100)."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(100)
        done += 100
    return (time.perf_counter() - started) / done * 1e6


def batch(pair: Callable[[], None]) -> Callable[[int], None]:
    def run(count: int) -> None:
        for _ in range(count):
            pair()

    return run


def compare(
    name: str, plain: Callable[[int], None], ordered: Callable[[int], None], args: argparse.Namespace
) -> None:
    plain(200)  # warm: connections, statements, scripts
    ordered(200)
    best = {"plain": float("inf"), "ordered": float("inf")}
    for _ in range(args.rounds):
        for variant, run in (("plain", plain), ("ordered", ordered), ("ordered", ordered), ("plain", plain)):
            best[variant] = min(best[variant], per_call(run, args.seconds))
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(
        f"{name:<22} without order {best['plain']:7.1f} µs   with order {best['ordered']:7.1f} µs   "
        f"(+{best['ordered'] - best['plain']:.1f} µs, x{best['ordered'] / best['plain']:.2f}; load {load})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    stores = args.stores.split(",")
    loop = asyncio.new_event_loop()
    if "sqlite" in stores:
        with tempfile.TemporaryDirectory() as directory:
            store = SQLiteIdempotencyStore(os.path.join(directory, "bench.sqlite3"))  # noqa: PTH118
            compare(
                "SQLite, sync",
                batch(sync_pair(store, ordered=False)),
                batch(sync_pair(store, ordered=True)),
                args,
            )
            compare(
                "SQLite, async",
                async_pair(store, loop, ordered=False),
                async_pair(store, loop, ordered=True),
                args,
            )
            store.close()
    if "redis" in stores:
        import redis
        import redis.asyncio
        from tests.redis_server import RedisServer, find_redis_server

        server = RedisServer(find_redis_server())
        server.start()
        try:
            store = RedisIdempotencyStore(redis.Redis(port=server.port, socket_timeout=2))
            compare(
                "Redis, sync client",
                batch(sync_pair(store, ordered=False)),
                batch(sync_pair(store, ordered=True)),
                args,
            )
            asyncio_store = RedisIdempotencyStore(redis.asyncio.Redis(port=server.port, socket_timeout=2))
            compare(
                "Redis, asyncio client",
                async_pair(asyncio_store, loop, ordered=False),
                async_pair(asyncio_store, loop, ordered=True),
                args,
            )
        finally:
            server.close()
    loop.close()


if __name__ == "__main__":
    main()
