"""The data-lifecycle part of the GraphQL schema: retention policies and GDPR deletes.

`schema.py` composes these mixins into its root types. Resolvers call the
`LifecycleManager` of the request context; its RocksDB writes (synced) and the count of
what a deletion hides run in a worker thread.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from otelog.api.gql_errors import in_thread
from otelog.lifecycle.manager import LifecycleManager
from otelog.lifecycle.retention import RetentionPolicy as Policy
from otelog.model import DEFAULT_TENANT
from otelog.store.deletions import DeletionRequest as Deletion


def _dt(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC) if ns else None


def _manager(info: Info) -> LifecycleManager:
    lm: LifecycleManager | None = info.context.get("lifecycle")
    if lm is None:
        raise GraphQLError("the data lifecycle is not available on this server")
    return lm


@strawberry.type(
    description="Which records stay hot (RocksDB) how long, then cold (object storage) "
    "how long, and where. A record follows the first policy (highest priority) whose "
    "query matches it, else `default`."
)
class RetentionPolicy:
    name: str
    query: str
    hot_days: float
    cold_days: float
    destination: str = strawberry.field(
        description="s3://bucket/prefix; empty: the server's cold destination"
    )
    priority: int

    @staticmethod
    def of(p: Policy) -> RetentionPolicy:
        return RetentionPolicy(
            name=p.name,
            query=p.query,
            hot_days=p.hot_days,
            cold_days=p.cold_days,
            destination=p.destination,
            priority=p.priority,
        )


@strawberry.enum(description="PENDING: hidden, not yet erased; ERASING: rewritten, old "
                 "bytes waiting for their grace period and compaction; ERASED: gone.")  # fmt: skip
class DeletionState(enum.Enum):
    PENDING = "PENDING"
    ERASING = "ERASING"
    ERASED = "ERASED"


@strawberry.type(description="A GDPR deletion: hidden from every read when created, then erased.")
class DeletionRequest:
    id: strawberry.ID
    query: str | None = strawberry.field(
        description="The query; null once erased (it names the person): see querySha256."
    )
    query_sha256: str
    state: DeletionState
    matched: int = strawberry.field(description="Records the request hides.")
    erased: int = strawberry.field(description="Records physically removed so far.")
    created_at: datetime
    deadline: datetime
    erased_at: datetime | None = strawberry.field(
        description="When the last copy went (old segments deleted and compacted)."
    )
    overdue: bool
    with_traces: bool
    traces: int = strawberry.field(description="Traces whose spans go with the records.")
    receipt: JSON = strawberry.field(
        description="Segments and objects rewritten, the records each lost, and when."
    )
    error: str | None

    @staticmethod
    def of(d: Deletion, now_ns: int) -> DeletionRequest:
        return DeletionRequest(
            id=strawberry.ID(d.id),
            query=d.query or None,
            query_sha256=d.query_sha256,
            state=DeletionState(d.state),
            matched=d.matched,
            erased=d.erased,
            created_at=_dt(d.created_ns),  # type: ignore[arg-type]
            deadline=_dt(d.deadline_ns),  # type: ignore[arg-type]
            erased_at=_dt(d.erased_ns),
            overdue=d.state != "ERASED" and d.deadline_ns < now_ns,
            with_traces=d.with_traces,
            traces=len(d.traces),
            receipt={"rewritten": d.rewritten},
            error=d.error or None,
        )


@strawberry.type
class LifecycleQuery:
    @strawberry.field(description="Retention policies in matching order; `default` last.")
    async def retention_policies(self, info: Info) -> list[RetentionPolicy]:
        lm = _manager(info)
        return [RetentionPolicy.of(p) for p in await in_thread(lm.policies)]

    @strawberry.field(description="One GDPR deletion request, with its receipt once erased.")
    async def deletion_request(self, info: Info, id: strawberry.ID) -> DeletionRequest | None:
        lm = _manager(info)
        d = lm.deletion(str(id))
        return DeletionRequest.of(d, lm.clock()) if d else None

    @strawberry.field(description="Every GDPR deletion request, newest first.")
    async def deletion_requests(self, info: Info) -> list[DeletionRequest]:
        lm = _manager(info)
        ds = sorted(lm.store.deletions(), key=lambda d: d.created_ns, reverse=True)
        now = lm.clock()
        return [DeletionRequest.of(d, now) for d in ds]


@strawberry.type
class LifecycleMutation:
    @strawberry.mutation(
        description="Create or replace a retention policy (name `default` changes the default)."
    )
    async def set_retention_policy(
        self,
        info: Info,
        name: str,
        hot_days: float,
        cold_days: float,
        query: str = "",
        destination: str = "",
        priority: int = 0,
    ) -> RetentionPolicy:
        lm = _manager(info)
        p = Policy(name, query, hot_days, cold_days, destination, priority)
        return RetentionPolicy.of(await in_thread(lm.set_policy, p))

    @strawberry.mutation(description="Remove a retention policy; its records fall to the next.")
    async def delete_retention_policy(self, info: Info, name: str) -> bool:
        return await in_thread(_manager(info).delete_policy, name)

    @strawberry.mutation(
        description="GDPR delete: every record matching `query` that is stored when this "
        "returns is hidden from queries, traces, tail and exports at once, hot and cold, and "
        "erased physically in the background (state and receipt: deletionRequest)."
    )
    async def delete_logs(
        self,
        info: Info,
        query: str,
        with_traces: Annotated[
            bool,
            strawberry.argument(
                description="Also hide and erase every span of the traces the matched "
                "records belong to (a `trace_id=` query always does)."
            ),
        ] = False,
    ) -> DeletionRequest:
        lm = _manager(info)
        d = await in_thread(lm.delete_logs, query, DEFAULT_TENANT, with_traces)
        return DeletionRequest.of(d, lm.clock())
