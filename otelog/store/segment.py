"""Segments: time-sorted runs of log records stored as compressed columns + postings.

A segment is immutable once written. Rows are sorted by (timestamp, log id), so a
time range is a slice of rows, newest-first is reverse row order, and a page cursor
is a binary search.
"""

from __future__ import annotations

import array
import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from pyroaring import BitMap

from otelog.anyvalue import kv_terms
from otelog.model import LogBatch
from otelog.store import format as fmt
from otelog.store.scan_cache import ScanBlock, ScanCache
from otelog.store.tokens import MAX_LEN, MIN_LEN, raw_tokens

if TYPE_CHECKING:
    from otelog.store.db import Database

# An attribute key gets postings in a segment only while its distinct values stay within
# this budget; past it the key is still searchable by scanning that segment's rows.
ATTR_MAX_DISTINCT = 1000
ATTR_MAX_TERM_LEN = 256


@dataclass
class SegmentMeta:
    id: int
    tenant: str
    rows: int
    min_ts: int
    max_ts: int
    blocks: int
    nbytes: int = 0
    # attribute keys present in the segment without postings, as "a:key" / "r:key"
    unindexed: list[str] = field(default_factory=list)
    level_counts: list[int] = field(default_factory=lambda: [0] * 7)
    # set once the segment lives in object storage: its object (s3://bucket/key) and size
    cold: str = ""
    cold_bytes: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> SegmentMeta:
        return SegmentMeta(**json.loads(data))


@dataclass
class BuiltSegment:
    meta: SegmentMeta
    columns: list[tuple[bytes, bytes]]  # (key, value) in CF_COLS
    postings: list[tuple[bytes, bytes]]  # (key, value) in CF_POST


def _merge_resources(
    batches: list[LogBatch],
) -> tuple[list[tuple[str, str, bytes, bytes]], np.ndarray]:
    """One resource table for the segment, and each row's index into it."""
    table: dict[tuple[bytes, bytes], int] = {}
    resources: list[tuple[str, str, bytes, bytes]] = []
    parts: list[np.ndarray] = []
    for b in batches:
        remap = np.empty(len(b.resources), dtype=np.uint32)
        for i, r in enumerate(b.resources):
            k = (r.resource_pb, r.scope_pb)
            idx = table.get(k)
            if idx is None:
                idx = table[k] = len(resources)
                resources.append((r.service, r.host, r.resource_pb, r.scope_pb))
            remap[i] = idx
        parts.append(remap[np.asarray(b.res, dtype=np.int64)] if len(b) else remap[:0])
    res = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    return resources, res


def resource_terms(resources: list[tuple[str, str, bytes, bytes]]) -> dict[bytes, list[int]]:
    """Service, host and resource-attribute terms -> the resource indexes that have them."""
    out: dict[bytes, list[int]] = {}
    for r_idx, (service, host, resource_pb, _scope_pb) in enumerate(resources):
        out.setdefault(fmt.term(fmt.T_SERVICE, service), []).append(r_idx)
        if host:
            out.setdefault(fmt.term(fmt.T_HOST, host), []).append(r_idx)
        for kv in ResourcePb.FromString(resource_pb).attributes:
            for _k, leaf in kv_terms(kv.SerializeToString()):
                out.setdefault(fmt.T_RES + leaf, []).append(r_idx)
    return out


def encode_resource_postings(terms: dict[bytes, list[int]]) -> dict[bytes, bytes]:
    # a handful of resources cover every row: listing them costs bytes per resource,
    # where a bitmap would cost bytes per row
    return {
        t: fmt.POSTING_RESOURCES + np.asarray(idx, dtype="<u4").tobytes()
        for t, idx in terms.items()
    }


def encode_postings(
    tenant: str, seg_id: int, values: dict[bytes, bytes]
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """Posting key/values of a segment; a bitmap equal to an earlier one becomes a reference.

    Words of one message template sit on exactly the same rows, so most word bitmaps of
    a segment are copies of another word's.
    """
    first: dict[bytes, bytes] = {}
    out: list[tuple[bytes, bytes]] = []
    for t, v in values.items():
        if len(v) > 24 and v[:1] != fmt.POSTING_RESOURCES:
            owner = first.setdefault(v, t)
            if owner != t:
                v = fmt.POSTING_SAME_AS + owner
        out.append((fmt.posting_key(tenant, t, seg_id), v))
    return out, list(values)


def _within_budget(values: set[bytes] | dict[bytes, list[int]]) -> bool:
    return len(values) <= ATTR_MAX_DISTINCT and all(len(v) <= ATTR_MAX_TERM_LEN for v in values)


def rows_array(bm: BitMap) -> np.ndarray:
    """The rows of a bitmap as a uint32 numpy array (no Python ints on the way)."""
    return np.frombuffer(bm.to_array(), dtype=np.uint32)


def bitmap_of(rows: np.ndarray) -> BitMap:
    """A bitmap from a numpy array of rows (via array('I'): ~5x faster than from numpy)."""
    return BitMap(array.array("I", rows.astype(np.uint32).tobytes()))


def bitmap_bytes(bm: BitMap) -> bytes:
    bm.run_optimize()
    return bytes(bm.serialize())


def _bitmap(rows: np.ndarray | list[int]) -> bytes:
    return bitmap_bytes(BitMap(rows))


def encode_segment_columns(
    tenant: str,
    seg_id: int,
    ts: np.ndarray,
    lid: np.ndarray,
    level: np.ndarray,
    res: np.ndarray,
    resources: list[tuple[str, str, bytes, bytes]],
    recs: list[bytes],
) -> tuple[list[tuple[bytes, bytes]], int]:
    """The column values of a segment whose rows are already in (ts, log_id) order."""
    cols: list[tuple[bytes, bytes]] = [
        (fmt.column_key(tenant, seg_id, fmt.COL_TS), fmt.encode_int64_column(ts)),
        (fmt.column_key(tenant, seg_id, fmt.COL_LID), fmt.encode_int64_column(lid)),
        (fmt.column_key(tenant, seg_id, fmt.COL_LEVEL), fmt.encode_small_column(level, "u1")),
        (fmt.column_key(tenant, seg_id, fmt.COL_RES), fmt.encode_small_column(res, "<u4")),
        (fmt.column_key(tenant, seg_id, fmt.COL_RESOURCES), fmt.encode_resources(resources)),
    ]
    blocks = (len(recs) + fmt.BLOCK_ROWS - 1) // fmt.BLOCK_ROWS
    for blk in range(blocks):
        chunk = recs[blk * fmt.BLOCK_ROWS : (blk + 1) * fmt.BLOCK_ROWS]
        cols.append(
            (
                fmt.column_key(tenant, seg_id, fmt.COL_RECS, blk),
                fmt.compress(fmt.encode_blobs(chunk), fmt.RECORDS_LEVEL),
            )
        )
    return cols, blocks


def build_segment(tenant: str, seg_id: int, batches: list[LogBatch]) -> BuiltSegment:
    """Columns and postings of one segment from the batches of a memtable."""
    ts = np.fromiter((t for b in batches for t in b.ts), dtype=np.int64)
    lid = np.fromiter((t for b in batches for t in b.log_id), dtype=np.int64)
    level = np.frombuffer(b"".join(bytes(b.level) for b in batches), dtype=np.uint8)
    resources, res = _merge_resources(batches)
    order = np.lexsort((lid, ts))
    ts, lid, level, res = ts[order], lid[order], level[order], res[order]
    order_l = order.tolist()
    inv_order = np.empty_like(order)
    inv_order[order] = np.arange(len(order))
    recs_all = [r for b in batches for r in b.rec]
    bodies_all = [x for b in batches for x in b.body]
    tids_all = [x for b in batches for x in b.trace_id]
    attrs_all = [x for b in batches for x in b.attrs]
    recs = [recs_all[i] for i in order_l]
    n = len(recs)

    cols, blocks = encode_segment_columns(tenant, seg_id, ts, lid, level, res, resources, recs)

    terms: dict[bytes, np.ndarray | list[int]] = {}
    unindexed: list[str] = []
    level_counts = [0] * 7
    for lv in range(7):
        rows = np.flatnonzero(level == lv)
        level_counts[lv] = len(rows)
        if len(rows):
            terms[fmt.term(fmt.T_LEVEL, bytes([lv]))] = rows

    # row-level terms, in sorted row order
    trace_rows: dict[bytes, list[int]] = {}
    word_rows: dict[str, list[int]] = {}
    kv_rows: dict[bytes, list[int]] = {}
    for i, src in enumerate(order_l):
        tid = tids_all[src]
        if tid:
            trace_rows.setdefault(tid, []).append(i)
        for tok in set(raw_tokens(bodies_all[src])):
            word_rows.setdefault(tok, []).append(i)
        for kv in attrs_all[src]:
            kv_rows.setdefault(kv, []).append(i)
    for tid, rws in trace_rows.items():
        terms[fmt.T_TRACE + tid] = rws
    for tok, rws in word_rows.items():
        if MIN_LEN <= len(tok) <= MAX_LEN:
            terms[fmt.T_WORD + tok.encode()] = rws
    # rows whose body is a map, list or number: byte-level scans cannot see their text
    offsets = np.cumsum([0] + [len(b) for b in batches])
    structured = [int(offsets[k]) + r for k, b in enumerate(batches) for r in b.structured]
    if structured:
        terms[fmt.T_STRUCTURED] = np.sort(inv_order[np.asarray(structured, dtype=np.int64)])
    # group the distinct serialized attributes by key; a key over budget gets no postings
    by_key: dict[str, dict[bytes, list[int]]] = {}
    for kv, rws in kv_rows.items():
        for k, leaf in kv_terms(kv):
            vals = by_key.setdefault(k, {})
            have = vals.get(leaf)
            vals[leaf] = rws if have is None else sorted(set(have) | set(rws))
    for k, vals in by_key.items():
        if not _within_budget(vals):
            unindexed.append(f"a:{k}")
            continue
        for leaf, rws in vals.items():
            terms[fmt.T_ATTR + leaf] = rws

    values = {t: _bitmap(rws) for t, rws in terms.items()}
    values.update(encode_resource_postings(resource_terms(resources)))
    postings, term_list = encode_postings(tenant, seg_id, values)
    cols.append(
        (fmt.column_key(tenant, seg_id, fmt.COL_TERMS), fmt.compress(fmt.encode_blobs(term_list)))
    )
    meta = SegmentMeta(
        id=seg_id,
        tenant=tenant,
        rows=n,
        min_ts=int(ts[0]) if n else 0,
        max_ts=int(ts[-1]) if n else 0,
        blocks=blocks,
        unindexed=sorted(unindexed),
        level_counts=level_counts,
    )
    meta.nbytes = sum(len(k) + len(v) for k, v in cols) + sum(len(k) + len(v) for k, v in postings)
    return BuiltSegment(meta, cols, postings)


class ColumnSource(Protocol):
    """Where a reader's bytes come from: RocksDB, a detached copy, or a cold object."""

    def get(self, cf: str, key: bytes) -> bytes | None: ...

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]: ...


class SegmentData:
    """Every stored byte of one segment, detached from RocksDB: what a merge in another
    process reads. Quacks like `Database` for the `get`/`get_many` a reader uses."""

    def __init__(self, values: dict[tuple[str, bytes], bytes]) -> None:
        self.values = values

    @staticmethod
    def of(db: Database, meta: SegmentMeta, terms: list[bytes]) -> SegmentData:
        values: dict[tuple[str, bytes], bytes] = {}
        prefix = fmt.segment_columns_prefix(meta.tenant, meta.id)
        for k, v in db.scan_prefix(fmt.CF_COLS, prefix):
            values[(fmt.CF_COLS, k)] = v
        keys = [fmt.posting_key(meta.tenant, t, meta.id) for t in terms]
        for key, found in zip(keys, db.get_many(fmt.CF_POST, keys), strict=True):
            if found is not None:
                values[(fmt.CF_POST, key)] = found
        return SegmentData(values)

    @staticmethod
    def of_built(built: BuiltSegment) -> SegmentData:
        """The bytes of a segment just built, before (or instead of) writing them."""
        values = {(fmt.CF_COLS, k): v for k, v in built.columns}
        values.update({(fmt.CF_POST, k): v for k, v in built.postings})
        return SegmentData(values)

    def get(self, cf: str, key: bytes) -> bytes | None:
        return self.values.get((cf, key))

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        return [self.values.get((cf, k)) for k in keys]


class SegmentReader:
    """Lazily decoded columns of one sealed segment; cached by the store."""

    def __init__(self, db: ColumnSource, meta: SegmentMeta) -> None:
        self.db = db
        self.meta = meta
        self._lock = threading.Lock()
        self._ts: np.ndarray | None = None
        self._lid: np.ndarray | None = None
        self._level: np.ndarray | None = None
        self._res: np.ndarray | None = None
        self._resources: list[tuple[str, str, bytes, bytes]] | None = None
        self._blocks: OrderedDict[int, list[bytes]] = OrderedDict()
        self.unindexed = frozenset(meta.unindexed)
        # what upper layers derive from this immutable segment (rows tombstones hide, the
        # lifecycle's next check); on the reader, so it goes with it and never outlives
        # it under a reused id
        self.derived: dict[object, object] = {}

    def _col(self, name: bytes) -> bytes:
        v = self.db.get(fmt.CF_COLS, fmt.column_key(self.meta.tenant, self.meta.id, name))
        if v is None:
            raise KeyError(f"segment {self.meta.id:x} lost column {name!r}")
        return v

    @property
    def ts(self) -> np.ndarray:
        if self._ts is None:
            self._ts = fmt.decode_int64_column(self._col(fmt.COL_TS))
        return self._ts

    @property
    def lid(self) -> np.ndarray:
        if self._lid is None:
            self._lid = fmt.decode_int64_column(self._col(fmt.COL_LID))
        return self._lid

    @property
    def level(self) -> np.ndarray:
        if self._level is None:
            self._level = fmt.decode_small_column(self._col(fmt.COL_LEVEL), "u1")
        return self._level

    @property
    def res(self) -> np.ndarray:
        if self._res is None:
            self._res = fmt.decode_small_column(self._col(fmt.COL_RES), "<u4")
        return self._res

    @property
    def resources(self) -> list[tuple[str, str, bytes, bytes]]:
        if self._resources is None:
            self._resources = fmt.decode_resources(self._col(fmt.COL_RESOURCES))
        return self._resources

    def terms(self) -> list[bytes]:
        return fmt.decode_blobs(fmt.decompress(self._col(fmt.COL_TERMS)))

    def block(self, blk: int) -> list[bytes]:
        with self._lock:
            cached = self._blocks.get(blk)
            if cached is not None:
                self._blocks.move_to_end(blk)
                return cached
        raw = self.db.get(
            fmt.CF_COLS, fmt.column_key(self.meta.tenant, self.meta.id, fmt.COL_RECS, blk)
        )
        if raw is None:
            raise KeyError(f"segment {self.meta.id:x} lost block {blk}")
        recs = fmt.decode_blobs(fmt.decompress(raw))
        with self._lock:
            self._blocks[blk] = recs
            while len(self._blocks) > 8:
                self._blocks.popitem(last=False)
        return recs

    def scan_block(self, blk: int, cache: ScanCache | None = None) -> ScanBlock:
        """A block's record offsets and lower-cased concatenated records, for scans."""
        item = cache.get(self.meta.id, blk) if cache is not None else None
        if item is not None:
            return item
        raw = self.db.get(
            fmt.CF_COLS, fmt.column_key(self.meta.tenant, self.meta.id, fmt.COL_RECS, blk)
        )
        if raw is None:
            raise KeyError(f"segment {self.meta.id:x} lost block {blk}")
        offsets, payload = fmt.blob_payload(fmt.decompress(raw))
        item = (offsets, payload.lower())
        if cache is not None:
            cache.put(self.meta.id, blk, item)
        return item

    def recs(self, rows: list[int]) -> list[bytes]:
        out = []
        for r in rows:
            out.append(self.block(r // fmt.BLOCK_ROWS)[r % fmt.BLOCK_ROWS])
        return out

    def decode_posting(self, term: bytes, value: bytes | None) -> BitMap:
        """Rows of a posting value of this segment, whatever its encoding."""
        if value is None:
            return BitMap()
        kind = value[:1]
        if kind == fmt.POSTING_RESOURCES:
            idx = np.frombuffer(value, dtype="<u4", offset=1)
            return BitMap(
                array.array("I", np.flatnonzero(np.isin(self.res, idx)).astype(np.uint32).tobytes())
            )
        if kind == fmt.POSTING_SAME_AS:
            owner = value[1:]
            v = self.db.get(fmt.CF_POST, fmt.posting_key(self.meta.tenant, owner, self.meta.id))
            return self.decode_posting(owner, v)
        return BitMap.deserialize(value)

    def posting(self, term: bytes) -> BitMap:
        key = fmt.posting_key(self.meta.tenant, term, self.meta.id)
        return self.decode_posting(term, self.db.get(fmt.CF_POST, key))

    def all_rows(self) -> BitMap:
        bm = BitMap()
        bm.add_range(0, self.meta.rows)
        return bm
