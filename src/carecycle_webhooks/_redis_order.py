"""Customer order in `RedisIdempotencyStore` (``Dispatcher(skip_out_of_order=True)``).

Each customer (`Order.key`) has two keys under the store's prefix: ``customer-lease:<key>``
(the token of the delivery that holds the customer, expiring with its lease) and
``customer-mark:<key>`` (the newest ``updatedAt`` processed, in microseconds, expiring
with the done marks). A step given an `Order` is one of the scripts below, which change
the delivery's key and its customer's in one atomic round trip; a step without one runs
the script it always did (in `_redis`). Every key a script touches is passed in ``KEYS``:
on Redis Cluster, a prefix with a hash tag (``"{carecycle-webhooks}:"``) keeps them in one slot.

As the other scripts do, each answers a repeat (a client's retry after a lost reply) as it
answered the first. Positions are compared as Lua numbers: exact up to 2**53 microseconds
after 1970 (the year 2255).
"""

from __future__ import annotations

from ._idempotency import CLAIM_STALE, Claim, claim_from

__all__ = ["ACQUIRE_ORDERED", "COMPLETE_ORDERED", "RELEASE_ORDERED", "ordered_claim"]

# KEYS: the id, the customer's lease, the customer's mark. ARGV: token, lease (ms), position.
# The id's answer comes first (its own token: the first attempt took it); then another
# delivery's hold on the customer (its token: in flight); then a newer mark ('stale').
ACQUIRE_ORDERED = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then return false end
if value then return value end
local holder = redis.call('GET', KEYS[2])
if holder then return holder end
local mark = redis.call('GET', KEYS[3])
if mark and tonumber(mark) > tonumber(ARGV[3]) then return 'stale' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return false
"""
# ARGV: token, ttl (ms), position. With the done mark: the customer's mark moves forward
# (never back) and lives as long; the customer's lease is freed if it is the token's.
COMPLETE_ORDERED = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] or not value then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  local mark = redis.call('GET', KEYS[3])
  if not mark or tonumber(mark) < tonumber(ARGV[3]) then mark = ARGV[3] end
  redis.call('SET', KEYS[3], mark, 'PX', ARGV[2])
  if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
  return 1
end
return false
"""
# KEYS: the id, the customer's lease (and maybe the mark: left as it was). ARGV: token.
RELEASE_ORDERED = """
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then released = redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return released
"""

_STALE = "stale"  # never a token (`new_token`) nor "done"


def ordered_claim(existing: str | None, token: str) -> Claim:
    """`claim_from` for `ACQUIRE_ORDERED`'s answer, which may also be ``"stale"``."""
    return CLAIM_STALE if existing == _STALE else claim_from(existing, token)
