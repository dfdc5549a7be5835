"""Live tail: one compiled filter per distinct query, fanned out to bounded subscriber queues.

The writer calls `TailHub.on_commit` on its own thread right after a batch is durable and
searchable. That call only hands the batch to the event loop (`call_soon_threadsafe`);
the matching runs there, once per distinct (tenant, query) however many subscribers share
it, and the rows that match are appended to each subscriber's bounded queue. A subscriber
whose queue is full is ended with `SubscriberTooSlow` instead of being waited for: the
writer never waits on a reader, and memory stays bounded by `queue_size` records per
subscriber.

Order, cursor and resume
------------------------
The cursor is the log id of the last record a subscriber received. Log ids
(`wal_seq << 24 | index`) are assigned by the single writer in commit order, and the
writer calls its listeners in that order, so the live stream is in arrival
(acknowledgement) order, ascending by log id, and "after cursor X" means "log id > X".
Timestamps are the clients' and may arrive late, so a (timestamp, log id) cursor would
skip a record stamped earlier but acknowledged later; a log-id cursor cannot.

A resume (`after` given) is exactly-once:

1. the live queue is registered first;
2. the store is read forwards, page by page (`records_after`), from the cursor;
3. then the live queue is drained, skipping rows with a log id at or below the last one
   sent from the store.

No gap: a batch the loop dispatched before step 1 had been added to the store before it
was handed over, so step 2 (which starts after step 1) reads it; a batch dispatched after
step 1 is in the live queue. No duplicate: a store read is a prefix, in commit order, of
what was committed, so every matching record up to the last log id sent was sent, and the
live rows up to that id are exactly the ones skipped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from otelog.errors import InvalidArgument, OtelogError
from otelog.model import DEFAULT_TENANT, LogBatch, log_id_str
from otelog.query.ast import And, Compare, Node, Not, Or, TimeRef
from otelog.query.execute import Searcher, hidden_by, tombstones_of
from otelog.query.match import Matcher, compile_matcher, value_text
from otelog.query.parser import parse
from otelog.query.resume import records_after
from otelog.query.rows import LogRow, ResourceCache, row_from_batch
from otelog.query.service import MAX_QUERY_CHARS
from otelog.store.store import Store

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
# rows handed to the loop and not matched yet; past it the hub stops holding batches
# (each already sealed or about to be) and ends the subscriptions, which can resume
MAX_BACKLOG_ROWS = 500_000
RESUME_PAGE = 500
# rows taken off a queue at a time: what a consumer holds beyond the queue's bound
_TAKE = 256
# a filter with `timestamp > 5m ago` is recompiled this often, so "ago" moves with time
_RECOMPILE_NS = 1_000_000_000
_LOG_ID = re.compile(r"[0-9a-fA-F]{1,16}")


class TailError(OtelogError):
    """A subscription ended by the server."""


class SubscriberTooSlow(TailError):
    def __init__(self, dropped: int, last_log_id: int | None, reason: str = "") -> None:
        self.dropped = dropped
        self.last_log_id = last_log_id
        msg = f"subscriber too slow: {dropped} records dropped"
        if reason:
            msg += f" ({reason})"
        if last_log_id is not None:
            msg += f"; subscribe again with after: {log_id_str(last_log_id)!r} to resume"
        super().__init__(msg)


class TailClosed(TailError):
    def __init__(self, reason: str = "server is shutting down") -> None:
        super().__init__(reason)


def parse_filter(query: str) -> Node:
    """The tail filter of a query text. Raises QuerySyntaxError or InvalidArgument."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"query is longer than {MAX_QUERY_CHARS} characters")
    return parse(query)


def parse_cursor(text: str | None) -> int | None:
    """`after`: a logId as the API prints it (16 hex digits); "0" replays everything."""
    if text is None or text == "":
        return None
    if not _LOG_ID.fullmatch(text):
        raise InvalidArgument("after must be a logId (up to 16 hex digits)")
    return int(text, 16)


def services_of(node: Node) -> frozenset[str] | None:
    """The services a filter can match, or None when any: lets a whole batch (or every
    row of a resource) be skipped from its resource table without building rows."""
    if isinstance(node, Compare) and node.field == "service" and node.op == "=":
        return frozenset((value_text(node.value),))
    if isinstance(node, And):
        known = [s for s in map(services_of, node.children) if s is not None]
        return frozenset.intersection(*known) if known else None
    if isinstance(node, Or):
        parts = [services_of(c) for c in node.children]
        if any(p is None for p in parts):
            return None
        return frozenset().union(*(p for p in parts if p is not None))
    return None


def _relative_time(node: Node) -> bool:
    if isinstance(node, Compare):
        return isinstance(node.value, TimeRef) and node.value.ago_ns is not None
    if isinstance(node, And | Or):
        return any(_relative_time(c) for c in node.children)
    if isinstance(node, Not):
        return _relative_time(node.child)
    return False


class Subscriber:
    """One subscription's bounded queue of matching rows. Event-loop side only."""

    def __init__(self, topic: _Topic, capacity: int) -> None:
        self.topic = topic
        self.capacity = capacity
        self.dropped = 0  # > 0: ended for being too slow
        self.overrun = False  # ended because the whole hub fell behind
        self.closed: str | None = None  # ended by the server, with this reason
        # a deque bounded by hand rather than an asyncio.Queue: a batch's matches go in
        # with one extend and one wake-up, and a full queue is emptied in one call
        self._rows: collections.deque[LogRow] = collections.deque()
        self._ready = asyncio.Event()

    @property
    def ended(self) -> bool:
        return bool(self.dropped) or self.closed is not None

    def offer(self, rows: list[LogRow]) -> bool:
        """Queue rows; False (and the subscriber ended) when they do not fit."""
        if self.ended:
            return False
        if len(self._rows) + len(rows) > self.capacity:
            self.drop(len(rows))
            return False
        self._rows.extend(rows)
        self._ready.set()
        return True

    def drop(self, n: int, overrun: bool = False) -> None:
        """End it: `n` records not queued plus those queued will never be delivered."""
        self.dropped = max(n + len(self._rows), 1)
        self.overrun = overrun
        self._rows.clear()  # free the memory now, not when the slow reader gets here
        self._ready.set()

    def close(self, reason: str) -> None:
        self.closed = reason
        self._ready.set()

    async def get(self) -> list[LogRow]:
        """The queued rows (at most a few hundred), waiting for some; [] once ended."""
        while not self._rows:
            if self.ended:
                return []
            self._ready.clear()
            await self._ready.wait()
        if self.ended:
            return []
        n = min(len(self._rows), _TAKE)
        return [self._rows.popleft() for _ in range(n)]

    def error(self, last_log_id: int | None) -> TailError:
        if self.closed is not None:
            return TailClosed(self.closed)
        reason = "the live tail fell behind ingestion" if self.overrun else ""
        return SubscriberTooSlow(self.dropped, last_log_id, reason)


@dataclass(eq=False)
class _Topic:
    """A distinct (tenant, filter): compiled once, evaluated once per batch."""

    tenant: str
    node: Node
    services: frozenset[str] | None
    relative: bool
    matcher: Matcher
    compiled_ns: int
    subscribers: dict[Subscriber, None] = field(default_factory=dict)  # ordered set

    @classmethod
    def compile(cls, tenant: str, node: Node, now_ns: int) -> _Topic:
        return cls(
            tenant,
            node,
            services_of(node),
            _relative_time(node),
            compile_matcher(node, now_ns),
            now_ns,
        )

    def current_matcher(self, now_ns: int) -> Matcher:
        if self.relative and now_ns - self.compiled_ns >= _RECOMPILE_NS:
            self.matcher = compile_matcher(self.node, now_ns)
            self.compiled_ns = now_ns
        return self.matcher

    def candidates(self, batch: LogBatch, services: list[str]) -> range | list[int]:
        """Rows of `batch` the filter can match, judged by their resource alone."""
        if self.services is None:
            return range(len(batch))
        allowed = {k for k, svc in enumerate(services) if svc in self.services}
        if not allowed:
            return []
        if len(allowed) == len(services):
            return range(len(batch))
        return [i for i, k in enumerate(batch.res) if k in allowed]


@dataclass
class TailStats:
    batches: int = 0  # batches matched against at least one filter
    rows_matched: int = 0  # rows queued, counted once per topic
    subscribers_dropped: int = 0
    overruns: int = 0


class TailHub:
    """Registry of live-tail filters, fed by the writer, read by subscriptions."""

    def __init__(
        self,
        store: Store,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_backlog_rows: int = MAX_BACKLOG_ROWS,
    ) -> None:
        self.store = store
        self.queue_size = max(1, queue_size)
        self.max_backlog_rows = max_backlog_rows
        self.stats = TailStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        # tenant -> filter -> topic; read without a lock by the writer thread (a dict
        # lookup is atomic under the GIL), changed only on the loop
        self._tenants: dict[str, dict[Node, _Topic]] = {}
        self._resources = ResourceCache()
        self._backlog_lock = threading.Lock()
        self._backlog = 0
        self._overrun: dict[str, int] = {}  # tenant -> rows skipped, until reported
        self._closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ---- the writer thread

    def on_commit(self, tenant: str, batch: LogBatch) -> None:
        """Writer listener: hand a durable batch to the loop. Never blocks, never matches."""
        loop = self._loop
        if loop is None or not self._tenants.get(tenant):
            return  # nobody tails this tenant: one dict lookup per batch
        n = len(batch)
        with self._backlog_lock:
            over = self._backlog + n > self.max_backlog_rows
            if over:
                first = tenant not in self._overrun
                self._overrun[tenant] = self._overrun.get(tenant, 0) + n
            else:
                self._backlog += n
        try:
            if not over:
                loop.call_soon_threadsafe(self._dispatch, tenant, batch)
            elif first:
                loop.call_soon_threadsafe(self._report_overrun, tenant)
        except RuntimeError:
            pass  # the loop is closed: the server is stopping

    # ---- the event loop

    def _dispatch(self, tenant: str, batch: LogBatch) -> None:
        with self._backlog_lock:
            self._backlog -= len(batch)
        topics = self._tenants.get(tenant)
        if not topics:
            return
        self.stats.batches += 1
        now = time.time_ns()
        services = [r.service for r in batch.resources]
        # rows are built at most once per batch, shared by every topic and subscriber
        built: list[LogRow | None] = [None] * len(batch)
        resources = self._resources
        # a record committed while a deletion request was being recorded may fall under it
        hide = [t for t in tombstones_of(self.store, tenant) if t.max_lid >= batch.log_id[0]]
        for topic in list(topics.values()):
            idx = topic.candidates(batch, services)
            if not idx:
                continue
            m = topic.current_matcher(now)
            matched: list[LogRow] = []
            for i in idx:
                row = built[i]
                if row is None:
                    row = built[i] = row_from_batch(batch, i, resources)
                if m(row) and not hidden_by(hide, row):
                    matched.append(row)
            if not matched:
                continue
            self.stats.rows_matched += len(matched)
            for sub in list(topic.subscribers):
                if not sub.offer(matched):
                    self.stats.subscribers_dropped += 1
                    self.unsubscribe(sub)

    def _report_overrun(self, tenant: str) -> None:
        with self._backlog_lock:
            skipped = self._overrun.pop(tenant, 0)
        self.stats.overruns += 1
        log.warning("live tail fell %d records behind ingestion; ending its subscriptions", skipped)
        for topic in list(self._tenants.get(tenant, {}).values()):
            for sub in list(topic.subscribers):
                sub.drop(skipped, overrun=True)
                self.unsubscribe(sub)

    def subscribe(self, node: Node, tenant: str = DEFAULT_TENANT) -> Subscriber:
        if self._closed:
            raise TailClosed()
        topics = self._tenants.setdefault(tenant, {})
        topic = topics.get(node)
        if topic is None:
            topic = topics[node] = _Topic.compile(tenant, node, time.time_ns())
        sub = Subscriber(topic, self.queue_size)
        topic.subscribers[sub] = None
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        topic = sub.topic
        topic.subscribers.pop(sub, None)
        if topic.subscribers:
            return
        topics = self._tenants.get(topic.tenant)
        if topics is not None and topics.get(topic.node) is topic:
            del topics[topic.node]
            if not topics:
                del self._tenants[topic.tenant]

    def close(self, reason: str = "server is shutting down") -> None:
        """End every subscription (they see TailClosed) and take no new ones."""
        self._closed = True
        for topics in list(self._tenants.values()):
            for topic in list(topics.values()):
                for sub in list(topic.subscribers):
                    sub.close(reason)
        self._tenants.clear()

    def topic_count(self) -> int:
        return sum(len(t) for t in self._tenants.values())

    def subscriber_count(self) -> int:
        return sum(len(tp.subscribers) for t in self._tenants.values() for tp in t.values())


async def tail_rows(
    hub: TailHub,
    node: Node,
    after: int | None = None,
    tenant: str = DEFAULT_TENANT,
    page: int = RESUME_PAGE,
) -> AsyncGenerator[LogRow, None]:
    """The records of a subscription: stored ones after `after` (if given), then live.

    Ends by raising a TailError. Close it (`contextlib.aclosing`) to unsubscribe at once.
    """
    sub = hub.subscribe(node, tenant)  # live first, then the store: see the module doc
    last = after
    try:
        if after is not None:
            searcher = Searcher(hub.store, tenant)
            cursor = after
            while True:
                rows = await asyncio.to_thread(
                    records_after, hub.store, tenant, node, cursor, page, time.time_ns(), searcher
                )
                for row in rows:
                    yield row
                    last = row.log_id
                if rows:
                    cursor = rows[-1].log_id
                if sub.dropped and sub.closed is None:
                    # the live queue overflowed while the backlog was being sent; the store
                    # holds those records too, so register a fresh queue and read on
                    hub.unsubscribe(sub)
                    sub = hub.subscribe(node, tenant)
                    continue
                if sub.closed is not None or len(rows) < page:
                    break
        while True:
            rows = await sub.get()
            if not rows:
                raise sub.error(last)
            for row in rows:
                if last is not None and row.log_id <= last:
                    continue  # already sent from the store
                yield row
                last = row.log_id
    finally:
        hub.unsubscribe(sub)
