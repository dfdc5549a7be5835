"""The REST API (`/logs/ingest`, `/logs/search`): a thin JSON layer over the same engine.

Ingest turns JSON records into ONE OTLP `ExportLogsServiceRequest` and hands its bytes to
the OTLP handler, so REST records take the durable write path of every other record (WAL,
group commit, acknowledgement after fsync). Search turns its parameters into a query of
the query language and calls `QueryService.logs`, so it pages and counts like GraphQL.

The API layer may not import the receiver (see tests/test_layout.py), so the handler is
typed here by what this module uses of it (`LogExporter`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otelog.errors import InvalidArgument, Overloaded, QuerySyntaxError
from otelog.model import Level, level_of, log_id_str
from otelog.query.ast import Text
from otelog.query.duration import parse_duration_ns
from otelog.query.service import PageRequest, QueryService
from otelog.query.shape import log_json, rfc3339
from otelog.store.cold import ColdUnavailable

__all__ = ["LogExporter", "parse_rfc3339_ns", "routes"]

_T = TypeVar("_T")

# The lowest severity_number of each level (OTLP logs data model, "Field: SeverityNumber").
SEVERITY_NUMBERS = {
    Level.TRACE: 1,
    Level.DEBUG: 5,
    Level.INFO: 9,
    Level.WARN: 13,
    Level.ERROR: 17,
    Level.FATAL: 21,
}
RECORD_FIELDS = frozenset(
    ("service", "trace_id", "span_id", "level", "message", "timestamp", "host", "attributes")
)
SEARCH_PARAMS = frozenset(
    ("service", "level", "timestamp_from", "timestamp_to", "keywords", "query", "limit")
    + ("page_token",)
)
MAX_ATTRIBUTE_DEPTH = 16
DEFAULT_LIMIT = 100
# Epoch integers below this are milliseconds (it is the year 33658 in ms, 12 days in ns).
_MS_BELOW = 10**15
_INT64 = (-(2**63), 2**63 - 1)
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_HEX = re.compile(r"[0-9a-fA-F]*")
_LEVEL_HELP = "use TRACE, DEBUG, INFO, WARN, ERROR or FATAL"


class ExportOutcome(Protocol):
    @property
    def rejected(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def log_ids(self) -> list[int]: ...


class IngestLimits(Protocol):
    @property
    def max_future_ns(self) -> int: ...
    @property
    def min_ts_ns(self) -> int: ...


class LogExporter(Protocol):
    """What ingest needs of the OTLP handler (`otelog.receiver.handler.OtlpHandler`)."""

    @property
    def limits(self) -> IngestLimits: ...

    async def export_logs(self, raw: bytes) -> ExportOutcome: ...


class BadRequest(InvalidArgument):
    """A REST input error; the message names the field."""


# ---- shared parsing


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 with up to nine fraction digits, to ns since the epoch. ValueError if not."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ValueError("not an RFC 3339 time such as 2026-11-25T10:00:00.123Z")
    base, frac, tz = m.groups()
    dt = datetime.fromisoformat(base.replace("t", "T") + ("+00:00" if tz in "Zz" else tz))
    return int(dt.timestamp()) * 10**9 + int((frac or "").ljust(9, "0"))


def _level(value: object, name: str) -> Level:
    if isinstance(value, str):
        lv = level_of(0, value)
        if lv is Level.UNSPECIFIED:
            raise BadRequest(f"{name}: unknown level {value[:40]!r}; {_LEVEL_HELP}")
        return lv
    raise BadRequest(f"{name}: expected a level name; {_LEVEL_HELP}")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status, headers=headers)


# ---- ingest: JSON records -> one OTLP request


def _any_value(v: object, name: str, depth: int = 0) -> AnyValue:
    if depth > MAX_ATTRIBUTE_DEPTH:
        raise BadRequest(f"{name}: nested deeper than {MAX_ATTRIBUTE_DEPTH} levels")
    if v is None:
        return AnyValue()  # OTLP: an empty AnyValue is null
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        if not _INT64[0] <= v <= _INT64[1]:
            raise BadRequest(f"{name}: integer out of the int64 range")
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, list):
        items = [_any_value(x, f"{name}[{i}]", depth + 1) for i, x in enumerate(v)]
        return AnyValue(array_value=ArrayValue(values=items))
    assert isinstance(v, dict)  # what else json.loads gives
    return AnyValue(kvlist_value=KeyValueList(values=_key_values(v, name, depth + 1)))


def _key_values(d: dict[str, Any], name: str, depth: int = 0) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any_value(v, f"{name}.{k}", depth)) for k, v in d.items()]


def _optional_str(rec: dict[str, Any], key: str, name: str) -> str:
    v = rec.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadRequest(f"{name}{key}: expected a string")
    return v


def _hex_id(rec: dict[str, Any], key: str, name: str, nbytes: int) -> bytes:
    v = _optional_str(rec, key, name)
    if not v:
        return b""
    if len(v) != 2 * nbytes or not _HEX.fullmatch(v):
        raise BadRequest(f"{name}{key}: expected {2 * nbytes} hex characters")
    return bytes.fromhex(v)


def _timestamp(v: object, name: str, now_ns: int, limits: IngestLimits) -> int:
    if v is None:
        return now_ns
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise BadRequest(f"{name}: expected an RFC 3339 time or epoch ns/ms")
    if isinstance(v, str):
        try:
            ns = parse_rfc3339_ns(v)
        except (ValueError, OverflowError) as e:
            raise BadRequest(f"{name}: {e}") from None
    else:
        ns = v * 1_000_000 if 0 <= v < _MS_BELOW else v
    # the decoder would refuse such a record as a partial success; refusing the request
    # here instead keeps the answer's log ids in step with the records sent
    if ns < limits.min_ts_ns:
        raise BadRequest(f"{name}: before {rfc3339(limits.min_ts_ns)}")
    if ns > now_ns + limits.max_future_ns:
        raise BadRequest(f"{name}: more than {limits.max_future_ns // 10**9} s in the future")
    return ns


def _log_record(rec: object, name: str, now_ns: int, limits: IngestLimits) -> LogRecord:
    if not isinstance(rec, dict):
        raise BadRequest(f"{name or 'body'}: expected a JSON object")
    p = f"{name}." if name else ""
    unknown = sorted(set(rec) - RECORD_FIELDS)
    if unknown:
        raise BadRequest(
            f"{p}{unknown[0]}: unknown field; expected {', '.join(sorted(RECORD_FIELDS))}"
        )
    message = rec.get("message")
    if not isinstance(message, str):
        raise BadRequest(f"{p}message: required, a string")
    lr = LogRecord(
        time_unix_nano=_timestamp(rec.get("timestamp"), f"{p}timestamp", now_ns, limits),
        observed_time_unix_nano=now_ns,
        body=AnyValue(string_value=message),
        trace_id=_hex_id(rec, "trace_id", p, 16),
        span_id=_hex_id(rec, "span_id", p, 8),
    )
    level = rec.get("level")
    if level is not None:
        lv = _level(level, f"{p}level")
        lr.severity_number = SEVERITY_NUMBERS[lv]  # type: ignore[assignment]
        lr.severity_text = lv.name
    attrs = rec.get("attributes")
    if attrs is not None:
        if not isinstance(attrs, dict):
            raise BadRequest(f"{p}attributes: expected a JSON object")
        lr.attributes.extend(_key_values(attrs, f"{p}attributes"))
    return lr


def build_export_request(
    body: object, now_ns: int, limits: IngestLimits
) -> tuple[bytes, list[int]]:
    """(serialized request, position of each input record among the request's records).

    One ResourceLogs per (service, host), in order of first appearance, so the records of
    the request are not in input order: the positions map them back.
    """
    many = isinstance(body, list)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise BadRequest("body: expected a record or a non-empty list of records")
    groups: dict[tuple[str, str], list[int]] = {}
    records: list[LogRecord] = []
    for i, item in enumerate(items):
        name = f"[{i}]" if many else ""
        records.append(_log_record(item, name, now_ns, limits))
        assert isinstance(item, dict)
        p = f"{name}." if name else ""
        service = _optional_str(item, "service", p)
        if not service:
            raise BadRequest(f"{p}service: required, a non-empty string")
        groups.setdefault((service, _optional_str(item, "host", p)), []).append(i)
    req = ExportLogsServiceRequest()
    position = [0] * len(items)
    n = 0
    for (service, host), idx in groups.items():
        attrs = [KeyValue(key="service.name", value=AnyValue(string_value=service))]
        if host:
            attrs.append(KeyValue(key="host.name", value=AnyValue(string_value=host)))
        req.resource_logs.append(
            ResourceLogs(
                resource=Resource(attributes=attrs),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="otelog.rest"),
                        log_records=[records[i] for i in idx],
                    )
                ],
            )
        )
        for i in idx:
            position[i] = n
            n += 1
    return req.SerializeToString(), position


def _reject_constant(name: str) -> float:
    raise BadRequest(f"body: {name} is not a JSON number")


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _TooLarge(cap)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _TooLarge(cap)
        chunks.append(chunk)
    return b"".join(chunks)


class _TooLarge(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(f"request body larger than {cap} bytes")


# ---- search: parameters -> a query


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_search(params: dict[str, str], qs: QueryService, max_limit: int) -> PageRequest:
    """The query of the search parameters: `query`, `service`, `level` (a minimum), the
    `keywords` and a relative `timestamp_to` ANDed into one query-language string."""
    unknown = sorted(set(params) - SEARCH_PARAMS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown parameter; use {', '.join(sorted(SEARCH_PARAMS))}")
    parts: list[str] = []
    query = params.get("query", "").strip()
    if query:
        # alone first, so a syntax error's position is in the user's own text
        try:
            qs.compile(query)
        except QuerySyntaxError as e:
            raise BadRequest(f"query: {e}") from None
        parts.append(f"({query})")
    if params.get("service"):
        parts.append(f"service={_quote(params['service'])}")
    if params.get("level"):
        parts.append(f"level>={_level(params['level'], 'level').name}")
    for word in params.get("keywords", "").split():
        # a plain word keeps its word semantics; anything the parser would read otherwise
        # (operators, keywords, a leading '-') is searched as a quoted phrase
        try:
            bare = qs.compile(word) == Text(word)
        except (QuerySyntaxError, InvalidArgument):
            bare = False
        parts.append(word if bare else _quote(word))
    since: str | None = None
    start_ns = end_ns = None
    t_from, t_to = params.get("timestamp_from", ""), params.get("timestamp_to", "")
    if t_from:
        since, start_ns = _time_param(t_from, "timestamp_from")
    if t_to:
        ago, end_ns = _time_param(t_to, "timestamp_to")
        if ago is not None:
            # relative to the query's `now`, which a page token keeps: pages stay consistent
            parts.append(f"timestamp<{ago} ago")
    limit_text = params.get("limit", "")
    try:
        limit = int(limit_text) if limit_text else DEFAULT_LIMIT
    except ValueError:
        raise BadRequest("limit: expected an integer") from None
    if not 0 <= limit <= max_limit:
        raise BadRequest(f"limit: must be between 0 and {max_limit}")
    return PageRequest(
        query=" AND ".join(parts),
        since=since,
        start_ns=start_ns,
        end_ns=end_ns,
        limit=limit,
        page_token=params.get("page_token") or None,
    )


def _time_param(text: str, name: str) -> tuple[str | None, int | None]:
    """(duration text, None) for `2h` (that long ago), (None, ns) for an RFC 3339 time."""
    t = text.strip()
    try:
        parse_duration_ns(t)
        return t, None
    except ValueError:
        pass
    try:
        return None, parse_rfc3339_ns(t)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{name}: expected a duration such as '2h' (that long ago) or an RFC 3339 time "
            "such as '2026-11-25T10:00:00Z'"
        ) from None


# ---- routes


def routes(
    query_service: QueryService,
    query_timeout: float,
    exporter: LogExporter | None = None,
    max_body: int = 16 << 20,
) -> list[Route]:
    async def in_thread(fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), query_timeout)

    async def ingest(request: Request) -> Response:
        assert exporter is not None
        try:
            raw_body = await _read_capped(request, max_body)
        except _TooLarge as e:
            return _error(413, str(e))
        try:
            body = json.loads(raw_body, parse_constant=_reject_constant)
            raw, position = build_export_request(body, time.time_ns(), exporter.limits)
        except BadRequest as e:
            return _error(400, str(e))
        except (ValueError, RecursionError) as e:  # not JSON, bad UTF-8, nested too deep
            return _error(400, f"body: not valid JSON ({str(e)[:200]})")
        try:
            res = await exporter.export_logs(raw)
        except Overloaded as e:
            retry = str(max(1, math.ceil(e.retry_after_s)))
            return _error(429, str(e), {"Retry-After": retry})
        except InvalidArgument as e:
            return _error(400, str(e))
        if res.rejected:
            # records refused after our checks: DEBUG/INFO sampled out under load (or a
            # clock jump). As OTLP partial success does, say how many and why; the ids are
            # those of the stored records, in storage order.
            ids = [log_id_str(x) for x in res.log_ids]
            return JSONResponse(
                {
                    "status": "PARTIAL",
                    "log_id": ids[0] if ids else None,
                    "log_ids": ids,
                    "rejected": res.rejected,
                    "error": res.message,
                },
                202,
            )
        ids = [log_id_str(res.log_ids[p]) for p in position]
        return JSONResponse({"status": "ACCEPTED", "log_id": ids[0], "log_ids": ids}, 202)

    async def search(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            req = build_search(params, query_service, query_service.max_limit)
            res = await in_thread(query_service.logs, req)
            logs = await in_thread(lambda: [log_json(r) for r in res.rows])
        except TimeoutError:
            return _error(504, f"query timed out after {query_timeout:g} s; narrow the time range")
        except InvalidArgument as e:
            # the service speaks GraphQL's argument names; here the parameter is page_token
            return _error(400, str(e).replace("pageToken", "page_token"))
        except QuerySyntaxError as e:  # not expected: every part was checked
            return _error(400, f"query: {e}")
        except ColdUnavailable as e:
            return _error(503, f"cold storage unavailable, retry later: {e}")
        return JSONResponse({"logs": logs, "total": res.total, "next_page_token": res.next_token})

    out = [Route("/logs/search", search, methods=["GET"])]
    if exporter is not None:
        out.append(Route("/logs/ingest", ingest, methods=["POST"]))
    return out
