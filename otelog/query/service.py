"""The query service: what every API (GraphQL, REST) calls. No protocol knowledge here."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanPb

from otelog.anyvalue import attributes_to_python
from otelog.errors import InvalidArgument
from otelog.metrics import QUERY_SECONDS
from otelog.model import DEFAULT_TENANT
from otelog.query.ast import Node
from otelog.query.duration import parse_duration_ns
from otelog.query.execute import Searcher, SearchResult
from otelog.query.parser import parse
from otelog.query.plan import MAX_TS, TimeWindow
from otelog.query.rows import LogRow
from otelog.store.store import Store


@dataclass
class SpanRow:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status_code: str
    status_message: str
    attributes: dict[str, object]
    events: list[dict[str, object]]
    resource: dict[str, object]


@dataclass
class TraceResult:
    trace_id: str
    spans: list[SpanRow]
    logs: list[LogRow]


@dataclass
class PageRequest:
    query: str = ""
    since: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    limit: int = 100
    page_token: str | None = None


MAX_QUERY_CHARS = 16_384

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


class QueryService:
    def __init__(self, store: Store, max_limit: int = 1000) -> None:
        self.store = store
        self.max_limit = max_limit

    def searcher(self, tenant: str = DEFAULT_TENANT) -> Searcher:
        return Searcher(self.store, tenant)

    def compile(self, query: str) -> Node:
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument(f"query is longer than {MAX_QUERY_CHARS} characters")
        return parse(query)

    def window(
        self, since: str | None, start_ns: int | None, end_ns: int | None, now_ns: int
    ) -> TimeWindow:
        w = TimeWindow()
        if since:
            try:
                w = w.intersect(TimeWindow(now_ns - parse_duration_ns(since), MAX_TS))
            except ValueError as e:
                raise InvalidArgument(f"since: {e}") from None
        if start_ns is not None:
            w = w.intersect(TimeWindow(start_ns, MAX_TS))
        if end_ns is not None:
            w = w.intersect(TimeWindow(0, end_ns))
        return w

    @QUERY_SECONDS.labels("logs").time()
    def logs(self, req: PageRequest, tenant: str = DEFAULT_TENANT) -> SearchResult:
        if req.limit < 0 or req.limit > self.max_limit:
            raise InvalidArgument(f"limit must be between 0 and {self.max_limit}")
        node = self.compile(req.query)
        fingerprint = _fingerprint(req)
        if req.page_token:
            tok = _decode_token(req.page_token)
            if tok["f"] != fingerprint:
                raise InvalidArgument("pageToken belongs to a different query")
            now_ns = int(tok["n"])
            cursor: tuple[int, int] | None = (int(tok["t"]), int(tok["i"]))
        else:
            now_ns = time.time_ns()
            cursor = None
        window = self.window(req.since, req.start_ns, req.end_ns, now_ns)
        res = self.searcher(tenant).search(node, now_ns, window, req.limit, cursor)
        res.next_token = (
            _encode_token(
                {"f": fingerprint, "n": now_ns, "t": res.next_cursor[0], "i": res.next_cursor[1]}
            )
            if res.next_cursor
            else None
        )
        return res

    @QUERY_SECONDS.labels("trace").time()
    def trace(self, trace_id_hex: str, tenant: str = DEFAULT_TENANT) -> TraceResult | None:
        try:
            tid = bytes.fromhex(trace_id_hex)
        except ValueError:
            raise InvalidArgument("traceId must be 32 hex characters") from None
        if len(tid) != 16:
            raise InvalidArgument("traceId must be 32 hex characters")
        searcher = self.searcher(tenant)
        logs = searcher.trace_logs(tid)
        spans = []
        # a trace under a deletion request shows no spans from the moment it is recorded
        stored = [] if tid in searcher.hidden_traces else self.store.trace_spans(tenant, tid)
        for service, resource_pb, _scope_pb, span_pb in stored:
            sp = SpanPb.FromString(span_pb)
            spans.append(
                SpanRow(
                    trace_id=sp.trace_id.hex(),
                    span_id=sp.span_id.hex(),
                    parent_span_id=sp.parent_span_id.hex(),
                    name=sp.name,
                    service=service,
                    kind=_KINDS.get(sp.kind, str(sp.kind)),
                    start_ns=sp.start_time_unix_nano,
                    end_ns=sp.end_time_unix_nano,
                    status_code=_STATUS.get(sp.status.code, str(sp.status.code)),
                    status_message=sp.status.message,
                    attributes=attributes_to_python(sp.attributes),
                    events=[
                        {
                            "name": ev.name,
                            "timeUnixNano": ev.time_unix_nano,
                            "attributes": attributes_to_python(ev.attributes),
                        }
                        for ev in sp.events
                    ],
                    resource=attributes_to_python(ResourcePb.FromString(resource_pb).attributes),
                )
            )
        if not spans and not logs:
            return None
        return TraceResult(trace_id_hex.lower(), spans, logs)

    def services(self, tenant: str = DEFAULT_TENANT) -> list[str]:
        return self.store.services(tenant)


def _fingerprint(req: PageRequest) -> str:
    key = json.dumps([req.query, req.since, req.start_ns, req.end_ns])
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def _encode_token(d: dict[str, object]) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).decode().rstrip("=")
    )


def _decode_token(tok: str) -> dict[str, Any]:
    try:
        d = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
        if not isinstance(d, dict) or not {"f", "n", "t", "i"} <= d.keys():
            raise ValueError
        for k in ("n", "t", "i"):
            if not isinstance(d[k], int):
                raise ValueError
        return d
    except (ValueError, TypeError):
        raise InvalidArgument("invalid pageToken") from None
