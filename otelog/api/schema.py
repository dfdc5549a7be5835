"""The GraphQL schema (strawberry). Names are contract: see DESIGN.md and graphql/schema.graphql."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import QueryDepthLimiter
from strawberry.scalars import JSON
from strawberry.types import Info

from otelog.api import tail
from otelog.api.alerts_schema import AlertMutation, AlertQuery, AlertSubscription
from otelog.api.export_schema import ExportMutation, ExportQuery
from otelog.api.gql_errors import graphql_error, in_thread
from otelog.api.lifecycle_schema import LifecycleMutation, LifecycleQuery
from otelog.errors import InvalidArgument, QuerySyntaxError
from otelog.query import aggregate
from otelog.query.rows import LogRow
from otelog.query.service import PageRequest, QueryService, SpanRow, TraceResult
from otelog.store.cold import ColdUnavailable


@strawberry.enum
class Level(enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"
    TRACE = "TRACE"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"
    FATAL = "FATAL"


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _ns(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


@strawberry.type
class LogRecord:
    row: strawberry.Private[LogRow]

    @strawberry.field
    def log_id(self) -> strawberry.ID:
        return strawberry.ID(f"{self.row.log_id:016x}")

    @strawberry.field
    def timestamp(self) -> datetime:
        return _dt(self.row.ts)

    @strawberry.field
    def timestamp_unix_nano(self) -> str:
        return str(self.row.ts)

    @strawberry.field
    def service(self) -> str:
        return self.row.service

    @strawberry.field
    def level(self) -> Level:
        return Level(self.row.level_name)

    @strawberry.field
    def severity_text(self) -> str:
        return self.row.severity_text or self.row.record().severity_text

    @strawberry.field
    def body(self) -> str:
        return self.row.body

    @strawberry.field
    def trace_id(self) -> str | None:
        return self.row.trace_id or None

    @strawberry.field
    def span_id(self) -> str | None:
        return self.row.span_id or None

    @strawberry.field
    def host(self) -> str | None:
        return self.row.host or None

    @strawberry.field
    def attributes(self) -> JSON:
        return self.row.attributes()

    @strawberry.field
    def resource(self) -> JSON:
        return self.row.resource()


@strawberry.type
class LogPage:
    total: int
    next_page_token: str | None
    records: list[LogRecord]


@strawberry.type
class Span:
    row: strawberry.Private[SpanRow]

    @strawberry.field
    def span_id(self) -> str:
        return self.row.span_id

    @strawberry.field
    def parent_span_id(self) -> str | None:
        return self.row.parent_span_id or None

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def service(self) -> str:
        return self.row.service

    @strawberry.field
    def kind(self) -> str | None:
        return self.row.kind

    @strawberry.field
    def start_time(self) -> datetime:
        return _dt(self.row.start_ns)

    @strawberry.field
    def duration_ms(self) -> float:
        return (self.row.end_ns - self.row.start_ns) / 1e6

    @strawberry.field
    def status(self) -> str | None:
        return self.row.status_code

    @strawberry.field
    def status_message(self) -> str | None:
        return self.row.status_message or None

    @strawberry.field
    def attributes(self) -> JSON:
        return self.row.attributes

    @strawberry.field
    def events(self) -> JSON:
        return self.row.events

    @strawberry.field
    def resource(self) -> JSON:
        return self.row.resource


@strawberry.type
class Trace:
    result: strawberry.Private[TraceResult]

    @strawberry.field
    def trace_id(self) -> str:
        return self.result.trace_id

    @strawberry.field
    def spans(self) -> list[Span]:
        return [Span(row=s) for s in sorted(self.result.spans, key=lambda s: s.start_ns)]

    @strawberry.field
    def logs(self) -> list[LogRecord]:
        return [LogRecord(row=r) for r in self.result.logs]

    @strawberry.field
    def services(self) -> list[str]:
        return sorted(
            {s.service for s in self.result.spans} | {r.service for r in self.result.logs}
        )

    @strawberry.field
    def start_time(self) -> datetime | None:
        starts = [s.start_ns for s in self.result.spans] or [r.ts for r in self.result.logs]
        return _dt(min(starts)) if starts else None

    @strawberry.field
    def duration_ms(self) -> float | None:
        if not self.result.spans:
            return None
        lo = min(s.start_ns for s in self.result.spans)
        hi = max(s.end_ns for s in self.result.spans)
        return (hi - lo) / 1e6


@strawberry.type(description="Matching records in [start, start + interval) with one group value.")
class HistogramBucket:
    start: datetime
    count: int
    group: str | None = strawberry.field(
        description="The groupBy value; null when not grouped or the record has none."
    )


@strawberry.type(description="A value of a field and how many matching records have it.")
class FacetValue:
    value: str
    count: int


def _service(info: Info) -> QueryService:
    svc: QueryService = info.context["query_service"]
    return svc


async def _run(info: Info, fn: Any, *args: Any) -> Any:
    """Blocking store work off the event loop, with the configured deadline."""
    timeout: float = info.context.get("query_timeout", 30.0)
    return await in_thread(fn, *args, timeout=timeout)


@strawberry.type
class Query(AlertQuery, LifecycleQuery, ExportQuery):
    @strawberry.field(description="Log records matching `query`, newest first.")
    async def logs(
        self,
        info: Info,
        query: str = "",
        since: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> LogPage:
        req = PageRequest(query, since, _ns(from_), _ns(to), limit, page_token)
        res = await _run(info, _service(info).logs, req)
        return LogPage(
            total=res.total,
            next_page_token=res.next_token,
            records=[LogRecord(row=r) for r in res.rows],
        )

    @strawberry.field(description="A trace's spans and logs, found by trace id alone.")
    async def trace(self, info: Info, trace_id: str) -> Trace | None:
        res = await _run(info, _service(info).trace, trace_id)
        return Trace(result=res) if res is not None else None

    @strawberry.field(
        description="Matching records per `interval` (>= 1s, at most 10,000 in the range), "
        "optionally per value of `groupBy`: level, service, host, attributes.<key> or "
        "resource.<key>. Only non-empty buckets, by start then group."
    )
    async def log_histogram(
        self,
        info: Info,
        query: str = "",
        since: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        interval: str = "1m",
        group_by: str | None = None,
    ) -> list[HistogramBucket]:
        req = aggregate.HistogramRequest(query, since, _ns(from_), _ns(to), interval, group_by)
        points = await _run(info, aggregate.histogram, _service(info), req)
        return [
            HistogramBucket(start=_dt(p.start_ns), count=p.count, group=p.group) for p in points
        ]

    @strawberry.field(
        description="The `limit` most frequent values of `field` (service, level, host, "
        "attributes.<key>, resource.<key>) among matching records, by count then value."
    )
    async def facets(
        self,
        info: Info,
        field: str,
        query: str = "",
        since: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        limit: int = 10,
    ) -> list[FacetValue]:
        req = aggregate.FacetRequest(field, query, since, _ns(from_), _ns(to), limit)
        counts = await _run(info, aggregate.facets, _service(info), req)
        return [FacetValue(value=c.value, count=c.count) for c in counts]

    @strawberry.field(description="Every service that has sent logs or spans.")
    async def services(self, info: Info) -> list[str]:
        return await _run(info, _service(info).services)  # type: ignore[no-any-return]


def _tail_error(e: Exception) -> GraphQLError:
    if isinstance(e, QuerySyntaxError):
        return GraphQLError(str(e), extensions={"code": "QUERY_SYNTAX", "position": e.position})
    if isinstance(e, tail.SubscriberTooSlow):
        ext: dict[str, Any] = {"code": "TAIL_TOO_SLOW", "dropped": e.dropped}
        if e.last_log_id is not None:
            ext["resumeAfter"] = f"{e.last_log_id:016x}"
        return GraphQLError(str(e), extensions=ext)
    if isinstance(e, tail.TailClosed):
        return GraphQLError(str(e), extensions={"code": "SHUTTING_DOWN"})
    return GraphQLError(str(e), extensions={"code": "BAD_ARGUMENT"})


@strawberry.type
class Subscription(AlertSubscription):
    @strawberry.subscription(
        description="Records matching `query` as they are acknowledged, in arrival order. "
        "With `after` (the logId of a record received before), first every stored record "
        "acknowledged after it, then live ones: no gap, no duplicate across reconnects."
    )
    async def tail(
        self, info: Info, query: str = "", after: str | None = None
    ) -> AsyncGenerator[LogRecord, None]:
        hub: tail.TailHub | None = info.context.get("tail_hub")
        if hub is None:
            raise GraphQLError("live tail is not available on this server")
        try:
            node = tail.parse_filter(query)
            cursor = tail.parse_cursor(after)
            async with contextlib.aclosing(tail.tail_rows(hub, node, cursor)) as rows:
                async for row in rows:
                    yield LogRecord(row=row)
        except (QuerySyntaxError, InvalidArgument, tail.TailError) as e:
            raise _tail_error(e) from None
        except ColdUnavailable as e:
            # resuming from far back reads object storage, which is down
            err = graphql_error(e)
            assert err is not None
            raise err from None


@strawberry.type
class Mutation(AlertMutation, LifecycleMutation, ExportMutation):
    """Changes: alert rules and alerts (otelog/api/alerts_schema.py), retention and GDPR
    deletes (lifecycle_schema.py), exports (export_schema.py)."""


# Our types do not nest recursively, so a deeper document is abuse, not a real query.
MAX_QUERY_DEPTH = 12

schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    # a factory: strawberry builds the extension afresh for each request
    extensions=[lambda: QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH)],
)
