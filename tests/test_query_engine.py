"""The query engine against a reference implementation, over a known data set.

The data set lives in a real RocksDB store spread over three sealed segments that overlap
in time plus the fresh in-memory part, so every query runs through both the bitmap planner
(segments) and the row-at-a-time matcher (fresh rows, residual predicates) and the two
must agree with plain Python predicates written here, independently of otelog's matcher.
For every query: `total`, the first page, and a walk of all pages by page token.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from otlp_values import any_value, key_values

from otelog.config import Config
from otelog.ingest.writer import Writer
from otelog.query.rows import LogRow
from otelog.query.service import PageRequest, QueryService
from otelog.receiver.decode import decode_logs, decode_spans
from otelog.server import Server
from otelog.store.store import Store

TENANT = "default"
S = 1_000_000_000
MIN = 60 * S
H = 3600 * S

Scalar = str | int | float | bool
AttrValue = Scalar | list[Scalar] | dict[str, Any]

# ---------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Res:
    service: str | None  # None: no service.name attribute at all
    host: str | None
    pod: str
    restarts: int

    @property
    def service_name(self) -> str:
        return self.service or "unknown_service"

    @property
    def host_name(self) -> str:
        return self.host or ""

    def attrs(self) -> dict[str, Scalar]:
        d: dict[str, Scalar] = {}
        if self.service is not None:
            d["service.name"] = self.service
        if self.host is not None:
            d["host.name"] = self.host
        d["k8s.pod.name"] = self.pod
        d["k8s.pod.restarts"] = self.restarts
        return d


RESOURCES = (
    Res("auth", "h1", "pod-0", 0),
    Res("auth", "h2", "pod-1", 2),
    Res("api", "h1", "pod-2", 0),
    Res("api", "h3", "pod-3", 1),
    Res("api", "h4", "pod-4", 3),
    Res("billing", "h2", "pod-5", 0),
    Res("billing", "h3", "pod-6", 5),
    Res("search", "h4", "pod-7", 0),
    Res(None, None, "pod-orphan", 0),  # service "unknown_service", no host
)
RESOURCE_WEIGHTS = (14, 10, 16, 12, 10, 12, 8, 12, 6)
SCOPES = ("app", "lib")
# (severity_number base, level) for TRACE..FATAL; the number is base + 0..3
SEVERITY_BASES = ((1, 1), (5, 2), (9, 3), (13, 4), (17, 5), (21, 6))
SEVERITY_WEIGHTS = (5, 15, 45, 15, 12, 3)
# severity_number 0: the level comes from the text
TEXT_LEVELS = (("warning", 4), ("Error", 5), ("info2", 3), ("bogus", 0), ("", 0))
LEVEL_NAMES = ("UNSPECIFIED", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


@dataclass
class Rec:
    idx: int
    chunk: int
    ts: int
    use_observed: bool  # time_unix_nano 0, the time in observed_time_unix_nano
    sev_number: int
    sev_text: str
    level: int
    res: int
    scope: str
    body: str
    trace_id: bytes
    span_id: bytes
    attrs: dict[str, AttrValue]
    log_id: int = -1  # assigned by the writer at ingestion
    # a structured (map) body instead of a string; `body` is then its compact JSON, the
    # text otelog shows and searches
    body_map: dict[str, Scalar] | None = None

    @property
    def resource(self) -> Res:
        return RESOURCES[self.res]

    @property
    def service(self) -> str:
        return self.resource.service_name

    @property
    def host(self) -> str:
        return self.resource.host_name

    @property
    def flat(self) -> dict[str, Scalar]:
        return flatten(self.attrs)

    @property
    def key(self) -> tuple[int, int]:
        return (self.ts, self.log_id)


def flatten(attrs: dict[str, AttrValue], prefix: str = "") -> dict[str, Scalar]:
    """Scalar attributes under dotted keys; maps are walked, arrays are not scalars."""
    out: dict[str, Scalar] = {}
    for k, v in attrs.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[prefix + k] = v
    return out


# Gaps with no records, around the relative times the queries use (30m, 1h, 2h ago), so
# that the seconds between generating the data and running a query cannot move a record
# across a boundary.
_GAPS = ((20 * MIN, 40 * MIN), (50 * MIN, 70 * MIN), (110 * MIN, 130 * MIN))
OLDEST = 3 * H
NEWEST = 5 * MIN


def _offset(rng: random.Random) -> int:
    while True:
        off = rng.randrange(NEWEST, OLDEST)
        if not any(lo <= off <= hi for lo, hi in _GAPS):
            return off


PEERS = ("auth-svc", "db-1", "cache-7")
CITIES = ("Lisbon", "Oslo", "Quito", "Kyoto")
NAMES = ("Zoë", "Ana", "Björn")
USER_IDS = (*range(1200, 1260), 12345, 12346)


def _body(rng: random.Random, i: int) -> str:
    tag = f"#{i:05d}"
    t = rng.randrange(17)
    uid = rng.choice(USER_IDS)
    n = rng.randrange(1, 999)
    if t == 0:
        return f"{tag} Timeout: upstream {rng.choice(PEERS)} did not answer"
    if t == 1:
        return f"{tag} timeout42 while reading from {rng.choice(PEERS)}"
    if t == 2:
        return f"{tag} {n} timeouts exceeded for user u-{uid}"
    if t == 3:
        return f"{tag} connection reset by peer 10.0.{n % 256}.{rng.randrange(256)}"
    if t == 4:
        return f"{tag} Connection Reset by peer during TLS handshake"
    if t == 5:
        return f"{tag} connection  reset twice, giving up"
    if t == 6:
        return f"{tag} user u-{uid} logged in from {rng.choice(CITIES)}"
    if t == 7:
        status = rng.choice((200, 200, 404, 500, 503))
        return f"{tag} GET /api/v1/items/{n} returned {status}"
    if t == 8:
        return f"{tag} payment failed: card declined (code {n})"
    if t == 9:
        return f"{tag} cache miss for key k{n}"
    if t == 10:
        return f"{tag} Café au lait ordered by {rng.choice(NAMES)}"
    if t == 11:
        return f"{tag} retrying in 500ms (attempt {n % 5})"
    if t == 12:
        return f"{tag} x marks the spot at {n}"
    if t == 13:
        return f"{tag} matrix export finished in {n}ms"
    if t == 14:
        return f"{tag} shutting down worker {n}: TIMEOUTS disabled"
    if t == 15:
        return f"{tag} 42timeout42 sentinel value"
    return f"{tag} disk usage at {n % 100}% on /dev/sda{n % 4}"


def _attributes(rng: random.Random, i: int, ts: int) -> dict[str, AttrValue]:
    a: dict[str, AttrValue] = {"request_id": f"req-{i:05d}-{rng.getrandbits(32):08x}"}
    r = rng.random()
    if r < 0.6:
        a["user.id"] = rng.randrange(30, 50)
    elif r < 0.7:
        a["user.id"] = str(rng.randrange(30, 50))  # the same ids, as strings
    r = rng.random()
    if r < 0.6:
        a["http.status_code"] = rng.choice((200, 200, 201, 304, 404, 500, 502, 503))
    elif r < 0.7:
        a["http.status_code"] = rng.choice((500.0, 503.0, 200.0))
    elif r < 0.75:
        a["http.status_code"] = rng.choice(("500", "404", "503"))
    r = rng.random()
    if r < 0.4:
        a["latency_ms"] = round(rng.uniform(0, 300), 2)
    elif r < 0.5:
        a["latency_ms"] = rng.choice((0.25, 1500.0, 100.5))
    elif r < 0.55:
        a["latency_ms"] = rng.randrange(0, 600)
    if rng.random() < 0.4:
        a["cache.hit"] = rng.random() < 0.5
    if rng.random() < 0.3:
        a["delta"] = rng.randrange(-10, 10)
    if rng.random() < 0.5:
        a["http"] = {
            "request": {
                "method": rng.choice(("GET", "GET", "POST", "PUT", "DELETE")),
                "path": "/api/v1/items",
            },
            "retries": rng.randrange(0, 3),
        }
    a["event_ns"] = ts
    if rng.random() < 0.05:
        a["note"] = ""
    if rng.random() < 0.1:
        a["tags"] = ["blue", "green"]
    return a


def make_dataset(seed: int, sizes: tuple[int, ...], now_ns: int) -> list[Rec]:
    """Records of `sum(sizes)`, randomly dealt into chunks of `sizes` (so every chunk
    spans the whole time range); about 4% share their timestamp with an earlier record."""
    rng = random.Random(seed)
    n = sum(sizes)
    chunk_of = [c for c, size in enumerate(sizes) for _ in range(size)]
    rng.shuffle(chunk_of)
    traces = [rng.randbytes(16) for _ in range(25)]
    shape_rng = random.Random(seed + 1)
    recs: list[Rec] = []
    for i in range(n):
        tie = recs and rng.random() < 0.04
        ts = rng.choice(recs).ts if tie else now_ns - _offset(rng)
        if rng.random() < 0.05:
            text, level = rng.choice(TEXT_LEVELS)
            number = 0
        else:
            base, level = rng.choices(SEVERITY_BASES, SEVERITY_WEIGHTS)[0]
            number = base + rng.randrange(4)
            text = LEVEL_NAMES[level]
        r = rng.random()
        trace_id = span_id = b""
        if r < 0.35:
            trace_id, span_id = rng.choice(traces), rng.randbytes(8)
        elif r < 0.4:
            trace_id = rng.choice(traces)
        recs.append(
            Rec(
                idx=i,
                chunk=chunk_of[i],
                ts=ts,
                use_observed=rng.random() < 0.03,
                sev_number=number,
                sev_text=text,
                level=level,
                res=rng.choices(range(len(RESOURCES)), RESOURCE_WEIGHTS)[0],
                scope=rng.choice(SCOPES),
                body=_body(rng, i),
                trace_id=trace_id,
                span_id=span_id,
                attrs=_attributes(rng, i, ts),
            )
        )
        if shape_rng.random() < 0.04:
            rec = recs[-1]
            rec.body_map = {
                "event": shape_rng.choice(("login", "logout")),
                "id": f"#{i:05d}",
                "code": shape_rng.choice((201, 503)),
                "ratio": 0.75,
            }
            rec.body = json.dumps(rec.body_map, separators=(",", ":"))
    return recs


# ---- OTLP encoding


def log_record(r: Rec) -> LogRecord:
    return LogRecord(
        time_unix_nano=0 if r.use_observed else r.ts,
        observed_time_unix_nano=r.ts,
        severity_number=r.sev_number,  # type: ignore[arg-type]
        severity_text=r.sev_text,
        body=any_value(r.body_map) if r.body_map else AnyValue(string_value=r.body),
        trace_id=r.trace_id,
        span_id=r.span_id,
        attributes=key_values(r.attrs),
    )


def logs_request(recs: list[Rec]) -> bytes:
    """One ResourceLogs per resource and one ScopeLogs per scope, in order of appearance."""
    groups: dict[int, dict[str, list[Rec]]] = {}
    for r in recs:
        groups.setdefault(r.res, {}).setdefault(r.scope, []).append(r)
    req = ExportLogsServiceRequest()
    for res, scopes in groups.items():
        req.resource_logs.append(
            ResourceLogs(
                resource=Resource(attributes=key_values(RESOURCES[res].attrs())),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name=scope, version="1.0"),
                        log_records=[log_record(r) for r in rs],
                    )
                    for scope, rs in scopes.items()
                ],
            )
        )
    return req.SerializeToString()


def submit(writer: Writer, recs: list[Rec]) -> None:
    """Ingest one request and wait until durable; note the log ids the writer gave."""
    raw = logs_request(recs)
    receipt_ns = time.time_ns()
    batch, decoded = decode_logs(raw, receipt_ns)
    assert decoded.rejected == 0, decoded.message
    assert len(batch) == len(recs)
    writer.submit_logs(TENANT, batch, raw, receipt_ns).result(timeout=60)
    by_body = {r.body: r for r in recs}
    for body, lid in zip(batch.body, batch.log_id, strict=True):
        by_body[body].log_id = lid


def ingest(writer: Writer, store: Store, data: list[Rec], chunks: int, seed: int) -> None:
    """Chunks 0..n-2 each become a sealed segment; the last chunk stays fresh."""
    rng = random.Random(seed)
    for c in range(chunks):
        recs = [r for r in data if r.chunk == c]
        rng.shuffle(recs)
        i = 0
        while i < len(recs):
            k = rng.randint(20, 80)
            submit(writer, recs[i : i + k])
            i += k
        if c < chunks - 1:
            assert store.seal() == len(recs)


def submit_spans(writer: Writer, trace_id: bytes, base_ns: int) -> list[str]:
    names = ["GET /login", "SELECT users", "render"]
    spans = [
        Span(
            trace_id=trace_id,
            span_id=bytes([0xA0 + i]) * 8,
            parent_span_id=b"" if i == 0 else bytes([0xA0]) * 8,
            name=name,
            kind=Span.SPAN_KIND_SERVER if i == 0 else Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=base_ns + i * 1000,
            end_time_unix_nano=base_ns + (i + 1) * 1_000_000,
        )
        for i, name in enumerate(names)
    ]
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=key_values(RESOURCES[0].attrs())),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    sb, decoded = decode_spans(req, time.time_ns())
    assert decoded.rejected == 0
    writer.submit_spans(TENANT, sb, req.ByteSize()).result(timeout=60)
    return names


# ---------------------------------------------------------------------------------------
# The reference: plain Python predicates
# ---------------------------------------------------------------------------------------

_ASCII_WORD = re.compile(r"[A-Za-z]+")
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def word(r: Rec, w: str) -> bool:
    """Bare word: letters only -> a whole run of ASCII letters; else a substring (any case)."""
    if _ASCII_WORD.fullmatch(w):
        return any(run.lower() == w.lower() for run in _ASCII_WORD.findall(r.body))
    return w.lower() in r.body.lower()


def phrase(r: Rec, p: str) -> bool:
    return p.lower() in r.body.lower()


def text_of(v: Scalar) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


def value_eq(have: Scalar | None, want: str | int | float) -> bool:
    """`key=want`: text against the value's text; a number against a number exactly."""
    if have is None:
        return False
    if isinstance(want, str) or isinstance(have, bool):
        return text_of(have) == (want if isinstance(want, str) else text_of(want))
    if isinstance(have, str):
        return have == text_of(want)
    return Fraction(have) == Fraction(want)


def _ordered(op: str, a: Any, b: Any) -> bool:
    if op == ">":
        return bool(a > b)
    if op == ">=":
        return bool(a >= b)
    if op == "<":
        return bool(a < b)
    assert op == "<="
    return bool(a <= b)


def value_cmp(have: Scalar | None, op: str, want: str | int | float) -> bool:
    """Ordering: numbers (typed, or strings spelled as decimals) exactly; text lexically."""
    if have is None:
        return False
    if isinstance(want, str):
        return _ordered(op, text_of(have), want)
    if isinstance(have, bool):
        return False
    if isinstance(have, str):
        if not _DECIMAL.fullmatch(have):
            return False
        return _ordered(op, Fraction(have), Fraction(want))
    return _ordered(op, Fraction(have), Fraction(want))


def attr(r: Rec, key: str) -> Scalar | None:
    return r.flat.get(key)


def res_attr(r: Rec, key: str) -> Scalar | None:
    return r.resource.attrs().get(key)


# ---------------------------------------------------------------------------------------
# The table of queries
# ---------------------------------------------------------------------------------------

Pred = Callable[[Rec], bool]


@dataclass(frozen=True)
class Case:
    id: str
    query: str
    pred: Pred
    since: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    expect_empty: bool = False

    def request(self, limit: int, token: str | None = None) -> PageRequest:
        return PageRequest(
            query=self.query,
            since=self.since,
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            limit=limit,
            page_token=token,
        )


def rfc3339(ns: int, offset_minutes: int = 0) -> str:
    """`ns` in RFC 3339 with all nine fraction digits, at the given UTC offset."""
    secs, frac = divmod(ns, S)
    tz = timezone(timedelta(minutes=offset_minutes))
    dt = datetime.fromtimestamp(secs, tz)
    if offset_minutes == 0:
        zone = "Z"
    else:
        sign = "+" if offset_minutes > 0 else "-"
        hh, mm = divmod(abs(offset_minutes), 60)
        zone = f"{sign}{hh:02d}:{mm:02d}"
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{frac:09d}{zone}"


def top_trace_of(data: list[Rec]) -> bytes:
    counts = Counter(r.trace_id for r in data if r.trace_id)
    return max(counts, key=lambda t: (counts[t], t))


def build_cases(data: list[Rec], now_ns: int) -> list[Case]:
    """The table, with values (ids, times) picked from `data` deterministically."""
    chunks = max(r.chunk for r in data) + 1
    by_chunk = [[r for r in data if r.chunk == c] for c in range(chunks)]
    trace_counts = Counter(r.trace_id for r in data if r.trace_id)
    top_trace = top_trace_of(data).hex()
    other_trace = min(trace_counts, key=lambda t: (trace_counts[t], t)).hex()
    with_span = next(r for r in by_chunk[1] if r.span_id)
    rid_first = str(by_chunk[0][len(by_chunk[0]) // 2].attrs["request_id"])
    rid_mid = str(by_chunk[1][3].attrs["request_id"])
    rid_fresh = str(by_chunk[-1][5].attrs["request_id"])
    exact_body = next(r.body for r in by_chunk[-1][7:] if r.body_map is None)
    ts_counts = Counter(r.ts for r in data)
    times = sorted(ts_counts)
    ties = sorted(t for t, k in ts_counts.items() if k > 1)
    tie_ts = ties[len(ties) // 2]
    t_a, t_b = times[len(times) // 4], times[len(times) * 3 // 5]
    ev = by_chunk[2][11].ts  # an event_ns to compare exactly
    cut_30m, cut_1h, cut_2h = now_ns - 30 * MIN, now_ns - H, now_ns - 2 * H
    # None of the boundaries may sit inside the data: see _GAPS.
    assert not any(abs(r.ts - c) < 10 * MIN for r in data for c in (cut_30m, cut_1h, cut_2h))

    def c(query: str, pred: Pred, **kw: Any) -> Case:
        return Case(query, query, pred, **kw)

    def cl(label: str, query: str, pred: Pred, **kw: Any) -> Case:
        return Case(label, query, pred, **kw)

    return [
        # everything
        cl("<empty query>", "", lambda r: True),
        # service / host / level
        c("service=auth", lambda r: r.service == "auth"),
        c("service!=auth", lambda r: r.service != "auth"),
        c("service=unknown_service", lambda r: r.res == 8),
        c("host=h1", lambda r: r.host == "h1"),
        c("host!=h1", lambda r: r.host != "h1"),
        c('host=""', lambda r: r.host == ""),
        c("level=ERROR", lambda r: r.level == 5),
        c("level>=WARN", lambda r: r.level >= 4),
        c("level!=INFO", lambda r: r.level != 3),
        c("level<INFO", lambda r: r.level < 3),
        c("level>DEBUG AND level<=ERROR", lambda r: 2 < r.level <= 5),
        c("severity>=error", lambda r: r.level >= 5),
        # trace and span ids
        cl("trace_id=<top>", f"trace_id={top_trace}", lambda r: r.trace_id.hex() == top_trace),
        cl(
            "trace_id=<upper> AND level>=INFO",
            f"trace_id={other_trace.upper()} AND level>=INFO",
            lambda r: r.trace_id.hex() == other_trace and r.level >= 3,
        ),
        cl(
            "trace_id!=<top> AND service=api",
            f"trace_id!={top_trace} AND service=api",
            lambda r: r.trace_id.hex() != top_trace and r.service == "api",
        ),
        cl(
            "span_id=<one>",
            f"span_id={with_span.span_id.hex()}",
            lambda r: r.span_id == with_span.span_id,
        ),
        # record attributes: int / string / double / bool, equality and order
        c("attributes.user.id=42", lambda r: value_eq(attr(r, "user.id"), 42)),
        c('attributes.user.id="42"', lambda r: value_eq(attr(r, "user.id"), "42")),
        c("attr.user.id=31", lambda r: value_eq(attr(r, "user.id"), 31)),
        c("attributes.user.id!=42", lambda r: not value_eq(attr(r, "user.id"), 42)),
        c(
            "attributes.http.status_code>=500",
            lambda r: value_cmp(attr(r, "http.status_code"), ">=", 500),
        ),
        c(
            "attributes.http.status_code<201",
            lambda r: value_cmp(attr(r, "http.status_code"), "<", 201),
        ),
        c("attributes.http.status_code=503", lambda r: value_eq(attr(r, "http.status_code"), 503)),
        c("attributes.latency_ms>250.5", lambda r: value_cmp(attr(r, "latency_ms"), ">", 250.5)),
        c("attributes.latency_ms=1500", lambda r: value_eq(attr(r, "latency_ms"), 1500)),
        c("attributes.latency_ms<=0.25", lambda r: value_cmp(attr(r, "latency_ms"), "<=", 0.25)),
        c("attributes.cache.hit=true", lambda r: value_eq(attr(r, "cache.hit"), "true")),
        c(
            "attributes.cache.hit=false AND service=billing",
            lambda r: value_eq(attr(r, "cache.hit"), "false") and r.service == "billing",
        ),
        c(
            "attributes.delta>-3 AND attributes.delta<=-1",
            lambda r: (
                value_cmp(attr(r, "delta"), ">", -3) and value_cmp(attr(r, "delta"), "<=", -1)
            ),
        ),
        c("attributes.delta<0", lambda r: value_cmp(attr(r, "delta"), "<", 0)),
        c('attributes.note=""', lambda r: value_eq(attr(r, "note"), "")),
        cl(
            f"attributes.event_ns>=<event_ns of #{by_chunk[2][11].idx} + 1>",
            f"attributes.event_ns>={ev + 1}",
            lambda r: value_cmp(attr(r, "event_ns"), ">=", ev + 1),
        ),
        # nested attributes (a kvlist `http` -> `request` -> `method`)
        c(
            "attributes.http.request.method=GET",
            lambda r: value_eq(attr(r, "http.request.method"), "GET"),
        ),
        c(
            "attributes.http.request.method=DELETE AND attributes.http.retries>=1",
            lambda r: (
                value_eq(attr(r, "http.request.method"), "DELETE")
                and value_cmp(attr(r, "http.retries"), ">=", 1)
            ),
        ),
        c(
            "attributes.http.request.method>=PUT",
            lambda r: value_cmp(attr(r, "http.request.method"), ">=", "PUT"),
        ),
        c("attributes.http.request=GET", lambda r: False, expect_empty=True),
        # resource attributes
        c("resource.k8s.pod.name=pod-3", lambda r: res_attr(r, "k8s.pod.name") == "pod-3"),
        c(
            "res.k8s.pod.name!=pod-3 AND level=FATAL",
            lambda r: res_attr(r, "k8s.pod.name") != "pod-3" and r.level == 6,
        ),
        c(
            "resource.k8s.pod.restarts>=2",
            lambda r: value_cmp(res_attr(r, "k8s.pod.restarts"), ">=", 2),
        ),
        c("resource.service.name=billing", lambda r: r.resource.service == "billing"),
        # high-cardinality attribute: unique per record (no postings in a big segment)
        c(f"attributes.request_id={rid_first}", lambda r: r.attrs["request_id"] == rid_first),
        c(
            f"attributes.request_id={rid_mid} OR attributes.request_id={rid_fresh}",
            lambda r: r.attrs["request_id"] in (rid_mid, rid_fresh),
        ),
        c(
            f"attributes.request_id!={rid_first} AND level=FATAL",
            lambda r: r.attrs["request_id"] != rid_first and r.level == 6,
        ),
        # full text: letter words, substrings, phrases
        c("timeout", lambda r: word(r, "timeout")),
        c("TIMEOUT", lambda r: word(r, "timeout")),
        c("timeouts", lambda r: word(r, "timeouts")),
        c("x", lambda r: word(r, "x")),
        c("u-1234", lambda r: word(r, "u-1234")),
        c("500", lambda r: word(r, "500")),
        c("503", lambda r: word(r, "503")),
        c("503 AND service=api", lambda r: word(r, "503") and r.service == "api"),
        c('"logout"', lambda r: phrase(r, "logout")),
        c("timeout42", lambda r: word(r, "timeout42")),
        c("café", lambda r: word(r, "café")),
        c("/api/v1/items/", lambda r: word(r, "/api/v1/items/")),
        c('"connection reset"', lambda r: phrase(r, "connection reset")),
        c('"Connection Reset by peer"', lambda r: phrase(r, "connection reset by peer")),
        c('" reset by "', lambda r: phrase(r, " reset by ")),
        cl(
            f"body=<exact body of #{exact_body[1:6]}>",
            f'body="{exact_body}"',
            lambda r: r.body == exact_body,
        ),
        # boolean structure
        c(
            'timeout OR "connection reset"',
            lambda r: word(r, "timeout") or phrase(r, "connection reset"),
        ),
        c("timeout AND NOT service=auth", lambda r: word(r, "timeout") and r.service != "auth"),
        c(
            '-timeout -"connection reset" level>=ERROR',
            lambda r: not word(r, "timeout") and not phrase(r, "connection reset") and r.level >= 5,
        ),
        c(
            "(service=auth OR service=billing) AND (level=ERROR OR attr.http.status_code>=500)",
            lambda r: (
                r.service in ("auth", "billing")
                and (r.level == 5 or value_cmp(attr(r, "http.status_code"), ">=", 500))
            ),
        ),
        c("NOT (service=auth OR level<=INFO)", lambda r: not (r.service == "auth" or r.level <= 3)),
        c("NOT NOT host=h2", lambda r: r.host == "h2"),
        c(
            "(timeout OR declined) AND -(host=h1 OR host=h3)",
            lambda r: (word(r, "timeout") or word(r, "declined")) and r.host not in ("h1", "h3"),
        ),
        c("u-1234 AND host=h1", lambda r: word(r, "u-1234") and r.host == "h1"),
        c("500 OR level=FATAL", lambda r: word(r, "500") or r.level == 6),
        c(
            "NOT (attributes.user.id=42 OR attributes.delta<0) AND service=search",
            lambda r: (
                not (value_eq(attr(r, "user.id"), 42) or value_cmp(attr(r, "delta"), "<", 0))
                and r.service == "search"
            ),
        ),
        # time, in the query
        cl("timestamp>=<t_a>", f"timestamp>={rfc3339(t_a)}", lambda r: r.ts >= t_a),
        cl("timestamp><tie>", f"timestamp>{rfc3339(tie_ts)}", lambda r: r.ts > tie_ts),
        cl("timestamp=<tie ns>", f"timestamp={tie_ts}", lambda r: r.ts == tie_ts),
        cl(
            "timestamp>=<t_a> AND timestamp<<t_b>",
            f"timestamp>={rfc3339(t_a)} AND timestamp<{rfc3339(t_b)}",
            lambda r: t_a <= r.ts < t_b,
        ),
        cl("timestamp<=<t_b at +02:00>", f"timestamp<={rfc3339(t_b, 120)}", lambda r: r.ts <= t_b),
        cl(
            "timestamp>=<t_a at -05:30> AND level>=WARN",
            f"timestamp>={rfc3339(t_a, -330)} AND level>=WARN",
            lambda r: r.ts >= t_a and r.level >= 4,
        ),
        c("timestamp>2h ago", lambda r: r.ts > cut_2h),
        c(
            "service=auth AND level=ERROR AND timestamp>2h ago",
            lambda r: r.service == "auth" and r.level == 5 and r.ts > cut_2h,
        ),
        c("timestamp<30m ago OR level=FATAL", lambda r: r.ts < cut_30m or r.level == 6),
        c("NOT timestamp>=1h ago AND host=h2", lambda r: r.ts < cut_1h and r.host == "h2"),
        c("timestamp>=2001-01-01", lambda r: True),
        # time, in the request
        cl(
            "level>=WARN since=1h",
            "level>=WARN",
            lambda r: r.level >= 4 and r.ts >= cut_1h,
            since="1h",
        ),
        cl(
            "<empty query> start_ns=<t_a> end_ns=<t_b>",
            "",
            lambda r: t_a <= r.ts < t_b,
            start_ns=t_a,
            end_ns=t_b,
        ),
        cl(
            "service=api start_ns=<tie>",
            "service=api",
            lambda r: r.service == "api" and r.ts >= tie_ts,
            start_ns=tie_ts,
        ),
        cl(
            "timeout end_ns=<tie>",
            "timeout",
            lambda r: word(r, "timeout") and r.ts < tie_ts,
            end_ns=tie_ts,
        ),
        cl(
            "host=h1 since=2h start_ns=<t_a> end_ns=<1h ago>",
            "host=h1",
            lambda r: r.host == "h1" and max(t_a, cut_2h) <= r.ts < cut_1h,
            since="2h",
            start_ns=t_a,
            end_ns=cut_1h,
        ),
        cl(
            "timestamp<<t_b> start_ns=<t_a>",
            f"timestamp<{rfc3339(t_b)}",
            lambda r: t_a <= r.ts < t_b,
            start_ns=t_a,
        ),
        # empty results
        c("service=nope", lambda r: False, expect_empty=True),
        c("level=FATAL AND level=DEBUG", lambda r: False, expect_empty=True),
        c('"no such phrase anywhere"', lambda r: False, expect_empty=True),
        c("attributes.request_id=req-99999-deadbeef", lambda r: False, expect_empty=True),
        c("timestamp<2001-01-01T00:00:00Z", lambda r: False, expect_empty=True),
        cl("since=1m", "", lambda r: False, since="1m", expect_empty=True),
        cl(
            "timestamp>=<t_b> AND timestamp<<t_a>",
            f"timestamp>={rfc3339(t_b)} AND timestamp<{rfc3339(t_a)}",
            lambda r: False,
            expect_empty=True,
        ),
    ]


def in_window(case: Case, r: Rec, now_ns: int) -> bool:
    if case.since is not None:
        units = {"m": MIN, "h": H}
        if r.ts < now_ns - int(case.since[:-1]) * units[case.since[-1]]:
            return False
    if case.start_ns is not None and r.ts < case.start_ns:
        return False
    return case.end_ns is None or r.ts < case.end_ns


def reference(case: Case, data: list[Rec], now_ns: int) -> list[Rec]:
    """Matching records, newest first by (ts, log_id)."""
    out = [r for r in data if case.pred(r) and in_window(case, r, now_ns)]
    out.sort(key=lambda r: r.key, reverse=True)
    return out


# The main data set: 3 segments (the first over 1000 rows, so unique attributes get no
# postings there, and two record blocks) plus the fresh part. Its timestamps hang off the
# time the store is built (relative queries such as `2h ago` need records near now), so
# cases are parametrized by label; the labels do not depend on the time.
MAIN_SEED = 20240611
MAIN_SIZES = (1050, 350, 250, 250)


def _case_ids() -> list[str]:
    now = time.time_ns()
    return [c.id for c in build_cases(make_dataset(MAIN_SEED, MAIN_SIZES, now), now)]


CASE_IDS = _case_ids()

# A smaller data set for the tests that change or reopen their store.
SMALL_SEED = 7
SMALL_SIZES = (110, 80, 60, 90)


# ---------------------------------------------------------------------------------------
# Running queries
# ---------------------------------------------------------------------------------------


@dataclass
class Walk:
    rows: list[LogRow] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    page_sizes: list[int] = field(default_factory=list)

    @property
    def bodies(self) -> list[str]:
        return [r.body for r in self.rows]

    @property
    def keys(self) -> list[tuple[int, int]]:
        return [(r.ts, r.log_id) for r in self.rows]


def walk(qs: QueryService, case: Case, limit: int, max_pages: int = 10_000) -> Walk:
    w = Walk()
    token: str | None = None
    for _ in range(max_pages):
        res = qs.logs(case.request(limit, token))
        w.rows += res.rows
        w.totals.append(res.total)
        w.page_sizes.append(len(res.rows))
        if res.next_token is None:
            return w
        token = res.next_token
    raise AssertionError(f"{case.query!r}: more than {max_pages} pages")


def describe(expected: list[str], got: list[str], limit: int = 5) -> str:
    exp, have = set(expected), set(got)
    missing = [b for b in expected if b not in have]
    extra = [b for b in got if b not in exp]
    dups = len(got) - len(have)
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
        min(len(expected), len(got)),
    )
    return (
        f"expected {len(expected)} rows, got {len(got)}; missing {len(missing)} "
        f"{missing[:limit]}; unexpected {len(extra)} {extra[:limit]}; duplicates {dups}; "
        f"first difference at position {first_diff}"
    )


def assert_strictly_newest_first(keys: list[tuple[int, int]], what: str) -> None:
    bad = [i for i in range(1, len(keys)) if not keys[i] < keys[i - 1]]
    assert not bad, f"{what}: rows out of (ts, log_id) order at positions {bad[:5]}"


# ---------------------------------------------------------------------------------------
# Stores
# ---------------------------------------------------------------------------------------


@dataclass
class Env:
    path: str
    store: Store
    writer: Writer
    qs: QueryService
    data: list[Rec]
    now: int
    span_trace: bytes = b""
    cases: dict[str, Case] = field(default_factory=dict)
    span_names: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.writer.stop()
        self.store.close()


def open_env(
    path: Path, seed: int, sizes: tuple[int, ...], now_ns: int, with_spans: bool = False
) -> Env:
    data = make_dataset(seed, sizes, now_ns)
    store = Store(str(path))
    writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    env = Env(str(path), store, writer, QueryService(store), data, now_ns)
    try:
        ingest(writer, store, data, len(sizes), seed)
        if with_spans:
            env.span_trace = top_trace_of(data)
            env.span_names = submit_spans(writer, env.span_trace, now_ns - 90 * MIN)
    except BaseException:
        env.close()
        raise
    assert all(r.log_id >= 0 for r in data)
    env.cases = {c.id: c for c in build_cases(data, now_ns)}
    return env


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = open_env(
        tmp_path_factory.mktemp("qe") / "db", MAIN_SEED, MAIN_SIZES, time.time_ns(), with_spans=True
    )
    yield env
    env.close()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Env]:
    env = open_env(tmp_path / "db", SMALL_SEED, SMALL_SIZES, time.time_ns())
    yield env
    env.close()


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_data_set_layout(main: Env) -> None:
    """The premise: 3 sealed segments overlapping in time, a fresh part, tied timestamps."""
    snap = main.store.snapshot(TENANT)
    segs = sorted(snap.segments, key=lambda s: s.meta.id)
    assert [s.meta.rows for s in segs] == list(MAIN_SIZES[:3])
    assert sum(len(b) for b in snap.fresh) == MAIN_SIZES[3]
    for a, b in zip(segs, segs[1:], strict=False):
        assert a.meta.min_ts < b.meta.max_ts and b.meta.min_ts < a.meta.max_ts
    # unique attributes have no postings in the big segment, but do in the small ones
    assert "a:request_id" in segs[0].meta.unindexed
    assert "a:request_id" not in segs[1].meta.unindexed
    tss = [r.ts for r in main.data]
    assert len(set(tss)) < len(tss)
    assert len({r.body for r in main.data}) == len(main.data)


def test_table_is_meaningful() -> None:
    """Every case that should find something does, and the table covers enough."""
    now = time.time_ns()
    data = make_dataset(MAIN_SEED, MAIN_SIZES, now)
    cases = build_cases(data, now)
    assert [c.id for c in cases] == CASE_IDS
    assert len(cases) >= 30
    assert len(set(CASE_IDS)) == len(CASE_IDS)
    for case in cases:
        n = len(reference(case, data, now))
        if case.expect_empty:
            assert n == 0, case.id
        else:
            assert n > 0, case.id


@pytest.mark.parametrize("case_id", CASE_IDS, ids=CASE_IDS)
def test_query_matches_reference(main: Env, case_id: str) -> None:
    case = main.cases[case_id]
    ref = reference(case, main.data, main.now)
    ref_bodies = [r.body for r in ref]

    first = main.qs.logs(case.request(50))
    got = [r.body for r in first.rows]
    assert got == ref_bodies[:50], "first page: " + describe(ref_bodies[:50], got)
    assert [(r.ts, r.log_id) for r in first.rows] == [r.key for r in ref[:50]]
    assert first.total == len(ref), f"total {first.total}, reference {len(ref)}"
    assert (first.next_token is None) == (len(ref) <= 50)

    w = walk(main.qs, case, 37)
    assert len(set(w.bodies)) == len(w.bodies), "walk returned a row twice"
    assert w.bodies == ref_bodies, "walk: " + describe(ref_bodies, w.bodies)
    assert_strictly_newest_first(w.keys, "walk")
    assert set(w.totals) == {len(ref)}, f"totals per page {w.totals}, reference {len(ref)}"
    sizes = [37] * (len(ref) // 37) + ([len(ref) % 37] if len(ref) % 37 else [])
    assert w.page_sizes == (sizes or [0]), f"page sizes {w.page_sizes}"


def test_rows_carry_the_record(main: Env) -> None:
    """Every field of every row, from segments and from the fresh part."""
    rows = walk(main.qs, Case("all", "", lambda r: True), 500).rows
    by_body = {r.body: r for r in main.data}
    assert len(rows) == len(main.data)
    for row in rows:
        r = by_body[row.body]
        assert (row.ts, row.log_id, row.level) == (r.ts, r.log_id, r.level), r.body
        assert (row.service, row.host) == (r.service, r.host), r.body
        assert (row.trace_id, row.span_id) == (r.trace_id.hex(), r.span_id.hex()), r.body
        assert row.flat_attrs == {k: text_of(v) for k, v in r.flat.items()}, r.body
        assert row.attributes() == r.attrs, r.body
        assert row.resource() == r.resource.attrs(), r.body


def test_trace_returns_its_logs_and_spans(main: Env) -> None:
    trace_hex = main.span_trace.hex()
    res = main.qs.trace(trace_hex.upper())
    assert res is not None
    expected = sorted((r for r in main.data if r.trace_id == main.span_trace), key=lambda r: r.key)
    assert len({r.chunk for r in expected}) == len(MAIN_SIZES)  # every segment and fresh
    assert [row.body for row in res.logs] == [r.body for r in expected]
    assert sorted(s.name for s in res.spans) == sorted(main.span_names)
    assert {s.trace_id for s in res.spans} == {trace_hex}
    assert {s.service for s in res.spans} == {"auth"}
    assert main.qs.trace("0" * 31 + "1") is None


def _results(qs: QueryService, cases: list[Case]) -> dict[str, Any]:
    """Per case: total and the full walk as (ts, log_id, body), JSON-shaped."""
    out: dict[str, Any] = {}
    for case in cases:
        w = walk(qs, case, 50)
        out[case.id] = [w.totals[0], [[r.ts, r.log_id, r.body] for r in w.rows]]
    return json.loads(json.dumps(out))


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    diffs = []
    for cid, (total, rows) in before.items():
        total2, rows2 = after[cid]
        if total != total2 or rows != rows2:
            diffs.append(f"{cid}: total {total} -> {total2}, rows {len(rows)} -> {len(rows2)}")
    return diffs


def test_same_results_after_seal_and_after_reopen(tmp_path: Path) -> None:
    env = open_env(tmp_path / "db", SMALL_SEED, SMALL_SIZES, time.time_ns())
    try:
        cases = build_cases(env.data, env.now)
        before = _results(env.qs, cases)
        assert env.store.seal() == SMALL_SIZES[-1]
        assert env.store.fresh_stats()[0] == 0
        diffs = _differences(before, _results(env.qs, cases))
        assert not diffs, "after seal: " + "; ".join(diffs)
    finally:
        env.close()
    store = Store(env.path)
    try:
        assert store.fresh_stats()[0] == 0
        diffs = _differences(before, _results(QueryService(store), cases))
        assert not diffs, "after close and reopen: " + "; ".join(diffs)
    finally:
        store.close()


def test_same_results_after_merging_segments(tmp_path: Path) -> None:
    """Merged segments (remapped postings) answer every query as their inputs did."""
    env = open_env(tmp_path / "db", SMALL_SEED, SMALL_SIZES, time.time_ns())
    try:
        env.store.seal()
        cases = list(env.cases.values())
        before = _results(env.qs, cases)
        merged = 0
        while n := env.store.merge_once(small_rows=10**6, fanin=2, grace_s=0):
            merged += n
        assert merged >= sum(SMALL_SIZES)
        assert len(env.store.snapshot(TENANT).segments) == 1
        diffs = _differences(before, _results(env.qs, cases))
        assert not diffs, "after merge: " + "; ".join(diffs)
        env.store.collect_garbage(force=True)
        diffs = _differences(before, _results(env.qs, cases))
        assert not diffs, "after merge and garbage collection: " + "; ".join(diffs)
    finally:
        env.close()


def test_pagination_is_gap_free_while_records_arrive(small: Env) -> None:
    """New records between pages: no row twice, every record that existed is seen, a
    record newer than the cursor never shows, and one sealed mid-walk changes nothing."""
    rng = random.Random(99)
    late_no = 0
    cases = {c.query: c for c in build_cases(small.data, small.now)}
    for query in ("", "level>=WARN", 'timeout OR "connection reset"'):
        case = cases[query]
        existing = reference(case, small.data, small.now)
        inserted: list[tuple[Rec, tuple[int, int]]] = []  # record, cursor when it came
        rows: list[LogRow] = []
        token: str | None = None
        page = 0
        while True:
            res = small.qs.logs(case.request(37, token))
            rows += res.rows
            if res.next_token is None:
                break
            token = res.next_token
            page += 1
            cursor = (rows[-1].ts, rows[-1].log_id)
            batch = []
            # newer than everything; exactly at the cursor's time (a newer log id); older
            for ts in (
                small.now - 2 * MIN - rng.randrange(MIN),
                cursor[0],
                cursor[0] - rng.randrange(1, H),
            ):
                for _ in range(2):
                    late_no += 1
                    batch.append(
                        Rec(
                            idx=100_000 + late_no,
                            chunk=-1,
                            ts=ts,
                            use_observed=False,
                            sev_number=17,
                            sev_text="ERROR",
                            level=5,
                            res=0,
                            scope="app",
                            body=f"late #{late_no} timeout while paging",
                            trace_id=b"",
                            span_id=b"",
                            attrs={"request_id": f"late-{late_no}"},
                        )
                    )
            submit(small.writer, batch)
            inserted += [(r, cursor) for r in batch]
            if page == 3:
                small.store.seal()
        bodies = [r.body for r in rows]
        assert len(set(bodies)) == len(bodies), f"{query!r}: a row came twice"
        assert_strictly_newest_first([(r.ts, r.log_id) for r in rows], repr(query))
        seen = set(bodies)
        missing = [r.body for r in existing if r.body not in seen]
        assert not missing, f"{query!r}: {len(missing)} existing records never seen: {missing[:5]}"
        too_new = [r.body for r, cur in inserted if r.key > cur and r.body in seen]
        assert not too_new, f"{query!r}: records newer than the cursor appeared: {too_new[:5]}"
        known = {r.body for r in existing} | {r.body for r, _ in inserted}
        assert seen <= known, f"{query!r}: rows from nowhere: {sorted(seen - known)[:5]}"
        small.data += [r for r, _ in inserted]


# ---- crash and WAL replay: a child process ingests and dies without closing anything

_CHILD = """
import importlib.util, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # the tests' helper modules
spec = importlib.util.spec_from_file_location("otelog_qe_child", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
mod.crash_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
"""


def crash_child(db_path: str, now_ns: int, out_path: str) -> None:
    """Ingest the small data set (3 segments + fresh), save query results, die at once."""
    env = open_env(Path(db_path), SMALL_SEED, SMALL_SIZES, now_ns)
    fresh = env.store.fresh_stats()[0]
    results = _results(env.qs, build_cases(env.data, now_ns))
    Path(out_path).write_text(json.dumps({"fresh": fresh, "results": results}))
    sys.stdout.flush()
    os._exit(0)  # no writer.stop(), no seal, no close: the fresh part lives in the WAL only


def test_unsealed_records_survive_a_crash(tmp_path: Path) -> None:
    db, out = tmp_path / "db", tmp_path / "results.json"
    now = time.time_ns()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, __file__, str(db), str(now), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    saved = json.loads(out.read_text())
    assert saved["fresh"] == SMALL_SIZES[-1]
    cases = build_cases(make_dataset(SMALL_SEED, SMALL_SIZES, now), now)

    server = Server(Config(data_dir=str(db)))
    server.open_store()
    assert server.store is not None and server.writer is not None
    try:
        assert server.store.fresh_stats()[0] == SMALL_SIZES[-1]  # replayed, not yet sealed
        replayed = _results(QueryService(server.store), cases)
        diffs = _differences(saved["results"], replayed)
        assert not diffs, "after WAL replay: " + "; ".join(diffs)
    finally:
        server.writer.stop()  # seals what was replayed
        server.store.close()
    store = Store(str(db))
    try:
        assert store.fresh_stats()[0] == 0 and not list(store.wal_entries())
        diffs = _differences(saved["results"], _results(QueryService(store), cases))
        assert not diffs, "after replay, seal and reopen: " + "; ".join(diffs)
    finally:
        store.close()


def test_rfc3339_helper() -> None:
    ns = 1_700_000_000_123_456_789
    assert rfc3339(ns) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(ns, 120) == "2023-11-15T00:13:20.123456789+02:00"
    assert rfc3339(ns, -330) == "2023-11-14T16:43:20.123456789-05:30"
