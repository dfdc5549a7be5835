"""OTLP protobuf requests -> columnar batches, in one pass, decoding each record once.

Attributes are the costly part of decoding (see DEPENDENCY-NOTES), so only scalar
attributes are stringified for indexing; the record itself is kept as its serialized
LogRecord, so nothing the client sent is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb

from otelog.anyvalue import body_text, flatten_attributes
from otelog.errors import InvalidArgument
from otelog.model import SEVERITY_LEVELS, LogBatch, Resource, SpanBatch, level_of
from otelog.receiver.lite import LiteLogsRequest

_NS_2000 = 946_684_800 * 10**9
MAX_RECORDS_PER_REQUEST = (1 << 24) - 1


@dataclass(frozen=True)
class DecodeLimits:
    max_future_ns: int = 24 * 3600 * 10**9
    min_ts_ns: int = _NS_2000


@dataclass
class Decoded:
    rejected: int
    message: str


_RESOURCE_CACHE: dict[tuple[bytes, bytes], Resource] = {}
_RESOURCE_CACHE_MAX = 4096


def _resource(resource_pb: bytes, scope_pb: bytes) -> Resource:
    """Decoded once per distinct (resource, scope): SDKs resend the same ones every request."""
    key = (resource_pb, scope_pb)
    r = _RESOURCE_CACHE.get(key)
    if r is not None:
        return r
    d = dict(flatten_attributes(ResourcePb.FromString(resource_pb).attributes))
    r = Resource(
        service=d.get("service.name") or "unknown_service",
        host=d.get("host.name", ""),
        resource_pb=resource_pb,
        scope_pb=scope_pb,
    )
    if len(_RESOURCE_CACHE) >= _RESOURCE_CACHE_MAX:
        _RESOURCE_CACHE.clear()
    _RESOURCE_CACHE[key] = r
    return r


def parse_logs_request(raw: bytes) -> ExportLogsServiceRequest:
    try:
        return ExportLogsServiceRequest.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InvalidArgument(f"malformed ExportLogsServiceRequest: {e}") from None


def parse_traces_request(raw: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InvalidArgument(f"malformed ExportTraceServiceRequest: {e}") from None


def count_services(raw: bytes) -> tuple[Any, dict[str, int]]:
    """The lite parse of a logs request and its records per service, without decoding a
    record: what per-service rate limits need to refuse a request cheaply. Pass the parse
    on to `decode_logs` when the request goes ahead."""
    try:
        req = LiteLogsRequest.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InvalidArgument(f"malformed ExportLogsServiceRequest: {e}") from None
    counts: dict[str, int] = {}
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            if sl.log_records:
                # the key decode_logs looks up too: the cache holds nothing extra
                svc = _resource(rl.resource, sl.scope).service
                counts[svc] = counts.get(svc, 0) + len(sl.log_records)
    return req, counts


def decode_logs(
    raw: bytes, receipt_ns: int, limits: DecodeLimits = DecodeLimits(), lite: Any = None
) -> tuple[LogBatch, Decoded]:
    """Columns of every acceptable record of a serialized request; the rest are counted as
    rejected (partial success).

    `receipt_ns` stands for "now" so that replaying a WAL entry yields the same batch.
    """
    # The full parse validates the request (UTF-8 of every string included); the lite parse
    # then gives each attribute as bytes without a wrapper object per attribute.
    parse_logs_request(raw)
    req = lite if lite is not None else LiteLogsRequest.FromString(raw)
    b = LogBatch()
    ts_col, lv_col, res_col = b.ts, b.level, b.res
    tid_col, sid_col, body_col, attr_col, rec_col = b.trace_id, b.span_id, b.body, b.attrs, b.rec
    max_ts = receipt_ns + limits.max_future_ns
    min_ts = limits.min_ts_ns
    levels = SEVERITY_LEVELS
    rejected = 0
    reasons: list[str] = []
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            if not sl.log_records:
                continue
            res_idx = len(b.resources)
            b.resources.append(_resource(rl.resource, sl.scope))
            for lr in sl.log_records:
                ts = lr.time_unix_nano or lr.observed_time_unix_nano or receipt_ns
                tid = lr.trace_id
                sid = lr.span_id
                if ts > max_ts or ts < min_ts:
                    rejected += 1
                    if len(reasons) < 3:
                        reasons.append(f"timestamp {ts} out of range [{min_ts}, {max_ts}]")
                    continue
                if (tid and len(tid) != 16) or (sid and len(sid) != 8):
                    rejected += 1
                    if len(reasons) < 3:
                        reasons.append("trace_id must be 16 bytes and span_id 8 bytes")
                    continue
                sev = lr.severity_number
                ts_col.append(ts)
                lv_col.append(levels[sev] if 0 < sev <= 24 else level_of(sev, lr.severity_text))
                res_col.append(res_idx)
                tid_col.append(tid)
                sid_col.append(sid)
                body = lr.body
                text = body.string_value
                if not text and body.WhichOneof("value") != "string_value":
                    text = body_text(body)
                    if body.WhichOneof("value") is not None:
                        b.structured.append(len(body_col))
                body_col.append(text)
                attr_col.append(list(lr.attributes))
                rec_col.append(lr.SerializeToString())
    if len(b) > MAX_RECORDS_PER_REQUEST:
        raise InvalidArgument(f"too many records in one request (max {MAX_RECORDS_PER_REQUEST})")
    msg = ""
    if rejected:
        msg = f"{rejected} log records rejected: " + "; ".join(reasons)
    return b, Decoded(rejected, msg)


def decode_spans(
    req: ExportTraceServiceRequest, receipt_ns: int, limits: DecodeLimits = DecodeLimits()
) -> tuple[SpanBatch, Decoded]:
    b = SpanBatch()
    resources = b.resources
    max_ts = receipt_ns + limits.max_future_ns
    rejected = 0
    reasons: list[str] = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            if not ss.spans:
                continue
            res = _resource(rs.resource.SerializeToString(), ss.scope.SerializeToString())
            resources.append(res)
            for sp in ss.spans:
                if len(sp.trace_id) != 16 or len(sp.span_id) != 8:
                    rejected += 1
                    if len(reasons) < 3:
                        reasons.append("span needs a 16-byte trace_id and an 8-byte span_id")
                    continue
                start = sp.start_time_unix_nano
                if start > max_ts or start < limits.min_ts_ns or sp.end_time_unix_nano < start:
                    rejected += 1
                    if len(reasons) < 3:
                        reasons.append(f"span times out of range (start {start})")
                    continue
                b.trace_id.append(sp.trace_id)
                b.start_ns.append(start)
                b.span_id.append(sp.span_id)
                b.service.append(res.service)
                b.span_pb.append(sp.SerializeToString())
                b.res.append(len(resources) - 1)
    msg = f"{rejected} spans rejected: " + "; ".join(reasons) if rejected else ""
    return b, Decoded(rejected, msg)
