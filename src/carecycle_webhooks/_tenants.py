"""Many tenants on one endpoint: each tenant's secrets, from the application's resolver.

``Dispatcher(secret=resolver)`` takes a callable, sync or async, that maps a tenant key
(the ``tenant`` path parameter of the adapters) to that tenant's secret or secrets, or to
``None`` for a tenant it does not know. `TenantSecrets` calls it, builds one
`WebhookVerifier` per tenant (so a delivery costs one HMAC per secret of its tenant,
never one per tenant), and keeps both for a bounded time, so that a rotated secret takes
effect without a restart, and for a bounded number of tenants, so that a flood of made-up
keys cannot grow memory.

A key that is not a plausible tenant key (empty, too long, or with characters outside
letters, digits and ``-._~``) is unknown without asking the resolver.

Anyone can send any key, so a flood of made-up keys must not starve the application: a
sync resolver runs in a few threads of its own (never those of the sync handlers), one
call at a time per key, and unknown tenants are kept like known ones. Only a resolver
makes a tenant key mean something: the path is not signed, so a dispatcher with one
secret refuses tenant keys (404) rather than keep ``webhook-id`` s apart by an unsigned
word, which would let a replayed delivery run again under another key.
"""

from __future__ import annotations

import collections
import concurrent.futures
import inspect
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, cast

from ._errors import WebhookConfigurationError
from ._logs import Throttle
from ._responses import RESOLVER_FAILED, UNKNOWN_TENANT, WebhookResponse
from ._running import run_to_completion
from ._verify import WebhookVerifier

if TYPE_CHECKING:
    import datetime
    from typing import TypeAlias

__all__ = [
    "MAX_TENANTS",
    "ResolverFailed",
    "SecretResolver",
    "TenantSecrets",
    "is_tenant_key",
    "resolve",
    "resolve_async",
]

logger = logging.getLogger("carecycle_webhooks")

_Secrets: TypeAlias = "str | Sequence[str] | None"
SecretResolver: TypeAlias = "Callable[[str], _Secrets | Awaitable[_Secrets]]"
"""A tenant key -> that tenant's secret, or several (a rotation), or ``None`` (unknown)."""

MAX_TENANTS = 10_000
RESOLVER_THREADS = 4
"""How many threads run a sync resolver under `Dispatcher.handle_async`."""

# An unknown tenant is logged at WARNING at most once a minute; DEBUG otherwise (anyone
# can send requests for made-up keys: they must not flood the logs).
_UNKNOWN = Throttle(60.0)
"""At most this many tenants' answers are kept; past it, the least recently used go."""

# URL-safe, bounded: such a key is safe in a store's key, a log line and a path.
_TENANT_KEY = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def is_tenant_key(tenant: object) -> bool:
    """Whether ``tenant`` can be a tenant key: 1 to 128 letters, digits or ``-._~``."""
    return isinstance(tenant, str) and _TENANT_KEY.fullmatch(tenant) is not None


class ResolverFailed(Exception):  # noqa: N818 - says what happened
    """The secret resolver raised, or answered something that is not a valid secret."""


class TenantSecrets:
    """Each tenant's verifier, from the resolver, kept for ``ttl`` seconds (``None``: unknown)."""

    def __init__(  # noqa: PLR0913 - keyword-only, from the dispatcher's options
        self,
        resolver: SecretResolver,
        *,
        tolerance: datetime.timedelta,
        clock: Callable[[], float],
        ttl: datetime.timedelta,
        max_tenants: int = MAX_TENANTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._tolerance = tolerance
        self._clock = clock  # the verifiers' clock, for the timestamp tolerance
        self._ttl = ttl.total_seconds()
        self._max = max_tenants
        self._now = monotonic
        self._lock = threading.Lock()
        # tenant -> (its verifier or None for unknown, when the answer expires); LRU order.
        self._known: collections.OrderedDict[str, tuple[WebhookVerifier | None, float]] = (
            collections.OrderedDict()
        )
        self._is_async = inspect.iscoroutinefunction(resolver) or inspect.iscoroutinefunction(
            getattr(resolver, "__call__", None)  # noqa: B004 - a callable object's async __call__
        )
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None  # made on first use
        # One resolver call at a time per key: concurrent deliveries of one uncached tenant
        # wait for the first call's answer instead of each asking (entries live while used).
        self._asking: dict[str, threading.Lock] = {}

    def _cached(self, tenant: str) -> tuple[WebhookVerifier | None] | None:
        with self._lock:
            entry = self._known.get(tenant)
            if entry is None:
                return None
            if entry[1] <= self._now():
                del self._known[tenant]
                return None
            self._known.move_to_end(tenant)
            return (entry[0],)

    def _keep(self, tenant: str, answer: object) -> WebhookVerifier | None:
        verifier = self._verifier(tenant, answer)
        with self._lock:
            self._known[tenant] = (verifier, self._now() + self._ttl)
            self._known.move_to_end(tenant)
            while len(self._known) > self._max:
                self._known.popitem(last=False)
        return verifier

    def _verifier(self, tenant: str, answer: object) -> WebhookVerifier | None:
        if answer is None:
            return None
        if not isinstance(answer, (str, Sequence)):
            raise ResolverFailed(f"the secret resolver answered a {type(answer).__name__}, not a str")
        try:
            return WebhookVerifier(
                cast("str | Sequence[str]", answer),
                tolerance=self._tolerance,
                clock=self._clock,
                tenant=tenant,
            )
        except WebhookConfigurationError as error:  # its message names no secret
            raise ResolverFailed(f"the secret resolver answered an invalid secret: {error}") from None

    def verifier(self, tenant: str) -> WebhookVerifier | None:
        """The tenant's verifier, or ``None`` for an unknown tenant; calls the resolver if need be.

        Raises:
            ResolverFailed: The resolver raised (its message is not kept: it may hold
                anything), or answered an invalid secret.
        """
        if not is_tenant_key(tenant):
            return None
        cached = self._cached(tenant)
        if cached is not None:
            return cached[0]
        with self._lock:
            asking = self._asking.setdefault(tenant, threading.Lock())
        try:
            with asking:
                cached = self._cached(tenant)  # answered meanwhile, by the call we waited for
                if cached is not None:
                    return cached[0]
                return self._keep(tenant, self._ask(tenant))
        finally:
            with self._lock:
                if not asking.locked():
                    self._asking.pop(tenant, None)

    def _ask(self, tenant: str) -> object:
        try:
            answer: object = self._resolver(tenant)
            if inspect.isawaitable(answer):
                answer = run_to_completion(answer)
        except Exception as error:  # noqa: BLE001 - whatever the application's code raises
            raise ResolverFailed(f"the secret resolver raised {type(error).__name__}") from None
        return answer

    async def verifier_async(self, tenant: str) -> WebhookVerifier | None:
        """`verifier`, on the event loop: a sync resolver runs in a thread (it may query a database)."""
        if not is_tenant_key(tenant):
            return None
        cached = self._cached(tenant)
        if cached is not None:
            return cached[0]
        import asyncio  # here: the sync path (Lambda, WSGI) need not import it

        if not self._is_async:
            # In threads of its own: a flood of made-up keys waits there, not in the
            # loop's default executor, where the sync handlers run.
            with self._lock:
                if self._threads is None:
                    self._threads = concurrent.futures.ThreadPoolExecutor(
                        RESOLVER_THREADS, thread_name_prefix="carecycle-webhooks-resolver"
                    )
                threads = self._threads
            return await asyncio.get_running_loop().run_in_executor(threads, self.verifier, tenant)
        answer: object
        try:
            answer = await cast("Awaitable[object]", self._resolver(tenant))
        except Exception as error:  # noqa: BLE001 - whatever the application's code raises
            raise ResolverFailed(f"the secret resolver raised {type(error).__name__}") from None
        return self._keep(tenant, answer)


def _known(tenant: str | None, verifier: WebhookVerifier | None) -> WebhookVerifier | WebhookResponse:
    """The verifier for ``tenant``, or the answer when it is unknown (404)."""
    if verifier is None:
        if tenant is None:
            logger.warning(
                "webhook without a tenant key, but the dispatcher has a secret resolver: answered "
                "404; route it with a tenant path parameter, e.g. /webhooks/<tenant>"
            )
        else:  # the key is not logged: anyone can send any key
            _UNKNOWN.note()
            logger.log(
                logging.DEBUG if _UNKNOWN.due() is None else logging.WARNING,
                "webhook for an unknown tenant: answered 404 (logged at WARNING once a minute at most)",
            )
        return UNKNOWN_TENANT
    return verifier


def _failed(error: ResolverFailed) -> WebhookResponse:
    logger.error("webhook not verified: %s: answered 503", error)  # no traceback: no PHI
    return RESOLVER_FAILED


def resolve(
    tenants: TenantSecrets | None, verifier: WebhookVerifier | None, tenant: str | None
) -> WebhookVerifier | WebhookResponse:
    """The verifier of ``tenant`` (with a resolver) or the endpoint's ``verifier``; or 404, 503."""
    if tenants is None:
        if tenant is not None:  # an unsigned word of the path: see the module's docstring
            logger.warning(
                "webhook with a tenant key, but the dispatcher has one secret for every tenant: "
                "answered 404; give it a secret resolver (Dispatcher(secret=resolver)), or route "
                "it without a tenant path parameter"
            )
            return UNKNOWN_TENANT
        return cast("WebhookVerifier", verifier)
    if tenant is None:
        return _known(None, None)
    try:
        return _known(tenant, tenants.verifier(tenant))
    except ResolverFailed as error:
        return _failed(error)


async def resolve_async(
    tenants: TenantSecrets | None, verifier: WebhookVerifier | None, tenant: str | None
) -> WebhookVerifier | WebhookResponse:
    """`resolve`, for the event loop: the resolver does not block it."""
    if tenants is None or tenant is None:
        return resolve(tenants, verifier, tenant)
    try:
        return _known(tenant, await tenants.verifier_async(tenant))
    except ResolverFailed as error:
        return _failed(error)
