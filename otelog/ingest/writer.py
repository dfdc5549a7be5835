"""The writer: group commit of everything the receivers hand in, then the sealer.

Requests that arrive while a commit is in flight share the next synced WriteBatch, so a
durable acknowledgement costs one fsync per group, not per request. A request is
acknowledged (its future resolved) only after that write returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from otelog import metrics
from otelog.errors import Overloaded
from otelog.model import LogBatch, SpanBatch
from otelog.store import format as fmt
from otelog.store.store import Store, WalEntry

log = logging.getLogger(__name__)

CommitListener = Callable[[str, LogBatch], None]


@dataclass
class _Pending:
    tenant: str
    future: Future[None]
    size: int
    logs: LogBatch | None = None
    raw: bytes = b""
    receipt_ns: int = 0
    spans: SpanBatch | None = None


@dataclass
class WriterStats:
    commits: int = 0
    committed_records: int = 0
    commit_seconds: list[float] = field(default_factory=list)


class Writer:
    def __init__(
        self,
        store: Store,
        max_pending_bytes: int = 256 << 20,
        seal_interval_s: float = 0.5,
        seal_rows: int = 100_000,
    ) -> None:
        self.store = store
        self.max_pending_bytes = max_pending_bytes
        self.seal_interval_s = seal_interval_s
        self.seal_rows = seal_rows
        self.listeners: list[CommitListener] = []
        self.stats = WriterStats()
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._pending_bytes = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._stop_sealer = threading.Event()

    # ---- lifecycle

    def start(self) -> None:
        for target, name in (
            (self._commit_loop, "otelog-writer"),
            (self._seal_loop, "otelog-sealer"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Commit what is queued, seal, and stop. Nothing queued is dropped silently."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_sealer.set()
        for t in self._threads:
            t.join()
        self.store.seal()

    def replay(self, entries: list[tuple[WalEntry, LogBatch]]) -> int:
        """Put WAL entries (acknowledged before a restart) back into the memtable."""
        n = 0
        for e, batch in entries:
            base = e.seq << 24
            batch.log_id = list(range(base, base + len(batch)))
            self.store.add_fresh(e.tenant, batch, e.seq, e.receipt_ns, e.raw)
            n += len(batch)
        return n

    @property
    def pending_bytes(self) -> int:
        """Bytes of requests queued for the next group commit (read without the lock)."""
        return self._pending_bytes

    @property
    def pending_requests(self) -> int:
        return len(self._queue)

    # ---- submitting (event loop side)

    def _enqueue(self, p: _Pending) -> None:
        with self._cond:
            if self._stopping:
                raise Overloaded(1.0, "server is shutting down")
            if self._pending_bytes + p.size > self.max_pending_bytes and self._queue:
                raise Overloaded(0.5, "write queue full")
            self._queue.append(p)
            self._pending_bytes += p.size
            self._cond.notify()

    def submit_logs(
        self, tenant: str, batch: LogBatch, raw: bytes, receipt_ns: int
    ) -> Future[None]:
        """Queue a decoded request; the future resolves once it is durable."""
        fut: Future[None] = Future()
        self._enqueue(_Pending(tenant, fut, len(raw), logs=batch, raw=raw, receipt_ns=receipt_ns))
        return fut

    def submit_spans(self, tenant: str, spans: SpanBatch, size: int) -> Future[None]:
        fut: Future[None] = Future()
        self._enqueue(_Pending(tenant, fut, size, spans=spans))
        return fut

    async def write_logs(self, tenant: str, batch: LogBatch, raw: bytes, receipt_ns: int) -> None:
        await asyncio.wrap_future(self.submit_logs(tenant, batch, raw, receipt_ns))

    async def write_spans(self, tenant: str, spans: SpanBatch, size: int) -> None:
        await asyncio.wrap_future(self.submit_spans(tenant, spans, size))

    # ---- the writer thread

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                group, self._queue = self._queue, []
                self._pending_bytes -= sum(p.size for p in group)
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        t0 = time.perf_counter()
        log_items = [p for p in group if p.logs is not None]
        first = self.store.allocate_seqs(len(log_items)) if log_items else 0
        wal: list[WalEntry] = []
        spans: list[tuple[str, SpanBatch]] = []
        services: set[tuple[str, str]] = set()
        seqs: list[int] = []
        for i, p in enumerate(log_items):
            seq = first + i
            seqs.append(seq)
            wal.append(WalEntry(seq, fmt.WAL_LOGS, p.receipt_ns, p.tenant, p.raw))
            assert p.logs is not None
            services.update((p.tenant, r.service) for r in p.logs.resources)
        for p in group:
            if p.spans is not None:
                spans.append((p.tenant, p.spans))
                services.update((p.tenant, s) for s in set(p.spans.service))
        try:
            self.store.commit(wal, spans, services)
        except BaseException as e:
            log.exception("commit failed")
            for p in group:
                self._resolve(p, e)
            return
        for seq, p in zip(seqs, log_items, strict=True):
            batch = p.logs
            assert batch is not None
            base = seq << 24
            batch.log_id = list(range(base, base + len(batch)))
            self.store.add_fresh(p.tenant, batch, seq, p.receipt_ns, p.raw)
        visible_ns = time.time_ns()
        for p in log_items:
            metrics.TIME_TO_SEARCHABLE.observe(max(0, visible_ns - p.receipt_ns) / 1e9)
        for p in group:
            self._resolve(p, None)
        for p in log_items:
            assert p.logs is not None
            for listener in self.listeners:
                try:
                    listener(p.tenant, p.logs)
                except Exception:
                    log.exception("commit listener failed")
        self.stats.commits += 1
        self.stats.committed_records += sum(len(p.logs) for p in log_items if p.logs is not None)
        self.stats.commit_seconds.append(elapsed := time.perf_counter() - t0)
        metrics.COMMIT_SECONDS.observe(elapsed)
        if len(self.stats.commit_seconds) > 10_000:
            del self.stats.commit_seconds[:5000]

    @staticmethod
    def _resolve(p: _Pending, err: BaseException | None) -> None:
        if p.future.done():
            return
        if err is None:
            p.future.set_result(None)
        else:
            p.future.set_exception(err)

    # ---- the sealer thread

    def _seal_loop(self) -> None:
        # its own event: sharing the writer's condition would let a notify meant for the
        # committer wake the sealer instead, leaving a request waiting
        last_compaction = time.monotonic()
        while not self._stop_sealer.wait(0.05):
            if time.monotonic() - last_compaction > 30:
                last_compaction = time.monotonic()
                try:
                    self.store.compact_wal()
                except Exception:  # noqa: BLE001 - disk reclaim can wait for the next round
                    log.exception("WAL compaction failed")
            rows, age = self.store.fresh_stats()
            if rows >= self.seal_rows or (rows and age >= self.seal_interval_s):
                try:
                    self.store.seal()
                except Exception:
                    log.exception("seal failed")
