"""Load shedding by severity, then refusal: what the ingest path lets through under load.

Pressure is how full the byte budget is (queued + in-flight bytes / max_pending_bytes),
and, for one service, how far it has drawn down its token bucket; a service's records
see the larger of the two. As it rises (DESIGN.md, "Ingest queue and backpressure"):

  pressure >= shed_debug_at   TRACE and DEBUG records are sampled, shed_debug_keep kept
  pressure >= shed_info_at    INFO (and records without a severity) too, shed_info_keep kept
  always                      WARN, ERROR and FATAL are never sampled away

Sampling is deterministic: a record with a trace id is kept when a hash of the trace id
falls under the keep fraction, so a trace keeps or loses its low-severity records
together (and, with the same hash for every level, a trace whose DEBUG records are kept
keeps its INFO records too); a record without one hashes its own serialized bytes, so a
retried request gets the same answer. Sampled records are removed before the request is
written, and the request is re-encoded without them, so the WAL, its replay and the
segment worker (which all re-decode the stored bytes) see exactly the kept records.
The client is told: OTLP "Partial Success" (opentelemetry-proto, otlp.md) counts them in
`rejected_log_records` with a message, and such records must not be retried.

After shedding, a request that still does not fit is refused with `Overloaded`
(RESOURCE_EXHAUSTED + RetryInfo / 429 + Retry-After, OTLP "Failures"):
- the byte budget: an ordinary request is refused above shed_refuse_at; the rest of the
  budget (shed_refuse_at..1) is kept for requests carrying ERROR/FATAL records;
- a service's token bucket: an ordinary request needs the tokens for its kept records;
  one carrying ERROR/FATAL records may overdraw the bucket by up to one burst, which the
  service then pays back before its next ordinary request.

Why admit ERROR/FATAL rather than refuse: a refused request is retried by well-behaved
clients, but not by all (and the OTel SDKs give up after six attempts or their timeout),
so refusing puts exactly the records an operator needs during an incident at the mercy
of the client. Admitting them is bounded (the budget's headroom, one burst of credit), so
neither memory nor fairness between services depends on it. Past those bounds such
requests are refused too: it can no longer be helped.
"""

from __future__ import annotations

import bisect
import zlib
from collections import Counter
from dataclasses import dataclass, field

from otelog import metrics
from otelog.errors import InvalidArgument, Overloaded, PayloadTooLarge
from otelog.ingest.limits import MAX_RETRY_AFTER_S, ByteBudget, Hold, ServiceRateLimits
from otelog.model import Level, LogBatch, SpanBatch


class RateLimited(Overloaded):
    """Overloaded because of one service's token bucket (its own reason in /metrics)."""


FULL = 1 << 32  # a keep threshold on a 32-bit hash that keeps everything
ERROR_LEVEL = int(Level.ERROR)
_SHED_LEVELS = (Level.UNSPECIFIED, Level.TRACE, Level.DEBUG, Level.INFO)


@dataclass(frozen=True)
class ShedPolicy:
    debug_at: float = 0.5
    info_at: float = 0.75
    refuse_at: float = 0.9
    debug_keep: float = 0.1
    info_keep: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.debug_at <= self.info_at <= self.refuse_at <= 1:
            raise ValueError(
                "expected 0 <= shed_debug_at <= shed_info_at <= shed_refuse_at <= 1, got "
                f"{self.debug_at}, {self.info_at}, {self.refuse_at}"
            )
        if not (0 <= self.debug_keep <= 1 and 0 <= self.info_keep <= 1):
            raise ValueError("keep fractions must be between 0 and 1")

    def thresholds(self, pressure: float) -> tuple[int, ...]:
        """Keep threshold per level (index = Level) on a 32-bit hash; FULL keeps all."""
        debug = _threshold(self.debug_keep) if pressure >= self.debug_at else FULL
        info = _threshold(self.info_keep) if pressure >= self.info_at else FULL
        # a record without a severity is not known to matter: it goes with INFO
        return (info, debug, debug, info, FULL, FULL, FULL)


def _threshold(keep: float) -> int:
    return min(FULL, int(keep * FULL))


NO_SHEDDING = ShedPolicy().thresholds(0.0)


def record_hash(trace_id: bytes, rec: bytes) -> int:
    """The 32-bit value compared with a keep threshold: per trace when there is one.

    CRC-32 is no cryptographic hash, but trace ids are random (W3C Trace Context) and it
    spreads sequential ids evenly too (tests/test_shedding.py); it costs ~0.1 us.
    """
    return zlib.crc32(trace_id or rec)


def sample(
    batch: LogBatch, thresholds: list[tuple[int, ...]]
) -> tuple[list[int] | None, Counter[tuple[int, int]]]:
    """Rows to keep (None: all of them) and the sampled count per (resource index, level).

    `thresholds[r]` holds the per-level thresholds of the records of resource `r`.
    """
    dropped: Counter[tuple[int, int]] = Counter()
    if all(t == NO_SHEDDING for t in thresholds):
        return None, dropped
    kept: list[int] = []
    keep = kept.append
    res, lv, tids, recs = batch.res, batch.level, batch.trace_id, batch.rec
    crc = zlib.crc32
    for i in range(len(batch)):
        level = lv[i]
        th = thresholds[res[i]][level]
        if th >= FULL or crc(tids[i] or recs[i]) < th:
            keep(i)
        else:
            dropped[res[i], level] += 1
    if not dropped:
        return None, dropped
    return kept, dropped


def take_rows(b: LogBatch, rows: list[int]) -> LogBatch:
    """A batch of the given rows (in order), sharing the resources of `b`."""
    out = LogBatch(
        ts=[b.ts[i] for i in rows],
        level=bytearray(b.level[i] for i in rows),
        res=[b.res[i] for i in rows],
        trace_id=[b.trace_id[i] for i in rows],
        span_id=[b.span_id[i] for i in rows],
        body=[b.body[i] for i in rows],
        attrs=[b.attrs[i] for i in rows],
        rec=[b.rec[i] for i in rows],
        resources=b.resources,
    )
    if b.structured:
        structured = set(b.structured)
        out.structured = [new for new, old in enumerate(rows) if old in structured]
    return out


# ---- re-encoding: ExportLogsServiceRequest from a batch (protobuf wire format by hand)


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# lengths below 16 KiB (every usual record) take a lookup, not a loop: it was 80% of
# the re-encoding time
_SHORT = tuple(_encode_varint(n) for n in range(1 << 14))


def _varint(n: int) -> bytes:
    return _SHORT[n] if n < 16384 else _encode_varint(n)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number << 3 | 2), length, payload."""
    return _TAGS[tag] + _varint(len(payload)) + payload


_TAGS = {0x0A: b"\x0a", 0x12: b"\x12"}


def groups(b: LogBatch) -> list[tuple[int, int, int]]:
    """(resource index, first row, end row) of each run of rows: decode_logs appends the
    rows of one (resource, scope) pair together, in increasing resource order."""
    out = []
    res = b.res
    i, n = 0, len(res)
    while i < n:
        r = res[i]
        j = bisect.bisect_right(res, r, i)
        out.append((r, i, j))
        i = j
    return out


def encode_logs_request(b: LogBatch) -> bytes:
    """The serialized ExportLogsServiceRequest holding exactly the records of `b`.

    One ResourceLogs (field 1) per (resource, scope) run, holding one ScopeLogs (field 2)
    with the records (field 2) as the client sent them. `decode_logs` of the result, with
    the same receipt time, gives the rows of `b` in the same order. Not carried over:
    the `schema_url` fields, which decode_logs does not read either.
    """
    out = []
    for r, i, j in groups(b):
        res = b.resources[r]
        scope_logs = (_field(0x0A, res.scope_pb) if res.scope_pb else b"") + b"".join(
            [b"\x12" + _varint(len(rec)) + rec for rec in b.rec[i:j]]
        )
        resource_logs = (_field(0x0A, res.resource_pb) if res.resource_pb else b"") + _field(
            0x12, scope_logs
        )
        out.append(_field(0x0A, resource_logs))
    return b"".join(out)


# ---- admission: shed, then refuse or admit


@dataclass
class Admission:
    """What to write for one log request, and what was shed from it."""

    batch: LogBatch
    raw: bytes
    sampled: Counter[tuple[str, int]] = field(default_factory=Counter)  # (service, level)
    # (service, records) taken from token buckets, to give back if the write fails
    charged: list[tuple[str, int]] = field(default_factory=list)

    @property
    def sampled_total(self) -> int:
        return sum(self.sampled.values())

    def message(self) -> str:
        if not self.sampled:
            return ""
        by_level: Counter[int] = Counter()
        for (_, level), n in self.sampled.items():
            by_level[level] += n
        levels = ", ".join(f"{Level(lv).name} {n}" for lv, n in sorted(by_level.items()))
        return (
            f"{self.sampled_total} log records shed under load ({levels}); "
            "WARN, ERROR and FATAL records are never shed"
        )


def services_of(b: LogBatch) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r, i, j in groups(b):
        counts[b.resources[r].service] += j - i
    return counts


class IngestControl:
    """The byte budget, the per-service rate limits and the shedding policy, together."""

    def __init__(
        self,
        budget: ByteBudget,
        rates: ServiceRateLimits | None = None,
        policy: ShedPolicy | None = None,
    ) -> None:
        self.budget = budget
        self.rates = rates or ServiceRateLimits()
        self.policy = policy or ShedPolicy()

    def hold(self, n: int) -> Hold:
        """Reserve a request's bytes before reading or decoding it (refuses when full)."""
        return self.budget.hold(n)

    def precheck(self, counts: dict[str, int]) -> None:
        """Refuse, before decoding, a request no severity could get admitted: a service in
        it could not take its records even on credit."""
        if not self.rates.enabled:
            return
        waits = []
        for service, n in counts.items():
            b = self.rates.bucket(service)
            if b is not None:
                wait = min(b.wait_for(min(n, b.burst)), b.wait_for(n, -b.burst))
                if wait > 0:
                    waits.append((wait, service))
        if waits:
            raise _rate_limited(max(waits))

    def admit_logs(self, batch: LogBatch, raw: bytes, hold: Hold) -> Admission:
        """Shed low-severity records by pressure, then admit the rest or raise Overloaded.

        On admission the service buckets are charged; the caller then moves the request
        from `hold` to the writer's queue.
        """
        budget = self.budget
        queue_pressure = budget.pressure()
        runs = groups(batch)
        by_res: dict[int, tuple[int, ...]] = {}
        rates = self.rates if self.rates.enabled else None
        by_service: dict[str, tuple[int, ...]] = {}  # a request repeats its services
        for r, _, _ in runs:
            service = batch.resources[r].service
            t = by_service.get(service)
            if t is None:
                p = queue_pressure
                if rates is not None:
                    p = max(p, rates.pressure(service))
                t = by_service[service] = self.policy.thresholds(p)
            by_res[r] = t
        thresholds = [by_res.get(r, NO_SHEDDING) for r in range(len(batch.resources))]
        rows, dropped = sample(batch, thresholds)
        adm = Admission(batch, raw)
        if rows is not None:
            adm.batch = take_rows(batch, rows)
            adm.raw = encode_logs_request(adm.batch)
            for (r, level), n in dropped.items():
                adm.sampled[batch.resources[r].service, level] += n
        kept = adm.batch
        if not len(kept):
            return adm
        urgent = max(kept.level) >= ERROR_LEVEL
        # the queue after admission: everyone else's bytes plus this request's
        if not urgent and budget.pressure(len(adm.raw) - hold.n) > self.policy.refuse_at:
            raise Overloaded(1.0, "ingest queue full, retry later")
        if rates is not None:
            self._charge(services_of(kept), urgent, adm)
        return adm

    def _charge(self, counts: Counter[str], urgent: bool, adm: Admission) -> None:
        buckets = []
        waits = []
        for service, n in counts.items():
            b = self.rates.bucket(service)
            if b is None:
                continue
            wait = b.wait_for(min(n, b.burst))  # a request larger than the burst: full bucket
            if urgent:
                wait = min(wait, b.wait_for(n, -b.burst))
            if wait > 0:
                waits.append((wait, service))
            buckets.append((b, service, n))
        if waits:
            raise _rate_limited(max(waits))
        for b, service, n in buckets:
            b.take(n)
            adm.charged.append((service, n))

    def refund(self, adm: Admission) -> None:
        """Give back the tokens of a request that was admitted but not written."""
        for service, n in adm.charged:
            b = self.rates.bucket(service)
            if b is not None:
                b.give(n)
        adm.charged.clear()

    def admit_spans(self, size: int, hold: Hold) -> None:
        """Spans have no severity to shed by: only the byte budget applies."""
        if self.budget.pressure(size - hold.n) > self.policy.refuse_at:
            raise Overloaded(1.0, "ingest queue full, retry later")


def _rate_limited(wait_service: tuple[float, str]) -> RateLimited:
    wait, service = wait_service
    return RateLimited(
        min(MAX_RETRY_AFTER_S, wait), f"service {service!r} is over its rate limit, retry later"
    )


# ---- bookkeeping: what came in and what became of it, in /metrics


def refusal_reason(err: Exception) -> str:
    if isinstance(err, RateLimited):
        return "rate_limited"
    if isinstance(err, Overloaded):
        return "shutting_down" if "shutting down" in str(err) else "queue_full"
    if isinstance(err, PayloadTooLarge):
        return "too_large"
    if isinstance(err, InvalidArgument):
        return "invalid"
    return "internal"


def _level_counts(b: LogBatch) -> Counter[tuple[str, int]]:
    """(service, level) -> records, in one C-level pass over the two columns."""
    services = [r.service for r in b.resources]
    out: Counter[tuple[str, int]] = Counter()
    for (r, level), n in Counter(zip(b.res, b.level, strict=True)).items():
        out[services[r], level] += n
    return out


def count_received_logs(b: LogBatch, request_bytes: int) -> None:
    metrics.RECEIVED_REQUESTS.labels(metrics.SIGNAL_LOGS).inc()
    metrics.RECEIVED_REQUEST_BYTES.labels(metrics.SIGNAL_LOGS).inc(request_bytes)
    per_service: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for r, i, j in groups(b):
        service = b.resources[r].service
        per_service[service] += j - i
        size[service] += sum(map(len, b.rec[i:j]))
    for service, n in per_service.items():
        label = metrics.service_label(service)
        metrics.RECEIVED_RECORDS.inc((metrics.SIGNAL_LOGS, label), n)
        metrics.RECEIVED_BYTES.inc((metrics.SIGNAL_LOGS, label), size[service])


def count_accepted_logs(adm: Admission, rejected: int) -> None:
    for (service, level), n in _level_counts(adm.batch).items():
        metrics.LOG_RECORDS_ACCEPTED.inc((metrics.service_label(service), _LEVELS[level]), n)
    for (service, level), n in adm.sampled.items():
        metrics.LOG_RECORDS_SAMPLED.inc((metrics.service_label(service), _LEVELS[level]), n)
    if rejected:
        metrics.RECORDS_REJECTED.labels(metrics.SIGNAL_LOGS, "invalid").inc(rejected)


def count_refused_request(signal: str, err: Exception) -> None:
    """Counted by the transports, where every refusal becomes a status (including the
    ones before the handler: body too large, budget full before reading the body)."""
    metrics.REQUESTS_REFUSED.labels(signal, refusal_reason(err)).inc()


def count_refused_logs(err: Exception, b: LogBatch | None) -> None:
    """The records of a request refused after decoding, by level (retryable refusals
    only: the others are not to be sent again). Before decoding they are not known."""
    reason = refusal_reason(err)
    if b is not None and isinstance(err, Overloaded):
        levels: Counter[int] = Counter(b.level)
        for level, n in levels.items():
            metrics.RECORDS_REFUSED.labels(metrics.SIGNAL_LOGS, reason, _LEVELS[level]).inc(n)


def count_received_spans(b: SpanBatch, request_bytes: int) -> None:
    metrics.RECEIVED_REQUESTS.labels(metrics.SIGNAL_TRACES).inc()
    metrics.RECEIVED_REQUEST_BYTES.labels(metrics.SIGNAL_TRACES).inc(request_bytes)
    per_service: Counter[str] = Counter(b.service)
    size: Counter[str] = Counter()
    for service, pb in zip(b.service, b.span_pb, strict=True):
        size[service] += len(pb)
    for service, n in per_service.items():
        label = metrics.service_label(service)
        metrics.RECEIVED_RECORDS.inc((metrics.SIGNAL_TRACES, label), n)
        metrics.RECEIVED_BYTES.inc((metrics.SIGNAL_TRACES, label), size[service])


def count_accepted_spans(b: SpanBatch, rejected: int) -> None:
    for service, n in Counter(b.service).items():
        metrics.SPANS_ACCEPTED.inc((metrics.service_label(service),), n)
    if rejected:
        metrics.RECORDS_REJECTED.labels(metrics.SIGNAL_TRACES, "invalid").inc(rejected)


def count_refused_spans(err: Exception, b: SpanBatch | None) -> None:
    reason = refusal_reason(err)
    if b is not None and len(b) and isinstance(err, Overloaded):
        metrics.RECORDS_REFUSED.labels(metrics.SIGNAL_TRACES, reason, "").inc(len(b))


_LEVELS = [lv.name for lv in Level]
