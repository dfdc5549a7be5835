"""The export part of the GraphQL schema: start, follow and cancel export jobs.

`schema.py` composes `ExportQuery` and `ExportMutation` into its root types. Resolvers
call the `ExportManager` of the request context (otelog/lifecycle/export.py); starting a
job parses the query and checks the destination in a worker thread and answers at once,
the job itself runs in its own thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from otelog.api.gql_errors import in_thread
from otelog.errors import Overloaded
from otelog.lifecycle import export as ex

_T = TypeVar("_T")


def _dt(ns: int | None) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC) if ns is not None else None


def _ns(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


def _manager(info: Info) -> ex.ExportManager:
    m: ex.ExportManager | None = info.context.get("export_manager")
    if m is None:
        raise GraphQLError("exports are not available on this server")
    return m


def _export_error(e: Exception) -> GraphQLError | None:
    if isinstance(e, Overloaded):
        return GraphQLError(
            str(e), extensions={"code": "TOO_MANY_EXPORTS", "retryAfter": e.retry_after_s}
        )
    if isinstance(e, ex.ExportNotFound):
        return GraphQLError(str(e), extensions={"code": "NOT_FOUND"})
    return None


async def _call(fn: Callable[..., _T], *args: Any) -> _T:
    return await in_thread(fn, *args, translate=_export_error)


@strawberry.enum(description="CSV and Parquet: one row per record with attributes and "
                 "resource as JSON text; JSONL: one /logs/search record per line.")  # fmt: skip
class ExportFormat(enum.Enum):
    CSV = "CSV"
    JSONL = "JSONL"
    PARQUET = "PARQUET"


@strawberry.enum
class ExportState(enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@strawberry.type(description="An export of a query's records, oldest first, to S3 or a file.")
class ExportJob:
    job: strawberry.Private[ex.ExportJob]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.job.id)

    @strawberry.field
    def query(self) -> str:
        return self.job.query

    @strawberry.field
    def format(self) -> ExportFormat:
        return ExportFormat(self.job.format.name)

    @strawberry.field
    def destination(self) -> str:
        return self.job.destination

    @strawberry.field
    def state(self) -> ExportState:
        return ExportState(self.job.state.value)

    @strawberry.field(description="Records the query matched; null until they are counted.")
    def total(self) -> int | None:
        return self.job.total

    @strawberry.field(description="Records written so far.")
    def written(self) -> int:
        return self.job.written

    @strawberry.field(
        description="Bytes written so far; once SUCCEEDED, the size of the result "
        "(a Float: exports pass 2^31 bytes)"
    )
    def bytes(self) -> float:
        return float(self.job.nbytes)

    @strawberry.field(description="written / total, from 0 to 1; null until total is known.")
    def progress(self) -> float | None:
        return self.job.progress

    @strawberry.field
    def started_at(self) -> datetime:
        dt = _dt(self.job.started_at)
        assert dt is not None
        return dt

    @strawberry.field
    def finished_at(self) -> datetime | None:
        return _dt(self.job.finished_at)

    @strawberry.field(description="Why it FAILED.")
    def error(self) -> str | None:
        return self.job.error

    @strawberry.field(
        description="The object (s3://bucket/key) or file of the result: where it goes while "
        "RUNNING, where it is once SUCCEEDED, null otherwise (nothing is left behind)."
    )
    def location(self) -> str | None:
        return self.job.location


@strawberry.type
class ExportQuery:
    @strawberry.field(description="One export job.")
    async def export_job(self, info: Info, id: strawberry.ID) -> ExportJob | None:
        job = _manager(info).job(str(id))
        return ExportJob(job=job) if job is not None else None

    @strawberry.field(description="Export jobs, newest first.")
    async def export_jobs(self, info: Info, state: ExportState | None = None) -> list[ExportJob]:
        st = ex.ExportState(state.value) if state is not None else None
        return [ExportJob(job=j) for j in _manager(info).jobs(state=st)]


@strawberry.type
class ExportMutation:
    @strawberry.mutation(
        description="Export the records matching `query` (and `since`/`from`/`to`, as in "
        "`logs`) as of now, oldest first. `destination`: s3://bucket/prefix (the object is "
        "<prefix><id>.<format>; needs the server's --s3-endpoint) or a path inside the "
        "server's --export-dir, relative to it or absolute: a directory (the file is "
        "<id>.<format>) or a file not there yet. "
        "Answers at once with the RUNNING job; follow it with `exportJob`."
    )
    async def start_export(
        self,
        info: Info,
        query: str,
        format: ExportFormat,
        destination: str,
        since: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> ExportJob:
        req = ex.ExportRequest(
            query=query,
            format=ex.ExportFormat[format.value],
            destination=destination,
            since=since,
            start_ns=_ns(from_),
            end_ns=_ns(to),
        )
        return ExportJob(job=await _call(_manager(info).start, req))

    @strawberry.mutation(
        description="Stop a running export and remove what it wrote; answers with the job "
        "once it stopped (a finished job as it is)."
    )
    async def cancel_export(self, info: Info, id: strawberry.ID) -> ExportJob:
        return ExportJob(job=await _call(_manager(info).cancel, str(id)))
