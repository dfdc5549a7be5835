"""The store: RocksDB, the segment catalog, the memtable, postings and spans.

Writes come from one writer (group commit) and one sealer; reads take a snapshot
(`Snapshot`) of the catalog and the memtables and never block writers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pyroaring import BitMap

from otelog.model import LogBatch, SpanBatch
from otelog.store import format as fmt
from otelog.store.bloom import TraceBloom
from otelog.store.cold import ColdAccess, ColdSegmentReader, ColdSource
from otelog.store.db import Database
from otelog.store.deletions import DeletionRequest, deletion_key, deletion_prefix
from otelog.store.memtable import Memtable
from otelog.store.merge import merge_segments, pick_merge, segment_keys
from otelog.store.scan_cache import ScanCache
from otelog.store.segment import BuiltSegment, SegmentMeta, SegmentReader, build_segment

log = logging.getLogger(__name__)

NEXT_SEQ_KEY = b"next_seq"
GC_PREFIX = b"gc/"


def _gc_key(meta: SegmentMeta) -> bytes:
    return GC_PREFIX + fmt.catalog_key(meta.tenant, meta.id)


SegmentBuilder = Callable[[str, int, Memtable], BuiltSegment]
# (tenant, new id, inputs, rows to keep of each input or None for all)
SegmentMerger = Callable[[str, int, list[SegmentReader], list[BitMap | None] | None], BuiltSegment]


class SegmentGone(Exception):
    """A segment to rewrite was merged, tiered or rewritten meanwhile: plan again."""


def build_in_process(tenant: str, seg_id: int, memtable: Memtable) -> BuiltSegment:
    return build_segment(tenant, seg_id, memtable.batches)


@dataclass
class WalEntry:
    seq: int
    kind: int
    receipt_ns: int
    tenant: str
    raw: bytes


@dataclass
class Snapshot:
    """What a query sees: sealed segments and the batches not yet sealed."""

    segments: list[SegmentReader]
    fresh: list[LogBatch]


class Store:
    def __init__(self, path: str, scan_cache_bytes: int = 256 << 20) -> None:
        self.db = Database(path)
        self.segment_builder: SegmentBuilder = build_in_process
        self.segment_merger: SegmentMerger = merge_segments
        self.scan_cache = ScanCache(scan_cache_bytes)
        self._lock = threading.RLock()
        self._seal_lock = threading.Lock()
        self._segments: dict[str, dict[int, SegmentReader]] = {}
        self._active: dict[str, Memtable] = {}
        self._sealing: list[Memtable] = []
        self._services: dict[str, set[str]] = {}
        self._last_seg_id = 0
        self._merge_lock = threading.Lock()
        self._garbage: list[tuple[float, list[SegmentReader]]] = []
        self._unsealed_rows = 0  # counters for unsealed(), changed under _lock
        self._unsealed_bytes = 0
        # seconds a replaced segment's bytes stay for queries that took a snapshot before
        self.gc_grace_s = 60.0
        self.post_compact_s = 600.0
        self._last_post_compaction = 0.0
        # object storage for cold segments; the lifecycle fills it in
        self.cold = ColdAccess()
        self.cold_deleter: Callable[[str], None] | None = None
        # the query layer's parsed tombstones, by deletion request id
        self.query_cache: dict[object, object] = {}
        self._deletions: dict[str, dict[str, DeletionRequest]] = {}
        self._blooms: dict[int, TraceBloom | None] = {}
        self._load_catalog()
        self._collect_orphans()
        self._next_seq = self._recover_next_seq()

    # ---- opening

    def reader(self, meta: SegmentMeta) -> SegmentReader:
        if meta.cold:
            return ColdSegmentReader(ColdSource(meta.cold, meta.cold_bytes, self.cold), meta)
        return SegmentReader(self.db, meta)

    def _load_catalog(self) -> None:
        for _key, value in self.db.scan_prefix(fmt.CF_META, b"seg/"):
            meta = SegmentMeta.decode(value)
            self._segments.setdefault(meta.tenant, {})[meta.id] = self.reader(meta)
            self._last_seg_id = max(self._last_seg_id, meta.id)
        for _key, value in self.db.scan_prefix(fmt.CF_META, deletion_prefix()):
            d = DeletionRequest.decode(value)
            self._deletions.setdefault(d.tenant, {})[d.id] = d
        for key, _ in self.db.scan_prefix(fmt.CF_META, b"svc/"):
            n = key[4]
            tenant = key[5 : 5 + n].decode()
            self._services.setdefault(tenant, set()).add(key[5 + n :].decode())

    def _collect_orphans(self) -> None:
        """Segments merged away before a crash: their catalog entry is gone, data remains."""
        for key, value in list(self.db.scan_prefix(fmt.CF_META, GC_PREFIX)):
            meta = SegmentMeta.decode(value)
            if meta.cold:
                # its object goes once object storage is reachable (collect_garbage)
                self._garbage.append((0.0, [self.reader(meta)]))
            else:
                self._delete_segment_data(SegmentReader(self.db, meta), key)

    def _recover_next_seq(self) -> int:
        stored = self.db.get(fmt.CF_META, NEXT_SEQ_KEY)
        nxt = int.from_bytes(stored, "big") if stored else 1
        for key, _ in self.db.scan_prefix(fmt.CF_WAL, b""):
            nxt = max(nxt, fmt.wal_seq(key) + 1)
        return nxt

    def wal_entries(self) -> Iterator[WalEntry]:
        """Requests acknowledged but not yet sealed; replayed into the memtable on start."""
        for key, value in self.db.scan_prefix(fmt.CF_WAL, b""):
            kind, receipt_ns, tenant, raw = fmt.decode_wal_value(value)
            yield WalEntry(fmt.wal_seq(key), kind, receipt_ns, tenant, raw)

    # ---- writing

    def allocate_seqs(self, n: int) -> int:
        """First of `n` consecutive WAL sequence numbers (writer thread only)."""
        first = self._next_seq
        self._next_seq += n
        return first

    def commit(
        self,
        wal: list[WalEntry],
        spans: list[tuple[str, SpanBatch]],
        services: set[tuple[str, str]],
    ) -> None:
        """One synced WriteBatch for everything the writer gathered (group commit)."""
        wb = self.db.batch()
        for e in wal:
            self.db.put(
                wb,
                fmt.CF_WAL,
                fmt.wal_key(e.seq),
                fmt.encode_wal_value(e.kind, e.receipt_ns, e.tenant, e.raw),
            )
        for tenant, sb in spans:
            res = sb.resources
            for i in range(len(sb)):
                r = res[sb.res[i]]
                self.db.put(
                    wb,
                    fmt.CF_SPANS,
                    fmt.span_key(tenant, sb.trace_id[i], sb.start_ns[i], sb.span_id[i]),
                    fmt.encode_span_value(sb.service[i], r.resource_pb, r.scope_pb, sb.span_pb[i]),
                )
        new_services = []
        with self._lock:
            for tenant, svc in services:
                if svc not in self._services.get(tenant, ()):
                    new_services.append((tenant, svc))
        for tenant, svc in new_services:
            self.db.put(wb, fmt.CF_META, fmt.service_key(tenant, svc), b"")
        self.db.write(wb, sync=True)
        with self._lock:
            for tenant, svc in new_services:
                self._services.setdefault(tenant, set()).add(svc)

    def add_fresh(
        self, tenant: str, batch: LogBatch, wal_seq: int, receipt_ns: int, raw: bytes
    ) -> None:
        """Make a committed batch searchable at once."""
        with self._lock:
            mt = self._active.get(tenant)
            if mt is None:
                mt = self._active[tenant] = Memtable(tenant)
            mt.add(batch, wal_seq, receipt_ns, raw)
            self._unsealed_rows += len(batch)
            self._unsealed_bytes += len(raw)

    def fresh_stats(self) -> tuple[int, float]:
        with self._lock:
            rows = sum(m.rows for m in self._active.values())
            age = max((m.age() for m in self._active.values() if m.rows), default=0.0)
        return rows, age

    def unsealed(self) -> tuple[int, int]:
        """(rows, request bytes) committed but not yet in a segment: the active memtables
        and the ones being sealed, all held in memory."""
        return self._unsealed_rows, self._unsealed_bytes

    def _new_seg_id(self) -> int:
        # time-ordered and unique: ms since the epoch in the high bits
        sid = max(int(time.time() * 1000) << 16, self._last_seg_id + 1)
        self._last_seg_id = sid
        return sid

    def seal(self) -> int:
        """Turn the active memtables into segments. Returns the number of rows sealed."""
        with self._seal_lock:
            with self._lock:
                todo = [m for m in self._active.values() if m.rows]
                for m in todo:
                    del self._active[m.tenant]
                    self._sealing.append(m)
            sealed = 0
            for m in todo:
                with self._lock:
                    seg_id = self._new_seg_id()
                built = self.segment_builder(m.tenant, seg_id, m)
                wb = self.db.batch()
                for k, v in built.columns:
                    self.db.put(wb, fmt.CF_COLS, k, v)
                for k, v in built.postings:
                    self.db.put(wb, fmt.CF_POST, k, v)
                self.db.put(wb, fmt.CF_META, fmt.catalog_key(m.tenant, seg_id), built.meta.encode())
                for seq in m.wal_seqs:
                    self.db.delete(wb, fmt.CF_WAL, fmt.wal_key(seq))
                self.db.put(wb, fmt.CF_META, NEXT_SEQ_KEY, (max(m.wal_seqs) + 1).to_bytes(8, "big"))
                # not synced: the WAL entries it deletes are durable until this batch is,
                # and RocksDB applies the whole batch or none of it
                self.db.write(wb, sync=False)
                reader = SegmentReader(self.db, built.meta)
                with self._lock:
                    self._segments.setdefault(m.tenant, {})[seg_id] = reader
                    self._sealing.remove(m)
                    self._unsealed_rows -= m.rows
                    self._unsealed_bytes -= sum(len(raw) for _, _, raw in m.requests)
                sealed += m.rows
            return sealed

    # ---- merging

    def merge_once(
        self,
        small_rows: int = 200_000,
        fanin: int = 8,
        max_rows: int = 1_000_000,
        grace_s: float | None = None,
    ) -> int:
        """Merge one run of small segments, if there is one. Returns the rows merged."""
        with self._merge_lock:
            with self._lock:
                tenants = {
                    t: [s for s in segs.values() if not s.meta.cold]
                    for t, segs in self._segments.items()
                }
            for tenant, segs in tenants.items():
                run = pick_merge(segs, small_rows, fanin, max_rows)
                if not run:
                    continue
                with self._lock:
                    seg_id = self._new_seg_id()
                built = self.segment_merger(tenant, seg_id, run, None)
                # not synced: a merge lost in a crash leaves its inputs, which still hold
                # every row, and nothing deletes them before this write is on disk
                self.replace_segments(tenant, run, [built], [], sync=False, grace_s=grace_s)
                return built.meta.rows
            return 0

    def collect_garbage(self, force: bool = False) -> int:
        """Delete the data of merged-away segments once no query can still read them."""
        now = time.monotonic()
        with self._lock:
            due = [g for g in self._garbage if force or g[0] <= now]
            self._garbage = [g for g in self._garbage if g not in due]
        gone = [s for _, segs in due for s in segs]
        hot = [s for s in gone if not s.meta.cold]
        for s in hot:
            self._delete_segment_data(s, _gc_key(s.meta))
        failed = [s for s in gone if s.meta.cold and not self._delete_cold(s)]
        if failed:
            with self._lock:
                self._garbage.append((now + 30.0, failed))
        if hot:
            self.compact_deleted(hot)
        return len(gone) - len(failed)

    def _delete_cold(self, s: SegmentReader) -> bool:
        """Delete a replaced cold segment's object, then its gc key and trace filter.
        False when object storage refused: the gc key stays and it is retried."""
        try:
            if self.cold_deleter is None:
                raise RuntimeError("no object storage configured")
            self.cold_deleter(s.meta.cold)
        except Exception as e:  # noqa: BLE001 - retried next round
            log.warning("cannot delete %s yet: %s", s.meta.cold, e)
            return False
        wb = self.db.batch()
        self.db.delete(wb, fmt.CF_META, _gc_key(s.meta))
        self.db.delete(wb, fmt.CF_META, fmt.bloom_key(s.meta.tenant, s.meta.id))
        self.db.write(wb, sync=False)
        with self._lock:
            self._blooms.pop(s.meta.id, None)
        return True

    def may_hold_trace(self, seg: SegmentReader, trace_id: bytes) -> bool:
        """False only when a cold segment's filter rules the trace out."""
        if not seg.meta.cold:
            return True
        bloom = self.trace_bloom(seg)
        return bloom is None or bloom.may_contain(trace_id)

    def trace_bloom(self, seg: SegmentReader) -> TraceBloom | None:
        """The trace-id filter of a cold segment; None when it has none (then ask it)."""
        with self._lock:
            if seg.meta.id in self._blooms:
                return self._blooms[seg.meta.id]
        raw = self.db.get(fmt.CF_META, fmt.bloom_key(seg.meta.tenant, seg.meta.id))
        bloom = TraceBloom.decode(raw) if raw is not None else None
        with self._lock:
            self._blooms[seg.meta.id] = bloom
        return bloom

    def garbage_uris(self) -> set[str]:
        """Objects of replaced cold segments not deleted yet."""
        with self._lock:
            return {s.meta.cold for _, segs in self._garbage for s in segs if s.meta.cold}

    def garbage_ids(self) -> set[int]:
        """Ids of replaced segments whose bytes are not gone yet."""
        with self._lock:
            return {s.meta.id for _, segs in self._garbage for s in segs}

    # ---- rewriting: expiry, erasure, tiering

    def _free_id_after(self, seg_id: int, taken: set[int]) -> int:
        # ids are ms << 16: a replacement sorts right after the segment it replaces, so
        # time order (what merges and pruning rely on) is kept
        nid = seg_id + 1
        while nid in taken:
            nid += 1
        taken.add(nid)
        self._last_seg_id = max(self._last_seg_id, nid)
        return nid

    def new_ids_after(self, seg: SegmentReader, n: int) -> list[int]:
        """`n` unused segment ids for the replacements of `seg`."""
        with self._lock:
            taken = {i for segs in self._segments.values() for i in segs}
            taken |= {s.meta.id for _, g in self._garbage for s in g}
            return [self._free_id_after(seg.meta.id, taken) for _ in range(n)]

    def rewrite(self, seg: SegmentReader, keeps: list[BitMap]) -> list[SegmentReader]:
        """Replace a hot segment by one segment per bitmap of `keeps` (its rows to keep);
        no bitmap (or only empty ones) drops the segment. The caller holds `rewrite_lock`."""
        keeps = [k for k in keeps if k]
        ids = self.new_ids_after(seg, len(keeps))
        built = [
            self.segment_merger(seg.meta.tenant, nid, [seg], [k])
            for nid, k in zip(ids, keeps, strict=True)
        ]
        return self.replace_segments(seg.meta.tenant, [seg], built, [])

    def replace_segments(
        self,
        tenant: str,
        old: list[SegmentReader],
        hot: list[BuiltSegment],
        cold: list[SegmentMeta],
        blooms: dict[int, TraceBloom] | None = None,
        sync: bool = True,
        grace_s: float | None = None,
    ) -> list[SegmentReader]:
        """Swap segments in one atomic catalog write: the new hot segments' data and the
        new cold segments' catalog entries in, the old entries out. The old bytes stay for
        `gc_grace_s` for queries that took a snapshot before. The caller holds
        `rewrite_lock`, so no merge replaced `old` meanwhile."""
        with self._lock:
            catalog = self._segments.get(tenant, {})
            for s in old:
                if catalog.get(s.meta.id) is not s:
                    raise SegmentGone(f"segment {s.meta.id:x} was replaced meanwhile")
        wb = self.db.batch()
        for b in hot:
            for k, v in b.columns:
                self.db.put(wb, fmt.CF_COLS, k, v)
            for k, v in b.postings:
                self.db.put(wb, fmt.CF_POST, k, v)
            self.db.put(wb, fmt.CF_META, fmt.catalog_key(tenant, b.meta.id), b.meta.encode())
        for m in cold:
            self.db.put(wb, fmt.CF_META, fmt.catalog_key(tenant, m.id), m.encode())
            bloom = (blooms or {}).get(m.id)
            if bloom is not None:
                self.db.put(wb, fmt.CF_META, fmt.bloom_key(tenant, m.id), bloom.encode())
        for s in old:
            self.db.delete(wb, fmt.CF_META, fmt.catalog_key(tenant, s.meta.id))
            self.db.put(wb, fmt.CF_META, _gc_key(s.meta), s.meta.encode())
        # synced by default: the old bytes may be erased right after this (GDPR), so the
        # catalog must never come back pointing at them
        self.db.write(wb, sync=sync)
        readers = [self.reader(b.meta) for b in hot] + [self.reader(m) for m in cold]
        with self._lock:
            catalog = self._segments.setdefault(tenant, {})
            for s in old:
                catalog.pop(s.meta.id, None)
            for r in readers:
                catalog[r.meta.id] = r
            grace = self.gc_grace_s if grace_s is None else grace_s
            self._garbage.append((time.monotonic() + grace, list(old)))
        for s in old:
            self.scan_cache.forget(s.meta.id)
        return readers

    @property
    def rewrite_lock(self) -> threading.Lock:
        """Held while segments are merged or rewritten, so each sees a current catalog."""
        return self._merge_lock

    def all_segments(self) -> dict[str, list[SegmentReader]]:
        with self._lock:
            return {t: list(segs.values()) for t, segs in self._segments.items()}

    # ---- deletion requests (GDPR)

    def put_deletion(self, d: DeletionRequest) -> None:
        """Record (synced: a tombstone must outlive a crash) and publish a request."""
        self.db.write_one(fmt.CF_META, deletion_key(d.tenant, d.id), d.encode(), sync=True)
        with self._lock:
            self._deletions.setdefault(d.tenant, {})[d.id] = d

    def deletions(self, tenant: str | None = None) -> list[DeletionRequest]:
        with self._lock:
            if tenant is not None:
                return list(self._deletions.get(tenant, {}).values())
            return [d for ds in self._deletions.values() for d in ds.values()]

    def max_committed_log_id(self) -> int:
        """Every record committed so far has a log id at most this (ids are seq << 24)."""
        return (self._next_seq << 24) - 1

    def compact_deleted(self, segments: list[SegmentReader]) -> None:
        """Have RocksDB drop deleted data now rather than whenever its levels fill up.

        Compaction runs in RocksDB's threads without the GIL; merged-away segments and
        sealed WAL entries are most of what it removes. A segment's columns are one key
        range, cheap to compact at once; its postings are keyed term-first, spread over the
        whole family, so that family is compacted whole only every `post_compact_s` (an
        erasure, which must see its bytes gone, calls `erase_now`).
        """
        for s in segments:
            lo = fmt.segment_columns_prefix(s.meta.tenant, s.meta.id)
            self.db.compact(fmt.CF_COLS, lo, fmt.prefix_end(lo))
        now = time.monotonic()
        if now - self._last_post_compaction >= self.post_compact_s:
            self._last_post_compaction = now
            self.db.compact(fmt.CF_POST)
            self.db.compact(fmt.CF_WAL)

    def erase_now(self) -> None:
        """Make deleted bytes go from disk now: memtables flushed (RocksDB's own log files
        go with them), then the families compacted whole."""
        self.db.flush()
        for cf in (fmt.CF_COLS, fmt.CF_POST, fmt.CF_WAL, fmt.CF_META):
            self.db.compact(cf)
        self._last_post_compaction = time.monotonic()

    def compact_wal(self) -> None:
        """Sealed WAL entries are tombstones until compacted; without this, requests that
        were flushed before their seal linger on disk."""
        self.db.compact(fmt.CF_WAL)

    def _delete_segment_data(self, seg: SegmentReader, gc_key: bytes) -> None:
        posts, lo, hi = segment_keys(seg)
        wb = self.db.batch()
        for k in posts:
            self.db.delete(wb, fmt.CF_POST, k)
        self.db.delete_range(wb, fmt.CF_COLS, lo, hi)
        self.db.delete(wb, fmt.CF_META, gc_key)
        self.db.write(wb, sync=False)

    # ---- reading

    def snapshot(self, tenant: str) -> Snapshot:
        with self._lock:
            segs = list(self._segments.get(tenant, {}).values())
            fresh = [b for m in self._sealing if m.tenant == tenant for b in m.batches]
            mt = self._active.get(tenant)
            if mt is not None:
                fresh += mt.batches
        return Snapshot(segs, fresh)

    def segment(self, tenant: str, seg_id: int) -> SegmentReader | None:
        with self._lock:
            return self._segments.get(tenant, {}).get(seg_id)

    def services(self, tenant: str) -> list[str]:
        with self._lock:
            return sorted(self._services.get(tenant, ()))

    def posting_scan(self, tenant: str, term: bytes) -> Iterator[tuple[int, bytes]]:
        """(segment id, posting value) of every segment holding `term`: one prefix scan."""
        for key, value in self.db.scan_prefix(fmt.CF_POST, fmt.posting_prefix(tenant, term)):
            yield fmt.seg_id_of_posting_key(key), value

    def trace_spans(self, tenant: str, trace_id: bytes) -> list[tuple[str, bytes, bytes, bytes]]:
        return [
            fmt.decode_span_value(v)
            for _, v in self.db.scan_prefix(fmt.CF_SPANS, fmt.span_prefix(tenant, trace_id))
        ]

    def tenants(self) -> list[str]:
        """Every tenant that has sent logs or spans."""
        with self._lock:
            return sorted(set(self._services) | set(self._segments))

    def expire_spans(self, tenant: str, before_ns: int, chunk: int = 10_000) -> int:
        """Delete the spans of `tenant` that started before `before_ns`; returns how many.

        Spans are keyed by trace, not time, so this reads every key of the tenant: a
        background job run a few times a day, deleting in batches.
        """
        prefix = fmt.tenant_prefix(tenant)
        at = len(prefix) + 16  # tenant | trace id[16] | u64 start_ns | span id
        wb = self.db.batch()
        pending = n = 0
        for key, _ in self.db.scan_prefix(fmt.CF_SPANS, prefix):
            if int.from_bytes(key[at : at + 8], "big") < before_ns:
                self.db.delete(wb, fmt.CF_SPANS, key)
                pending += 1
                if pending >= chunk:
                    self.db.write(wb, sync=False)
                    wb, n, pending = self.db.batch(), n + pending, 0
        if pending:
            self.db.write(wb, sync=False)
        return n + pending

    def delete_trace_spans(self, tenant: str, trace_id: bytes) -> int:
        """Erase every span of a trace (GDPR); returns how many there were."""
        lo = fmt.span_prefix(tenant, trace_id)
        hi = fmt.prefix_end(lo)
        n = sum(1 for _ in self.db.scan_range(fmt.CF_SPANS, lo, hi))
        if n:
            wb = self.db.batch()
            self.db.delete_range(wb, fmt.CF_SPANS, lo, hi)
            self.db.write(wb, sync=True)
            self.db.compact(fmt.CF_SPANS, lo, hi)
        return n

    def size_on_disk(self) -> dict[str, int]:
        return self.db.size_on_disk()

    def close(self) -> None:
        self.collect_garbage(force=True)
        self.db.flush()
        self.db.close()
