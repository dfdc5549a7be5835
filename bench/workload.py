"""Deterministic OTLP workload: realistic log records, and the spans of their traces.

Everything is drawn from a seeded `random.Random`, so the same parameters (with an explicit
`start_ns`; the default start is "now") give the same bytes, and the ground truth (counts
per service and level, the records of each trace, the records holding the rare keyword) is
known exactly without asking the server.

    wl = Workload(1_000_000, batch_size=512, seed=1)
    bodies = list(wl.log_requests())  # serialized ExportLogsServiceRequest messages
    spans = list(wl.span_requests())  # serialized ExportTraceServiceRequest messages
    wl.stats.count(service="checkout", levels=("ERROR",))

The random stream does not depend on `batch_size`, `start_ns` or `span_ns`: they only change
how records are grouped into requests and where their timestamps fall. So the counts, trace
ids and record bodies are a function of (total_records, seed, rare_every) alone.

This file is imported by path (the bench directory is not a package).
"""

from __future__ import annotations

import itertools
import random
import string
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

__all__ = [
    "LEVELS",
    "LEVEL_NAMES",
    "RARE_EVERY",
    "RARE_KEYWORD",
    "SERVICES",
    "Rec",
    "TraceInfo",
    "Workload",
    "WorkloadStats",
    "expected_counts",
    "generate_requests",
    "generate_span_requests",
]

_T = TypeVar("_T")

RARE_KEYWORD = "zebracorn"
RARE_EVERY = 100_000
DEFAULT_SPAN_NS = 3600 * 10**9

SERVICES: tuple[str, ...] = (
    "auth", "checkout", "payment", "cart", "search", "catalog", "inventory", "shipping",
    "orders", "users", "profile", "notifications", "email", "sms", "recommendations", "reviews",
    "pricing", "promotions", "tax", "currency", "fraud", "billing", "invoicing", "ledger",
    "gateway", "frontend", "admin", "reporting", "analytics", "ads", "media", "thumbnails",
    "geo", "session", "ratelimit", "config", "scheduler", "warehouse", "returns", "support",
)  # fmt: skip
HOSTS: tuple[str, ...] = tuple(f"node-{z}-{n}" for z in ("a", "b", "c") for n in range(1, 5))
REGIONS: tuple[str, ...] = (
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
)

# (name, severity_number, cumulative probability); severity numbers per the OTLP data model.
LEVELS: tuple[tuple[str, int, float], ...] = (
    ("DEBUG", 5, 0.10),
    ("INFO", 9, 0.80),
    ("WARN", 13, 0.92),
    ("ERROR", 17, 0.99),
    ("FATAL", 21, 1.0),
)
_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as in Kubernetes generated names
LEVEL_NAMES: tuple[str, ...] = tuple(name for name, _, _ in LEVELS)

TRACED_FRACTION = 0.8
ACTIVE_TRACES = 64  # traces interleaved at any moment
TRACE_MIN_RECORDS, TRACE_MAX_RECORDS = 2, 20
LATE_FRACTION = 0.03  # records whose timestamp lags behind their neighbours
LATE_MAX_NS = 2 * 10**9

# Message templates per level. Fields: user, ms, method, path, status are shared with the
# record's attributes; the others are drawn on demand (see _FIELDS).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "DEBUG": (
        "cache lookup key={key} hit={hit} took {ms} ms for user {user} (shard {partition})",
        "resolved route {method} {path} to handler {handler} in {ms} ms, middleware chain ok",
        "db query on table {table} returned {n} rows in {ms} ms (pool {pool}/32 connections busy)",
        "feature flag {flag} evaluated to {hit} for user {user} in segment {segment}",
        "outgoing request to {peer} {method} {path} started, attempt {retry} of 5, timeout 2s",
        "serialized response of {bytes} bytes for {method} {path} with status {status}",
        "acquired lock {key} after waiting {ms} ms, previous holder was worker {worker}",
        "parsed request headers for {method} {path}: content-length={bytes} user-agent={agent}",
        "token introspection for user {user} ok, scopes={scopes}, expires in {n} s",
        "batch flush of {n} events to topic {topic} completed in {ms} ms (worker {worker})",
        "connection pool stats for {peer}: active={pool} idle={n} waiting=0 max=32",
        "trace context propagated to {peer} via traceparent header while handling order {order}",
    ),
    "INFO": (
        "{method} {path} {status} {ms}ms user={user} ip={ip} agent={agent}",
        "user {user} logged in successfully from {ip} using {agent}, session {session}",
        "order {order} placed by user {user}: {n} items, total {amount} USD, promotion {promo}",
        "payment {payment} authorized for order {order}, amount {amount} USD, took {ms} ms",
        "added sku {sku} x{n} to cart of user {user}, cart now holds {pool} distinct items",
        "search query for user {user} returned {n} results in {ms} ms from index products_v7",
        "shipment {shipment} created for order {order} via carrier {carrier} from {warehouse}",
        "email notification queued for user {user} with template {email_tpl}, priority normal",
        "request completed: {method} {path} -> {status} in {ms} ms from client {ip}",
        "session {session} refreshed for user {user}, new ttl {n} minutes",
        "inventory reserved for sku {sku}: {n} units in warehouse {warehouse} for order {order}",
        "price computed for sku {sku}: {amount} USD after applying promotion {promo}",
        "invoice {invoice} generated for order {order} with {n} line items, sent to user {user}",
        "consumed {n} messages from topic {topic} partition {partition} in {ms} ms",
        "cache warmed with {n} entries from table {table} in {ms} ms after deploy",
        "user {user} updated profile fields [{profile_fields}] via {method} {path}",
        "recommendations served for user {user}: {n} candidates ranked by model {model}",
        "refund {payment} issued for order {order}, amount {amount} USD, reason customer_request",
        "scheduled job {job} finished in {ms} ms and processed {n} records without errors",
        "health check of dependency {peer} passed in {ms} ms, status {status}",
    ),
    "WARN": (
        "slow request {method} {path} took {ms} ms (threshold 500 ms) for user {user}",
        "retrying call to {peer} {method} {path} after {err}, attempt {retry} of 5",
        "rate limit approaching for user {user} from {ip}: {n} requests in the last minute",
        "cache miss storm on key prefix {key}: {n} misses in the last 10 s, falling back to db",
        "{method} {path} returned {status} for user {user}: {client_err}",
        "connection pool for {peer} near capacity: {pool}/32 in use, {n} requests waiting",
        "payment {payment} for order {order} requires 3ds verification, user {user} notified",
        "deprecated API version used by client {agent} on {method} {path}, please upgrade",
        "consumer lag on topic {topic} partition {partition} is {n} messages and growing",
        "inventory low for sku {sku}: only {n} units left in warehouse {warehouse}",
        "token refresh for user {user} failed once with {err}, expires in {n} s",
        "GC pause of {ms} ms exceeded the 200 ms budget on worker {worker}, heap {n} MiB",
    ),
    "ERROR": (
        "{method} {path} failed with status {status} after {ms} ms: {err} (user {user})",
        "payment {payment} declined for order {order}: {decline}, user {user}",
        "failed to publish {n} events to topic {topic} partition {partition}: {err}",
        "db query on table {table} failed after {ms} ms: {db_err}, transaction rolled back",
        "call to {peer} {method} {path} failed: {err}, giving up after {retry} attempts",
        "could not reserve sku {sku} for order {order}: insufficient stock in {warehouse}",
        "unhandled exception in handler {handler} for user {user}: {exc}, returning 500",
        "invoice {invoice} rendering failed for order {order}: template error at line {n}",
        "shipment {shipment} label creation failed at carrier {carrier} with status {status}",
        "authentication failed for user {user} from {ip}: {auth_err}, attempt {retry} of 5",
        "circuit breaker opened for {peer} after {n} consecutive failures, last error: {err}",
        "request {method} {path} aborted after {ms} ms: client {ip} disconnected",
    ),
    "FATAL": (
        "unrecoverable error on worker {worker}, shutting down: {exc}",
        "lost connection to database {table} and failover to replica {n} failed: {db_err}",
        "configuration invalid after reload: missing required key {flag}, process exiting",
        "out of memory while processing order {order}: heap limit of {n} MiB exhausted, aborting",
    ),
}

_PATHS: tuple[tuple[str, str], ...] = (
    ("/api/v1/orders/{id}", "order"),
    ("/api/v1/orders", ""),
    ("/api/v1/cart/{id}/items", "user"),
    ("/api/v1/users/{id}", "user"),
    ("/api/v1/users/{id}/sessions", "user"),
    ("/api/v1/products/{id}", "sku"),
    ("/api/v1/products", ""),
    ("/api/v1/search", ""),
    ("/api/v1/payments/{id}", "payment"),
    ("/api/v1/checkout", ""),
    ("/api/v2/recommendations/{id}", "user"),
    ("/api/v1/shipments/{id}/track", "shipment"),
    ("/api/v1/login", ""),
    ("/api/v1/logout", ""),
    ("/healthz", ""),
    ("/internal/metrics", ""),
)
_METHODS: tuple[str, ...] = ("GET",) * 6 + ("POST",) * 3 + ("PUT", "DELETE", "PATCH")
_OK_STATUS: tuple[int, ...] = (200,) * 12 + (201, 201, 204, 301, 302, 304)
_WARN_STATUS: tuple[int, ...] = (400, 401, 403, 404, 404, 404, 409, 422, 429)
_ERROR_STATUS: tuple[int, ...] = (500, 500, 502, 503, 503, 504)
_ERRS = (
    "connection reset by peer",
    "context deadline exceeded",
    "i/o timeout",
    "connection refused",
    "TLS handshake timeout",
    "upstream returned 503 Service Unavailable",
    "no healthy upstream",
    "broken pipe",
)
_WORDS: dict[str, tuple[str, ...]] = {
    "hit": ("true", "false", "false"),
    "handler": (
        "OrderHandler",
        "CartHandler",
        "UserHandler",
        "SearchHandler",
        "PayHandler",
    ),
    "table": (
        "orders",
        "users",
        "order_items",
        "payments",
        "inventory",
        "sessions",
        "products",
    ),
    "flag": (
        "new_checkout_flow",
        "dark_mode",
        "fast_search",
        "one_click_pay",
        "beta_reviews",
    ),
    "segment": ("control", "treatment_a", "treatment_b", "internal"),
    "agent": (
        "Mozilla/5.0",
        "okhttp/4.12.0",
        "python-requests/2.32",
        "Go-http-client/2.0",
    ),
    "scopes": ("read", "read,write", "read,write,admin", "openid,profile"),
    "topic": (
        "orders.created",
        "payments.events",
        "inventory.updates",
        "emails.outbox",
    ),
    "carrier": ("ups", "fedex", "dhl", "usps"),
    "email_tpl": ("order_confirmation", "password_reset", "shipping_update", "welcome"),
    "profile_fields": (
        "email",
        "address,phone",
        "display_name",
        "avatar,locale,timezone",
    ),
    "model": ("als-v12", "two-tower-v3", "popularity-v1"),
    "job": ("nightly_reconcile", "expire_sessions", "rebuild_index", "send_digests"),
    "err": _ERRS,
    "client_err": (
        "validation failed: missing field",
        "not found",
        "conflict",
        "forbidden",
    ),
    "decline": (
        "insufficient funds",
        "card expired",
        "suspected fraud",
        "do not honor",
    ),
    "db_err": (
        "deadlock detected",
        "too many connections",
        "statement timeout",
        "disk full",
    ),
    "exc": (
        "NullPointerException",
        "KeyError: 'items'",
        "IndexOutOfRange",
        "panic: nil map",
    ),
    "auth_err": (
        "invalid password",
        "account locked",
        "MFA code mismatch",
        "token revoked",
    ),
    "promo": ("SPRING10", "FREESHIP", "VIP20", "none"),
    "warehouse": ("wh-ams-1", "wh-fra-2", "wh-iad-1", "wh-sfo-3"),
}


def _pick(r: random.Random, seq: Sequence[_T]) -> _T:
    """`r.choice(seq)`, about three times faster (one `random()` call)."""
    return seq[int(r.random() * len(seq))]


def _between(r: random.Random, lo: int, hi: int) -> int:
    """An int in [lo, hi), like `r.randrange(lo, hi)` but faster."""
    return lo + int(r.random() * (hi - lo))


def _hexid(prefix: str, bits: int) -> Callable[[random.Random], str]:
    width = bits // 4
    return lambda r: f"{prefix}{r.getrandbits(bits):0{width}x}"


def _words(key: str) -> Callable[[random.Random], str]:
    choices = _WORDS[key]
    return lambda r: _pick(r, choices)


def _int_field(lo: int, hi: int) -> Callable[[random.Random], str]:
    return lambda r: str(_between(r, lo, hi))


# Generators of the template fields that are not shared with the attributes.
_FIELDS: dict[str, Callable[[random.Random], str]] = {
    "order": _hexid("ord-", 40),
    "payment": _hexid("pay_", 48),
    "shipment": _hexid("shp-", 32),
    "invoice": lambda r: f"INV-{_between(r, 0, 10**8):08d}",
    "session": _hexid("", 64),
    "key": lambda r: f"{_pick(r, ('user', 'cart', 'product', 'price'))}:{_between(r, 0, 10**6)}",
    "sku": lambda r: f"SKU-{_between(r, 0, 100_000):05d}",
    "n": _int_field(1, 500),
    "pool": _int_field(1, 33),
    "retry": _int_field(1, 6),
    "worker": _int_field(1, 17),
    "partition": _int_field(0, 12),
    "bytes": _int_field(64, 1 << 20),
    "amount": lambda r: f"{1 + r.random() * 899:.2f}",
    "ip": lambda r: f"10.{_between(r, 0, 256)}.{_between(r, 0, 256)}.{_between(r, 1, 255)}",
    "peer": lambda r: _pick(r, SERVICES),
    **{k: _words(k) for k in _WORDS},
}
_SHARED = frozenset({"user", "ms", "method", "path", "status"})


def _template_fields(template: str) -> tuple[str, ...]:
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    for f in names:
        if f not in _SHARED and f not in _FIELDS:
            raise ValueError(f"template {template!r}: unknown field {f!r}")
    return tuple(f for f in dict.fromkeys(names) if f not in _SHARED)


# Per level: (template, the non-shared fields it needs).
_COMPILED: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    level: tuple((t, _template_fields(t)) for t in ts) for level, ts in TEMPLATES.items()
}
_STATUS_BY_LEVEL: dict[str, tuple[int, ...]] = {
    "DEBUG": _OK_STATUS,
    "INFO": _OK_STATUS,
    "WARN": _WARN_STATUS,
    "ERROR": _ERROR_STATUS,
    "FATAL": _ERROR_STATUS,
}


@dataclass(slots=True)
class TraceInfo:
    """One trace: its services (the first is the root), spans and log records."""

    trace_id: bytes
    services: list[str]
    span_ids: list[bytes]  # the span of services[i]; log records of services[i] carry it
    target_records: int  # records the trace was meant to get (2..20)
    records: int = 0  # records it got (fewer only if the workload ended first)
    # (span_id, index of the parent service span, name) of leaf spans without log records
    extra_spans: list[tuple[bytes, int, str]] = field(default_factory=list)
    # per service index: [first, last] record timestamp, or None without records
    bounds: list[list[int] | None] = field(default_factory=list)

    @property
    def span_count(self) -> int:
        return len(self.span_ids) + len(self.extra_spans)

    @property
    def complete(self) -> bool:
        return self.records == self.target_records


@dataclass
class WorkloadStats:
    """The ground truth of a workload, filled while its records are generated."""

    records: int = 0
    traced_records: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (service, level) -> n
    traces: dict[bytes, TraceInfo] = field(default_factory=dict)  # in order of creation
    rare_keyword: str = RARE_KEYWORD
    rare_count: int = 0
    body_chars: int = 0

    def count(self, service: str | None = None, levels: Sequence[str] = LEVEL_NAMES) -> int:
        """Records of `service` (any service if None) at one of `levels`."""
        return sum(
            n
            for (svc, lv), n in self.counts.items()
            if lv in levels and (service is None or svc == service)
        )

    def at_least(self, level: str, service: str | None = None) -> int:
        """Records at `level` or more severe (the query `level>=LEVEL`)."""
        return self.count(service, LEVEL_NAMES[LEVEL_NAMES.index(level) :])

    def level_totals(self) -> dict[str, int]:
        return {lv: self.count(levels=(lv,)) for lv in LEVEL_NAMES}

    def trace_record_counts(self) -> dict[str, int]:
        """Hex trace id -> number of log records carrying it."""
        return {tid.hex(): t.records for tid, t in self.traces.items()}

    @property
    def span_count(self) -> int:
        return sum(t.span_count for t in self.traces.values())


@dataclass(slots=True)
class Rec:
    """One generated log record, before encoding."""

    ts: int
    service: int  # index into SERVICES
    instance: int  # index into the service's (host, pod) instances
    level: int  # index into LEVELS
    body: str
    method: str
    status: int
    user: str
    duration_ms: float | None
    region: str | None
    route: str | None
    trace_id: bytes  # 16 bytes, or b""
    span_id: bytes  # 8 bytes, or b""


def _nonzero_bits(rng: random.Random, nbytes: int) -> bytes:
    while True:
        v = rng.getrandbits(nbytes * 8)
        if v:
            return v.to_bytes(nbytes, "big")


# -- protobuf wire encoding -------------------------------------------------------------------
# Log records are encoded by hand: building upb message objects field by field costs more than
# generating the records. The bytes are canonical (fields in number order, defaults omitted),
# the same as `ExportLogsServiceRequest(...).SerializeToString()`; the tests check that.


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS: tuple[bytes, ...] = tuple(_varint(i) for i in range(1 << 14))


def _len_prefixed(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SMALL_VARINTS[n] if n < 16384 else _varint(n)) + payload


def _kv_bytes(key: str, value: str | int | float) -> bytes:
    """A serialized KeyValue with a string, int or double AnyValue."""
    if isinstance(value, str):
        any_value = _len_prefixed(b"\x0a", value.encode())
    elif isinstance(value, int):
        any_value = b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    else:
        any_value = b"\x21" + _F64.pack(value)
    return _len_prefixed(b"\x0a", key.encode()) + _len_prefixed(b"\x12", any_value)


_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
# LogRecord field tags: 1 time_unix_nano (fixed64), 2 severity_number, 3 severity_text,
# 5 body (AnyValue), 6 attributes (KeyValue), 8 flags (fixed32), 9 trace_id, 10 span_id,
# 11 observed_time_unix_nano (fixed64).
_SEVERITY: tuple[bytes, ...] = tuple(
    b"\x10" + _varint(num) + _len_prefixed(b"\x1a", name.encode()) for name, num, _ in LEVELS
)
_FLAGS_SAMPLED = b"\x45" + struct.pack("<I", 1)
OBSERVED_DELAY_NS = 1_500_000


def _kv_str(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


class Workload:
    """A deterministic stream of OTLP log requests, with its ground truth in `stats`.

    `stats` is (re)filled each time `log_requests()` or `records()` runs to the end.
    """

    def __init__(
        self,
        total_records: int,
        batch_size: int = 512,
        seed: int = 1,
        start_ns: int | None = None,
        span_ns: int = DEFAULT_SPAN_NS,
        rare_every: int = RARE_EVERY,
        rare_keyword: str = RARE_KEYWORD,
    ) -> None:
        if total_records < 0 or batch_size < 1 or span_ns < 1 or rare_every < 1:
            raise ValueError("total_records >= 0, batch_size >= 1, span_ns >= 1, rare_every >= 1")
        self.total_records = total_records
        self.batch_size = batch_size
        self.seed = seed
        self.span_ns = span_ns
        self.start_ns = time.time_ns() - span_ns if start_ns is None else start_ns
        self.rare_every = rare_every
        self.rare_keyword = rare_keyword
        self.stats = WorkloadStats(rare_keyword=rare_keyword)
        self._generated = False

        setup = random.Random(f"otelog-bench-setup-{seed}")
        # Some services are much busier than others (a Zipf-like spread).
        ranks = list(range(len(SERVICES)))
        setup.shuffle(ranks)
        self._svc_weights = [1.0 / (1 + rank) ** 0.7 for rank in ranks]
        # 2-3 instances per service: (host, pod)
        self._instances: list[list[tuple[str, str]]] = []
        for svc in SERVICES:
            replica_set = "".join(setup.choice(_POD_ALPHABET) for _ in range(10))
            pods = []
            for _ in range(setup.randrange(2, 4)):
                suffix = "".join(setup.choice(_POD_ALPHABET) for _ in range(5))
                pod = f"{svc}-{replica_set}-{suffix}"
                pods.append((setup.choice(HOSTS), pod))
            self._instances.append(pods)
        self._versions = [f"1.{setup.randrange(30)}.{setup.randrange(10)}" for _ in SERVICES]
        self._svc_region = [setup.choice(REGIONS) for _ in SERVICES]

    def instances(self, service: str) -> list[tuple[str, str]]:
        """The (host.name, k8s.pod.name) pairs of `service`."""
        return list(self._instances[SERVICES.index(service)])

    # -- resources ---------------------------------------------------------------------------

    def resource(self, service: int, instance: int | None) -> Resource:
        """The OTLP Resource of a service instance (of the whole service if `instance` is None,
        as used for spans)."""
        name = SERVICES[service]
        attrs = [
            _kv_str("service.name", name),
            _kv_str("service.namespace", "shop"),
            _kv_str("service.version", self._versions[service]),
            _kv_str("deployment.environment", "production"),
            _kv_str("cloud.region", self._svc_region[service]),
        ]
        if instance is not None:
            host, pod = self._instances[service][instance]
            attrs += [
                _kv_str("host.name", host),
                _kv_str("k8s.pod.name", pod),
                _kv_str("k8s.namespace.name", "shop"),
            ]
        return Resource(attributes=attrs)

    @staticmethod
    def scope(service: int) -> InstrumentationScope:
        return InstrumentationScope(name=f"shop.{SERVICES[service]}", version="1.0.0")

    def rare_indices(self) -> set[int]:
        """Indices of the records holding the rare keyword: one at a seeded random position in
        each full or partial block of `rare_every` records (if it falls inside the total)."""
        rng = random.Random(f"otelog-bench-rare-{self.seed}")
        out = set()
        for block in range(0, self.total_records, self.rare_every):
            idx = block + rng.randrange(self.rare_every)
            if idx < self.total_records:
                out.add(idx)
        return out

    # -- records -----------------------------------------------------------------------------

    def records(self) -> Iterator[Rec]:
        """The records, in order, filling `self.stats` as they are produced."""
        self._generated = False
        stats = self.stats = WorkloadStats(rare_keyword=self.rare_keyword)
        rng = random.Random(self.seed)
        rand = rng.random
        total = self.total_records
        svc_range = range(len(SERVICES))
        cum_weights = list(itertools.accumulate(self._svc_weights))
        n_instances = [len(i) for i in self._instances]
        rare = self.rare_indices()
        level_cut = [cut for _, _, cut in LEVELS]
        counts = stats.counts
        for svc in SERVICES:
            for lv in LEVEL_NAMES:
                counts[(svc, lv)] = 0
        active: list[TraceInfo] = []
        trace_svcs: dict[bytes, list[int]] = {}  # trace id -> its service indices
        start, span = self.start_ns, self.span_ns
        step = span / total if total else 0.0
        last_ns = start + span - 1

        for i in range(total):
            # service, trace, span
            trace: TraceInfo | None = None
            slot = k = -1
            if rand() < TRACED_FRACTION:
                if len(active) < ACTIVE_TRACES:
                    n_services = rng.choices((1, 2, 3, 4), (30, 35, 20, 15))[0]
                    chosen: list[int] = []
                    while len(chosen) < n_services:
                        s = rng.choices(svc_range, cum_weights=cum_weights)[0]
                        if s not in chosen:
                            chosen.append(s)
                    trace = TraceInfo(
                        trace_id=_nonzero_bits(rng, 16),
                        services=[SERVICES[s] for s in chosen],
                        span_ids=[_nonzero_bits(rng, 8) for _ in chosen],
                        target_records=rng.randint(TRACE_MIN_RECORDS, TRACE_MAX_RECORDS),
                        bounds=[None] * n_services,
                    )
                    for _ in range(rng.randrange(3)):
                        op = rng.choice(("db.query", "cache.get", "http.client", "queue.publish"))
                        parent = rng.randrange(n_services)
                        trace.extra_spans.append((_nonzero_bits(rng, 8), parent, op))
                    stats.traces[trace.trace_id] = trace
                    trace_svcs[trace.trace_id] = chosen
                    active.append(trace)
                    slot = len(active) - 1
                else:
                    slot = int(rand() * len(active))
                    trace = active[slot]
                # The first record of a trace comes from its root service.
                k = 0 if trace.records == 0 else int(rand() * len(trace.services))
                service = trace_svcs[trace.trace_id][k]
                trace_id, span_id = trace.trace_id, trace.span_ids[k]
            else:
                service = rng.choices(svc_range, cum_weights=cum_weights)[0]
                trace_id = span_id = b""
            instance = int(rand() * n_instances[service])

            # level and body
            r = rand()
            level = 0
            while r >= level_cut[level]:
                level += 1
            level_name = LEVELS[level][0]
            template, needs = _pick(rng, _COMPILED[level_name])
            path_tpl, id_kind = _pick(rng, _PATHS)
            method = _pick(rng, _METHODS)
            status = _pick(rng, _STATUS_BY_LEVEL[level_name])
            user = f"u-{_between(rng, 1, 2_000_000):07d}"
            duration = round(rng.expovariate(1 / 80.0) * (8 if level >= 2 else 1), 2)
            values = {f: _FIELDS[f](rng) for f in needs}
            path = path_tpl
            if id_kind:
                ident = user if id_kind == "user" else values.get(id_kind) or _FIELDS[id_kind](rng)
                path = path_tpl.replace("{id}", ident)
            body = template.format(
                user=user, ms=duration, method=method, path=path, status=status, **values
            )
            if i in rare:
                body += f" [{self.rare_keyword}]"
                stats.rare_count += 1

            # optional attributes: 3-6 in all
            extras = rng.getrandbits(3)
            region = self._svc_region[service] if extras & 1 else None
            route = path_tpl if extras & 2 else None
            dur = duration if extras & 4 else None

            # timestamp: uniform over the window, mostly increasing
            ts = start + int((i + rand()) * step)
            late = rand()
            if late < LATE_FRACTION:
                ts = max(start, ts - int(late / LATE_FRACTION * LATE_MAX_NS))
            ts = min(ts, last_ns)

            # ground truth
            stats.records += 1
            stats.body_chars += len(body)
            counts[(SERVICES[service], level_name)] += 1
            if trace is not None:
                stats.traced_records += 1
                trace.records += 1
                b = trace.bounds[k]
                if b is None:
                    trace.bounds[k] = [ts, ts]
                else:
                    b[0] = min(b[0], ts)
                    b[1] = max(b[1], ts)
                if trace.records == trace.target_records:
                    active[slot] = active[-1]
                    active.pop()

            yield Rec(
                ts=ts,
                service=service,
                instance=instance,
                level=level,
                body=body,
                method=method,
                status=status,
                user=user,
                duration_ms=dur,
                region=region,
                route=route,
                trace_id=trace_id,
                span_id=span_id,
            )
        self._generated = True

    # -- encoding ----------------------------------------------------------------------------

    def log_requests(self) -> Iterator[bytes]:
        """Serialized ExportLogsServiceRequest bodies of `batch_size` records each (the last
        may be smaller), with one ResourceLogs per (service, instance) in the batch, in order
        of first appearance, each with one ScopeLogs."""
        resources: dict[tuple[int, int], bytes] = {}
        scopes = [_len_prefixed(b"\x0a", self.scope(s).SerializeToString()) for s in _svc_range()]
        kv_cache: dict[tuple[str, str | int], bytes] = {}

        def kv(key: str, value: str | int) -> bytes:
            b = kv_cache.get((key, value))
            if b is None:
                b = kv_cache[(key, value)] = _len_prefixed(b"\x32", _kv_bytes(key, value))
            return b

        groups: dict[tuple[int, int], list[bytes]] = {}
        in_batch = 0
        pack_u64 = _U64.pack
        for rec in self.records():
            parts = [
                b"\x09",
                pack_u64(rec.ts),
                _SEVERITY[rec.level],
                _len_prefixed(b"\x2a", _len_prefixed(b"\x0a", rec.body.encode())),
                kv("http.method", rec.method),
                kv("http.status_code", rec.status),
                _len_prefixed(b"\x32", _kv_bytes("user.id", rec.user)),
            ]
            if rec.duration_ms is not None:
                parts.append(_len_prefixed(b"\x32", _kv_bytes("duration_ms", rec.duration_ms)))
            if rec.region is not None:
                parts.append(kv("region", rec.region))
            if rec.route is not None:
                parts.append(kv("http.route", rec.route))
            if rec.trace_id:
                parts += (_FLAGS_SAMPLED, b"\x4a\x10", rec.trace_id, b"\x52\x08", rec.span_id)
            parts += (b"\x59", pack_u64(rec.ts + OBSERVED_DELAY_NS))
            key = (rec.service, rec.instance)
            group = groups.get(key)
            if group is None:
                group = groups[key] = []
            group.append(_len_prefixed(b"\x12", b"".join(parts)))
            in_batch += 1
            if in_batch == self.batch_size:
                yield self._encode_logs(groups, resources, scopes)
                groups = {}
                in_batch = 0
        if in_batch:
            yield self._encode_logs(groups, resources, scopes)

    def _encode_logs(
        self,
        groups: dict[tuple[int, int], list[bytes]],
        resources: dict[tuple[int, int], bytes],
        scopes: list[bytes],
    ) -> bytes:
        out = []
        for key, recs in groups.items():
            res = resources.get(key)
            if res is None:
                res = resources[key] = _len_prefixed(
                    b"\x0a", self.resource(*key).SerializeToString()
                )
            # ResourceLogs: 1 resource, 2 scope_logs; ScopeLogs: 1 scope, 2 log_records
            scope_logs = _len_prefixed(b"\x12", scopes[key[0]] + b"".join(recs))
            out.append(_len_prefixed(b"\x0a", res + scope_logs + _SCHEMA_URL))
        return b"".join(out)

    def span_requests(self, spans_per_request: int = 512) -> Iterator[bytes]:
        """Serialized ExportTraceServiceRequest bodies with the spans of every trace: one span
        per service of the trace (the first is the root, the others its children) plus 0-2
        leaf spans. Log records carry the span id of their service's span, and spans cover
        the timestamps of their records. Generates the logs first if that has not happened."""
        if not self._generated:
            for _ in self.records():
                pass
        svc_index = {s: i for i, s in enumerate(SERVICES)}
        resources = [self.resource(s, None) for s in _svc_range()]
        scopes = [self.scope(s) for s in _svc_range()]
        groups: dict[int, list[Span]] = {}
        n = 0
        ms = 1_000_000
        for t in self.stats.traces.values():
            seen = [b for b in t.bounds if b is not None]
            lo = min(b[0] for b in seen) - 2 * ms
            hi = max(b[1] for b in seen) + 2 * ms
            times: list[tuple[int, int]] = []
            for k, svc in enumerate(t.services):
                b = t.bounds[k]
                if k == 0:
                    s0, s1 = lo, hi
                elif b is None:
                    s0, s1 = lo + ms, lo + 2 * ms
                else:
                    s0, s1 = b[0] - ms, b[1] + ms
                times.append((s0, s1))
                sp = Span(
                    trace_id=t.trace_id,
                    span_id=t.span_ids[k],
                    parent_span_id=t.span_ids[0] if k else b"",
                    name=f"{svc} {'HandleRequest' if k == 0 else 'Process'}",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=s0,
                    end_time_unix_nano=s1,
                    attributes=[_kv_str("service.role", "root" if k == 0 else "child")],
                    status=Status(code=Status.STATUS_CODE_OK),
                )
                groups.setdefault(svc_index[svc], []).append(sp)
                n += 1
            for span_id, parent, op in t.extra_spans:
                p0, p1 = times[parent]
                sp = Span(
                    trace_id=t.trace_id,
                    span_id=span_id,
                    parent_span_id=t.span_ids[parent],
                    name=op,
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=p0,
                    end_time_unix_nano=p0 + (p1 - p0) // 2,
                )
                groups.setdefault(svc_index[t.services[parent]], []).append(sp)
                n += 1
            if n >= spans_per_request:
                yield self._encode_spans(groups, resources, scopes)
                groups = {}
                n = 0
        if n:
            yield self._encode_spans(groups, resources, scopes)

    @staticmethod
    def _encode_spans(
        groups: dict[int, list[Span]], resources: list[Resource], scopes: list[InstrumentationScope]
    ) -> bytes:
        rss = [
            ResourceSpans(
                resource=resources[s], scope_spans=[ScopeSpans(scope=scopes[s], spans=sp)]
            )
            for s, sp in groups.items()
        ]
        body: bytes = ExportTraceServiceRequest(resource_spans=rss).SerializeToString()
        return body


SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
_SCHEMA_URL = _len_prefixed(b"\x1a", SCHEMA_URL.encode())  # ResourceLogs.schema_url


def _svc_range() -> range:
    return range(len(SERVICES))


def generate_requests(
    total_records: int,
    batch_size: int = 512,
    seed: int = 1,
    start_ns: int | None = None,
    span_ns: int = DEFAULT_SPAN_NS,
) -> Iterator[bytes]:
    """Serialized ExportLogsServiceRequest bodies; see `Workload` for the ground truth."""
    return Workload(total_records, batch_size, seed, start_ns, span_ns).log_requests()


def generate_span_requests(
    total_records: int,
    batch_size: int = 512,
    seed: int = 1,
    start_ns: int | None = None,
    span_ns: int = DEFAULT_SPAN_NS,
    spans_per_request: int = 512,
) -> Iterator[bytes]:
    """Serialized ExportTraceServiceRequest bodies for the traces of the same workload."""
    wl = Workload(total_records, batch_size, seed, start_ns, span_ns)
    return wl.span_requests(spans_per_request)


def expected_counts(
    total_records: int,
    batch_size: int = 512,
    seed: int = 1,
    rare_every: int = RARE_EVERY,
    rare_keyword: str = RARE_KEYWORD,
) -> WorkloadStats:
    """The ground truth of a workload without encoding it. The counts depend on neither
    `batch_size` (accepted for symmetry with `generate_requests`) nor the time window; the
    trace bounds do, and are computed here for a window starting at 0."""
    wl = Workload(
        total_records, batch_size, seed, 0, rare_every=rare_every, rare_keyword=rare_keyword
    )
    for _ in wl.records():
        pass
    return wl.stats


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    t0 = time.perf_counter()
    size = sum(len(b) for b in generate_requests(n, start_ns=10**18))
    dt = time.perf_counter() - t0
    print(f"logs: {n} records, {size / n:.0f} B/record encoded, {n / dt:,.0f} records/s generated")
    t0 = time.perf_counter()
    wl = Workload(n, start_ns=10**18)
    spans = sum(1 for _ in wl.span_requests())
    dt = time.perf_counter() - t0
    print(f"spans: {wl.stats.span_count} spans in {spans} requests (logs included) in {dt:.2f} s")
