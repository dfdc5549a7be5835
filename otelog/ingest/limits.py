"""What the ingest path may hold: a byte budget, and records per second per service.

`ByteBudget` bounds the memory of the write path. One number, `max_pending_bytes`, covers
the requests queued for the group commit AND the request bodies being read, decompressed
and decoded at the edge, so a client that never honours backpressure cannot push the
server past it: a body is reserved before it is read (by its Content-Length over HTTP, as
soon as gRPC hands it over) and refused when it does not fit.

`ServiceRateLimits` gives each `service.name` a token bucket of records per second. A
refused request costs the service nothing and the others nothing, so fairness between
services does not depend on clients backing off (a client hammering through its
Retry-After only burns its own requests).

Both are used from the event loop only (the receivers and the handler run on it); the
writer thread changes the queued bytes, which only ever lowers the pressure it reads.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from otelog.errors import Overloaded, PayloadTooLarge

# Retry-After when the byte budget is exhausted: a group commit drains the whole queue
# in milliseconds to a few hundred, so the shortest delay the protocols carry (1 s) is right.
QUEUE_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 30.0


class ByteBudget:
    """Bytes queued for commit (read from the writer) plus bytes held at the edge.

    `backlog` is a second pressure (0..1+) from downstream: how full the store's bound on
    records committed but not yet sealed is. Committed records stay in memory until the
    segment worker has sealed them; when it falls behind, bounding the queue alone would
    let that backlog grow without limit, so the backlog sheds and refuses the same way.
    """

    def __init__(
        self,
        limit: int,
        queued: Callable[[], int],
        backlog: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.limit = max(1, limit)
        self.queued = queued
        self.backlog = backlog
        self.in_flight = 0
        self.closing = False

    def used(self) -> int:
        return self.queued() + self.in_flight

    def pressure(self, extra: int = 0) -> float:
        """The larger of the budget's fill (with `extra` more bytes) and the backlog."""
        return max((self.used() + extra) / self.limit, self.backlog())

    def hold(self, n: int) -> Hold:
        """Reserve `n` bytes for a request being read or decoded, or refuse it."""
        h = Hold(self)
        h.grow(n)
        return h

    def _check(self, n: int, total: int) -> None:
        """May `n` more bytes be held by a request that would then hold `total`?"""
        if self.closing:
            # "shutting down" selects 503 over 429 in receiver/errors.py
            raise Overloaded(QUEUE_RETRY_AFTER_S, "server is shutting down")
        if total > self.limit:
            # no amount of waiting makes it fit: a permanent error, not a retryable one
            raise PayloadTooLarge(
                f"request of {total} bytes is larger than the ingest queue ({self.limit} bytes)"
            )
        if self.used() + n > self.limit:
            raise Overloaded(QUEUE_RETRY_AFTER_S, "ingest queue full, retry later")
        if self.backlog() >= 1.0:
            raise Overloaded(QUEUE_RETRY_AFTER_S, "indexing is behind, retry later")


class Hold:
    """Bytes one request holds in a ByteBudget; released once, whatever happens."""

    __slots__ = ("budget", "n")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.n = 0

    def grow(self, n: int) -> None:
        if n <= 0:
            return
        self.budget._check(n, self.n + n)
        self.budget.in_flight += n
        self.n += n

    def at_least(self, n: int) -> None:
        """Hold at least `n` bytes: a body read so far, a body and its decompression."""
        if n > self.n:
            self.grow(n - self.n)

    def resize(self, n: int) -> None:
        """Hold exactly `n` bytes (shrinking never fails; growing may be refused)."""
        if n > self.n:
            self.grow(n - self.n)
        else:
            self.budget.in_flight -= self.n - n
            self.n = n

    def release(self) -> None:
        self.budget.in_flight -= self.n
        self.n = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---- records per second per service


class TokenBucket:
    """`rate` tokens per second up to `burst`. It may be overdrawn down to -burst by
    `borrow`: a request carrying ERROR/FATAL records is admitted on credit, and the
    service pays it back before its next ordinary request."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def pressure(self, now: float) -> float:
        """0 with a full bucket, 1 once it is empty (more when overdrawn)."""
        return 1.0 - self.refill(now) / self.burst

    def wait_for(self, n: float, floor: float = 0.0) -> float:
        """Seconds until `n` tokens can be taken leaving at least `floor` (after refill)."""
        missing = n + floor - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, n: float) -> None:
        self.tokens -= n

    def give(self, n: float) -> None:
        self.tokens = min(self.burst, self.tokens + n)


def parse_overrides(text: str) -> dict[str, tuple[float, float | None]]:
    """`auth=5000,checkout=20000:40000` -> {service: (records/s, burst or None)}."""
    out: dict[str, tuple[float, float | None]] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        rate_text, _, burst_text = value.partition(":")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text else None
        except ValueError:
            rate = burst = math.nan
        if not sep or not name.strip() or not rate >= 0 or (burst is not None and not burst > 0):
            raise ValueError(
                f"rate limit override {item!r}: expected service=records_per_second"
                "[:burst], e.g. auth=5000,checkout=20000:40000"
            )
        out[name.strip()] = (rate, burst)
    return out


@dataclass(frozen=True)
class Limit:
    rate: float  # records/s; 0 = unlimited
    burst: float


class ServiceRateLimits:
    """A token bucket per service, created on first use, forgotten when full and idle."""

    MAX_BUCKETS = 10_000

    def __init__(
        self,
        default_rate: float = 0.0,
        default_burst: float = 0.0,
        overrides: dict[str, tuple[float, float | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # a burst of two seconds' worth unless told otherwise; overrides scale like it
        self.burst_seconds = default_burst / default_rate if default_rate and default_burst else 2.0
        self.default = Limit(default_rate, default_burst or default_rate * self.burst_seconds)
        self.overrides = {
            s: Limit(r, b if b is not None else r * self.burst_seconds)
            for s, (r, b) in (overrides or {}).items()
        }
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.default.rate > 0 or any(lim.rate > 0 for lim in self.overrides.values())

    def limit(self, service: str) -> Limit:
        return self.overrides.get(service, self.default)

    def bucket(self, service: str) -> TokenBucket | None:
        """The service's bucket, refilled to now; None when the service is unlimited."""
        now = self.clock()
        b = self._buckets.get(service)
        if b is None:
            lim = self.limit(service)
            if lim.rate <= 0:
                return None
            b = self._buckets[service] = TokenBucket(lim.rate, lim.burst, now)
            if len(self._buckets) > self.MAX_BUCKETS:
                self._evict(now)
        else:
            self._buckets.move_to_end(service)
            b.refill(now)
        return b

    def _evict(self, now: float) -> None:
        # a full bucket is what a new one would be: forgetting it changes nothing
        for name in list(self._buckets)[: len(self._buckets) // 10]:
            if self._buckets[name].refill(now) >= self._buckets[name].burst:
                del self._buckets[name]

    def pressure(self, service: str) -> float:
        b = self.bucket(service)
        return 0.0 if b is None else b.pressure(self.clock())
