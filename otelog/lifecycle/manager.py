"""The lifecycle thread: merges, GDPR erasure, retention and tiering to object storage.

Runs beside ingestion, never in its way: it only replaces whole segments through the
store's atomic catalog swap, holding `store.rewrite_lock` (which merges hold too) so
each decision sees a current catalog. Object storage being down fails a pass with a
logged error and a metric; nothing is deleted until its replacement is durable.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pyroaring import BitMap

from otelog.errors import InvalidArgument
from otelog.lifecycle.objstore import Destination, ObjectStore
from otelog.lifecycle.retention import (
    DEFAULT,
    Action,
    RetentionPolicy,
    assign,
    may_act,
    next_change,
    ordered,
    plan_segment,
    policy_prefix,
)
from otelog.model import DEFAULT_TENANT
from otelog.query.execute import Searcher, hidden_by
from otelog.query.parser import parse
from otelog.query.rows import row_from_batch
from otelog.store import format as fmt
from otelog.store.bloom import TraceBloom
from otelog.store.cold import (
    ColdSegmentReader,
    ColdSource,
    DiskCache,
    object_of_segment,
    split_uri,
)
from otelog.store.deletions import ERASED, ERASING, PENDING, DeletionRequest
from otelog.store.merge import merge_segments
from otelog.store.segment import SegmentData, SegmentMeta, SegmentReader
from otelog.store.store import SegmentGone, Store

log = logging.getLogger(__name__)


@dataclass
class LifecycleStats:
    """Counters for /metrics (lifecycle/figures.py)."""

    tiered_segments: int = 0
    tiered_rows: int = 0
    tiered_bytes: int = 0
    expired_rows: int = 0
    expired_spans: int = 0
    errors: int = 0
    last_error: str = ""


def _object_name(meta: SegmentMeta) -> str:
    """Where under its destination a cold segment's object goes."""
    day = datetime.fromtimestamp(meta.min_ts / 1e9, UTC).strftime("%Y-%m-%d")
    return f"{meta.tenant}/{day}/{meta.id:016x}.seg"


class LifecycleManager:
    def __init__(
        self,
        store: Store,
        objects: ObjectStore | None,
        default_policy: RetentionPolicy,
        cold_cache: DiskCache | None = None,
        erase_deadline_s: float = 24 * 3600,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.objects = objects
        self.default_policy = replace(default_policy, name=DEFAULT, query="")
        self.erase_deadline_ns = int(erase_deadline_s * 1e9)
        self.clock = clock
        self.stats = LifecycleStats()
        self._pass_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweep_interval_s = 6 * 3600.0
        self.span_expiry_interval_s = 6 * 3600.0
        self._last_span_expiry = float("-inf")
        # policies per tenant as last planned with; a change plans every segment again
        self._policy_version: dict[str, tuple[object, ...]] = {}
        self._policy_epoch = 0
        self._last_sweep = time.monotonic()
        store.cold.fetcher = objects
        store.cold.cache = cold_cache
        if objects is not None:
            store.cold_deleter = self._delete_object

    # ---- policies

    def policies(self, tenant: str = DEFAULT_TENANT) -> list[RetentionPolicy]:
        """Every policy in matching order, the default last."""
        stored = [
            RetentionPolicy.decode(v)
            for _, v in self.store.db.scan_prefix(fmt.CF_META, policy_prefix(tenant))
        ]
        return ordered(stored, self.default_policy)

    def set_policy(self, policy: RetentionPolicy, tenant: str = DEFAULT_TENANT) -> RetentionPolicy:
        policy.validate()
        key = policy_prefix(tenant) + policy.name.encode()
        self.store.db.write_one(fmt.CF_META, key, policy.encode(), sync=True)
        return policy

    def delete_policy(self, name: str, tenant: str = DEFAULT_TENANT) -> bool:
        key = policy_prefix(tenant) + name.encode()
        if self.store.db.get(fmt.CF_META, key) is None:
            return False
        self.store.db.write_one(fmt.CF_META, key, None, sync=True)
        return True

    # ---- deletion requests

    def delete_logs(
        self, query: str, tenant: str = DEFAULT_TENANT, with_traces: bool = False
    ) -> DeletionRequest:
        """Record a tombstone: from return on, no read path shows a matching record
        committed before it. Counts what it hides; erasure follows in the background.
        `with_traces`: the spans of every trace a matched record belongs to go too."""
        if not query.strip():
            raise InvalidArgument("a deletion needs a query; an empty one would match everything")
        parse(query)
        now = self.clock()
        query_sha = hashlib.sha256(query.encode()).hexdigest()
        d = DeletionRequest(
            id=uuid.uuid4().hex,
            tenant=tenant,
            query=query,
            now_ns=time.time_ns(),
            max_log_id=self.store.max_committed_log_id(),
            created_ns=now,
            deadline_ns=now + self.erase_deadline_ns,
            query_sha256=query_sha,
            with_traces=with_traces,
        )
        self.store.put_deletion(d)
        try:
            d.matched, traces = self._count_hidden(d)
            if with_traces:
                d.traces = sorted(t.hex() for t in traces)
        except Exception as e:  # noqa: BLE001 - hidden regardless; the erase pass recounts
            d.error = f"matched count incomplete: {e}"
        self.store.put_deletion(d)
        return d

    def deletion(self, request_id: str, tenant: str = DEFAULT_TENANT) -> DeletionRequest | None:
        return next((d for d in self.store.deletions(tenant) if d.id == request_id), None)

    def overdue(self) -> list[DeletionRequest]:
        now = self.clock()
        return [d for d in self.store.deletions() if d.state != ERASED and d.deadline_ns < now]

    def _count_hidden(self, d: DeletionRequest) -> tuple[int, set[bytes]]:
        """How many records the request hides, and (with_traces) their trace ids."""
        searcher = Searcher(self.store, d.tenant)
        mine = [t for t in searcher.tombstones if t.id == d.id]
        snap = self.store.snapshot(d.tenant)
        n = 0
        traces: set[bytes] = set()
        for seg in snap.segments:
            if not seg.meta.rows:
                continue
            rows = searcher.hidden_rows(seg, mine)
            n += len(rows)
            if d.with_traces:
                for r in rows.to_array().tolist():
                    tid = searcher.segment_row(seg, r).trace_id
                    if tid:
                        traces.add(bytes.fromhex(tid))
        for b in snap.fresh:
            for i in range(len(b)):
                row = row_from_batch(b, i, searcher.resources)
                if hidden_by(mine, row):
                    n += 1
                    if d.with_traces and b.trace_id[i]:
                        traces.add(b.trace_id[i])
        return n, traces

    # ---- the passes

    def start(
        self,
        merge_interval_s: float = 1.0,
        pass_interval_s: float = 60.0,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """The background thread. While `busy()` (ingestion under pressure) it merges and
        moves nothing: those compete for the cores the receivers and the sealer need."""

        def loop() -> None:
            last_pass = 0.0
            while not self._stop.wait(merge_interval_s):
                if busy():
                    continue
                try:
                    while not self._stop.is_set() and not busy() and self.store.merge_once():
                        pass
                    self.store.collect_garbage()
                    if time.monotonic() - last_pass >= pass_interval_s:
                        last_pass = time.monotonic()
                        self.run_pass()
                except Exception as e:  # noqa: BLE001 - logged and counted; next round retries
                    self.stats.errors += 1
                    self.stats.last_error = str(e)
                    log.exception("lifecycle pass failed")

        self._thread = threading.Thread(target=loop, name="otelog-lifecycle", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def run_pass(self) -> None:
        """Erase, then retention and tiering, then finish erasures whose bytes are gone."""
        with self._pass_lock:
            errors: list[str] = []
            for step in (self._erase_pass, self._retention_pass):
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - one failing step must not stop the other
                    errors.append(f"{step.__name__}: {e}")
                    log.warning("lifecycle %s failed: %s", step.__name__, e)
            self.store.collect_garbage()
            self._finish_erasures()
            if time.monotonic() - self._last_span_expiry > self.span_expiry_interval_s:
                self._last_span_expiry = time.monotonic()
                self.expire_spans()
            if time.monotonic() - self._last_sweep > self.sweep_interval_s:
                self._last_sweep = time.monotonic()
                try:
                    self.sweep_orphans()
                except Exception as e:  # noqa: BLE001 - storage only; next sweep retries
                    errors.append(f"sweep: {e}")
            if errors:
                self.stats.errors += len(errors)
                self.stats.last_error = "; ".join(errors)
                raise RuntimeError(self.stats.last_error)

    # ---- erasure

    def _erase_pass(self) -> None:
        todo = [d for d in self.store.deletions() if d.state in (PENDING, ERASING)]
        if not todo:
            return
        self.store.seal()  # records still in memtables (and the WAL) become segments
        by_id = {d.id: d for d in todo}
        failures: list[str] = []
        for tenant in {d.tenant for d in todo}:
            with self.store.rewrite_lock:
                searcher = Searcher(self.store, tenant)
                active = [t for t in searcher.tombstones if t.id in by_id]
                if not active:
                    continue
                for seg in self.store.all_segments().get(tenant, []):
                    if not seg.meta.rows or self._stop.is_set():
                        continue
                    per = [(t, searcher.hidden_rows(seg, [t])) for t in active]
                    hidden = BitMap.union(*(bm for _, bm in per))
                    if not hidden:
                        continue
                    try:
                        new = self._rewrite(seg, [seg.all_rows() - hidden])
                    except SegmentGone:
                        continue  # replaced meanwhile; the next pass sees its successor
                    except Exception as e:  # noqa: BLE001 - the others go on; retried next pass
                        failures.append(f"segment {seg.meta.id:016x}: {e}")
                        continue
                    entry = {
                        "segment": f"{seg.meta.id:016x}",
                        "object": seg.meta.cold,
                        "replacedBy": [r.meta.cold or f"{r.meta.id:016x}" for r in new],
                        "at": _iso(self.clock()),
                    }
                    for t, bm in per:
                        if bm:
                            d = by_id[t.id]
                            d.rewritten.append({**entry, "records": len(bm)})
                            d.erased += len(bm)
                for t in active:
                    d = by_id[t.id]
                    for tid in sorted(t.traces):
                        n = self.store.delete_trace_spans(tenant, tid)
                        if n:
                            d.rewritten.append(
                                {"spansOfTrace": tid.hex(), "rows": n, "at": _iso(self.clock())}
                            )
                garbage = sorted(f"{i:016x}" for i in self.store.garbage_ids())
                for d in todo:
                    if d.tenant == tenant:
                        d.state = ERASING
                        d.matched = max(d.matched, d.erased)
                        d.pending_gc = garbage
                        d.error = "; ".join(failures)
                        self.store.put_deletion(d)
        if failures:
            raise RuntimeError(f"{len(failures)} rewrites failed, retried next pass: {failures[0]}")

    def _finish_erasures(self) -> None:
        erasing = [d for d in self.store.deletions() if d.state == ERASING]
        if not erasing:
            return
        left = {f"{i:016x}" for i in self.store.garbage_ids()}
        for d in erasing:
            if set(d.pending_gc) & left:
                continue  # old bytes still kept for in-flight queries, or an object to delete
            searcher = Searcher(self.store, d.tenant)
            mine = [t for t in searcher.tombstones if t.id == d.id]
            snap = self.store.snapshot(d.tenant)
            if any(searcher.hidden_rows(s, mine) for s in snap.segments if s.meta.rows):
                continue  # rows that reached a segment after the pass: next pass
            # the old segments' keys and the erased records' WAL entries are deleted;
            # compaction makes their bytes go from the SST files too
            self.store.erase_now()
            d.state = ERASED
            # every row it hid is gone now, some perhaps by retention or by a job whose
            # receipt a crash lost
            d.erased = max(d.erased, d.matched)
            d.erased_ns = self.clock()
            d.pending_gc = []
            d.query_sha256 = hashlib.sha256(d.query.encode()).hexdigest()
            d.query = ""
            d.traces = []
            d.error = ""
            self.store.put_deletion(d)
            # older versions of the request's own key still name the query until compacted
            self.store.db.flush()
            self.store.db.compact(fmt.CF_META)

    # ---- retention and tiering

    def _retention_pass(self) -> None:
        for tenant, segs in self.store.all_segments().items():
            policies = self.policies(tenant)
            now = self.clock()
            version = tuple(
                (p.name, p.query, p.hot_ns, p.total_ns, p.destination) for p in policies
            )
            if version != self._policy_version.get(tenant):
                self._policy_version[tenant] = version
                self._policy_epoch += 1  # every kept segment is planned again
            todo = [
                s
                for s in segs
                if s.meta.rows and self._next_check(s) <= now and may_act(s, policies, now)
            ]
            todo.sort(key=lambda s: s.meta.min_ts)
            searcher = Searcher(self.store, tenant)
            for seg in todo:
                if self._stop.is_set():
                    return  # shutting down: the rest waits for the next start
                with self.store.rewrite_lock:
                    try:
                        self._apply_policies(searcher, seg, policies)
                    except SegmentGone:
                        continue

    def _apply_policies(
        self, searcher: Searcher, seg: SegmentReader, policies: list[RetentionPolicy]
    ) -> None:
        if searcher.tombstones and not seg.meta.cold and searcher.hidden_rows(seg):
            return  # erase first: rows under a tombstone must not be copied to a bucket
        groups = assign(searcher, seg, policies)
        plan = plan_segment(
            seg, groups, self.clock(), self.default_destination, self.objects is not None
        )
        if plan.action is Action.KEEP:
            # nothing changes for this segment before its next row crosses a boundary
            seg.derived[("next_check", self._policy_epoch)] = next_change(seg, groups, self.clock())
            return
        if plan.action in (Action.DROP, Action.EXPIRE):
            self._rewrite(seg, plan.keeps)
            self.stats.expired_rows += plan.expired
        elif plan.action is Action.SPLIT:
            # decide on the pieces now, under the same lock: a merge in between would
            # join them again
            for piece in self._rewrite(seg, plan.keeps):
                sub = plan_segment(
                    piece,
                    assign(searcher, piece, policies),
                    self.clock(),
                    self.default_destination,
                    True,
                )
                if sub.action is Action.TIER:
                    self._tier(piece, Destination.parse(sub.destination))
        elif plan.action is Action.TIER:
            self._tier(seg, Destination.parse(plan.destination))

    def _next_check(self, seg: SegmentReader) -> int:
        """Clock time before which a kept segment's plan cannot change (0: plan it now)."""
        t = seg.derived.get(("next_check", self._policy_epoch), 0)
        return t if isinstance(t, int) else 0

    @property
    def default_destination(self) -> str:
        return self.default_policy.destination

    def _tier(self, seg: SegmentReader, dest: Destination) -> SegmentReader:
        assert self.objects is not None
        (nid,) = self.store.new_ids_after(seg, 1)
        meta = replace(seg.meta, id=nid)
        terms = seg.terms()
        data = object_of_segment(seg, meta, terms)
        uri = self._upload(dest, meta, data)
        cold = replace(meta, cold=uri, cold_bytes=len(data), nbytes=len(data))
        bloom = _trace_bloom(terms)
        (reader,) = self.store.replace_segments(
            seg.meta.tenant, [seg], [], [cold], {cold.id: bloom}
        )
        self.stats.tiered_segments += 1
        self.stats.tiered_rows += seg.meta.rows
        self.stats.tiered_bytes += len(data)
        return reader

    def _upload(self, dest: Destination, meta: SegmentMeta, data: bytes) -> str:
        assert self.objects is not None
        key = dest.key(_object_name(meta))
        self.objects.put(dest.bucket, key, data)  # verified against the server's ETag
        return f"s3://{dest.bucket}/{key}"

    def _rewrite(self, seg: SegmentReader, keeps: list[BitMap]) -> list[SegmentReader]:
        """Replace a segment by the segments of the rows in `keeps` (none: drop it)."""
        if not seg.meta.cold:
            return self.store.rewrite(seg, keeps)
        assert isinstance(seg, ColdSegmentReader) and self.objects is not None
        keeps = [k for k in keeps if k]
        if not keeps:
            return self.store.replace_segments(seg.meta.tenant, [seg], [], [])
        bucket, key = split_uri(seg.meta.cold)
        whole = ColdSource.of_bytes(seg.meta.cold, self.objects.get(bucket, key))
        src = ColdSegmentReader(whole, seg.meta)
        # the replacements go where the object is: its key less its own name
        dest = Destination(bucket, key[: len(key) - len(_object_name(seg.meta))])
        metas = []
        blooms = {}
        for nid, keep in zip(self.store.new_ids_after(seg, len(keeps)), keeps, strict=True):
            built = merge_segments(seg.meta.tenant, nid, [src], [keep])
            piece = SegmentReader(SegmentData.of_built(built), built.meta)
            terms = piece.terms()
            data = object_of_segment(piece, None, terms)
            uri = self._upload(dest, built.meta, data)
            metas.append(replace(built.meta, cold=uri, cold_bytes=len(data), nbytes=len(data)))
            blooms[nid] = _trace_bloom(terms)
        return self.store.replace_segments(seg.meta.tenant, [seg], [], metas, blooms)

    def _delete_object(self, uri: str) -> None:
        assert self.objects is not None
        bucket, key = split_uri(uri)
        self.objects.delete_all_versions(bucket, key)
        if self.store.cold.cache is not None:
            self.store.cold.cache.forget(uri)

    # ---- spans

    def expire_spans(self) -> int:
        """Spans stay in RocksDB as long as the longest retention of a tenant's policies
        (a log record kept that long can still open its trace), then go."""
        n = 0
        for tenant in self.store.tenants():
            longest = max(p.total_ns for p in self.policies(tenant))
            n += self.store.expire_spans(tenant, self.clock() - longest)
        self.stats.expired_spans += n
        return n

    # ---- objects nothing points at

    def sweep_orphans(self, min_age_s: float = 3600.0) -> list[str]:
        """Delete segment objects that no catalog entry names: uploads whose catalog swap a
        crash prevented. Only objects older than `min_age_s`, so an upload about to be
        recorded is never taken. Returns the URIs deleted."""
        if self.objects is None:
            return []
        known: set[str] = set()
        tenants = set()
        for tenant, segs in self.store.all_segments().items():
            tenants.add(tenant)
            known.update(s.meta.cold for s in segs if s.meta.cold)
        known |= self.store.garbage_uris()
        dests = {self.default_destination}
        for tenant in tenants:
            dests.update(p.destination for p in self.policies(tenant) if p.destination)
        cutoff = time.time() - min_age_s
        gone = []
        for text in sorted(dests):
            dest = Destination.parse(text)
            for tenant in sorted(tenants):
                prefix = dest.key(f"{tenant}/")
                for key, _size, modified in self.objects.list_dated(dest.bucket, prefix):
                    uri = f"s3://{dest.bucket}/{key}"
                    if key.endswith(".seg") and uri not in known and modified < cutoff:
                        self._delete_object(uri)
                        gone.append(uri)
        if gone:
            log.info("deleted %d segment objects no catalog entry named", len(gone))
        return gone

    # ---- reporting

    def cold_totals(self) -> tuple[int, int, int]:
        """(segments, rows, bytes) in object storage."""
        n = rows = size = 0
        for segs in self.store.all_segments().values():
            for s in segs:
                if s.meta.cold:
                    n += 1
                    rows += s.meta.rows
                    size += s.meta.cold_bytes
        return n, rows, size


def _trace_bloom(terms: list[bytes]) -> TraceBloom:
    return TraceBloom.build([t[1:] for t in terms if t[:1] == fmt.T_TRACE])


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")
