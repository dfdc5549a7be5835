"""Background merge: small adjacent segments become one bigger segment.

Sealing every ~0.5 s makes many small segments; each costs a posting key per term,
so merging them is what keeps postings compact and term scans short. The inputs are
all sorted by (ts, log_id); the output is too, and every input row keeps its content.
Postings are not rebuilt from bodies: each input bitmap is remapped to the new row order.
"""

from __future__ import annotations

import array

import numpy as np
from pyroaring import BitMap

from otelog.anyvalue import kv_terms
from otelog.store import format as fmt
from otelog.store.segment import (
    ATTR_MAX_DISTINCT,
    BuiltSegment,
    SegmentMeta,
    SegmentReader,
    bitmap_bytes,
    encode_postings,
    encode_resource_postings,
    encode_segment_columns,
    resource_terms,
    rows_array,
)


def _attr_key(term: bytes) -> str | None:
    if term[:1] not in (fmt.T_ATTR, fmt.T_RES):
        return None
    kt = kv_terms(term[1:])
    return kt[0][0] if kt else None


def merge_segments(
    tenant: str,
    seg_id: int,
    inputs: list[SegmentReader],
    keep: list[BitMap | None] | None = None,
) -> BuiltSegment:
    """One segment of every row of `inputs`, or only the rows `keep[i]` lists of input i
    (None keeps all): how expired and erased rows leave a segment, postings included."""
    ts = np.concatenate([s.ts for s in inputs])
    lid = np.concatenate([s.lid for s in inputs])
    level = np.concatenate([s.level for s in inputs])
    offsets = np.cumsum([0] + [s.meta.rows for s in inputs])
    # global row numbers that stay, in input order
    if keep is None or all(k is None for k in keep):
        sel = np.arange(len(ts), dtype=np.int64)
    else:
        sel = np.concatenate(
            [
                np.arange(s.meta.rows, dtype=np.int64) + offsets[n]
                if keep[n] is None
                else rows_array(keep[n]).astype(np.int64) + offsets[n]  # type: ignore[arg-type]
                for n, s in enumerate(inputs)
            ]
        )
    # one resource table: identical (resource, scope) pairs collapse
    table: dict[tuple[bytes, bytes], int] = {}
    resources: list[tuple[str, str, bytes, bytes]] = []
    res_parts = []
    for s in inputs:
        remap = np.empty(len(s.resources), dtype=np.uint32)
        for i, r in enumerate(s.resources):
            idx = table.setdefault((r[2], r[3]), len(resources))
            if idx == len(resources):
                resources.append(r)
            remap[i] = idx
        res_parts.append(remap[s.res.astype(np.int64)])
    res = np.concatenate(res_parts)
    ts, lid, level, res = ts[sel], lid[sel], level[sel], res[sel]
    order = np.lexsort((lid, ts))
    # old global row -> new row; -1 for a row that does not stay
    inv = np.full(int(offsets[-1]), -1, dtype=np.int64)
    inv[sel[order]] = np.arange(len(order))
    recs_all = [r for s in inputs for blk in range(s.meta.blocks) for r in s.block(blk)]
    recs = [recs_all[i] for i in sel[order].tolist()]
    ts, lid, level, res = ts[order], lid[order], level[order], res[order]

    # postings: union of every input's bitmap of a term, in new row numbers
    unindexed = set()
    for s in inputs:
        unindexed.update(s.meta.unindexed)
    per_term: dict[bytes, list[np.ndarray]] = {}
    for n, s in enumerate(inputs):
        terms = s.terms()
        stored = s.db.get_many(fmt.CF_POST, [fmt.posting_key(tenant, t, s.meta.id) for t in terms])
        base = offsets[n]
        for t, v in zip(terms, stored, strict=True):
            if v is None or v[:1] == fmt.POSTING_RESOURCES:
                continue  # resource-level terms are rebuilt from the merged resource table
            new = inv[rows_array(s.decode_posting(t, v)).astype(np.int64) + base]
            new = new[new >= 0]
            if len(new):
                per_term.setdefault(t, []).append(new)
    # attribute keys: a key unindexed anywhere, or over budget once merged, loses postings
    distinct: dict[str, int] = {}
    key_of: dict[bytes, str] = {}
    for t in per_term:
        key = _attr_key(t)
        if key is not None:
            key_of[t] = key
            distinct[key] = distinct.get(key, 0) + 1
    for t, key in key_of.items():
        tag = "a:" if t[:1] == fmt.T_ATTR else "r:"
        if distinct[key] > ATTR_MAX_DISTINCT:
            unindexed.add(tag + key)
    values: dict[bytes, bytes] = {}
    for t, parts in per_term.items():
        k2 = key_of.get(t)
        if k2 is not None and ("a:" if t[:1] == fmt.T_ATTR else "r:") + k2 in unindexed:
            continue
        rows_u32 = (np.concatenate(parts) if len(parts) > 1 else parts[0]).astype(np.uint32)
        values[t] = bitmap_bytes(BitMap(array.array("I", rows_u32.tobytes())))
    if len(sel) < len(inv):
        # a resource no remaining row uses must not stay: its service, host and attributes
        # would still answer term lookups (and a GDPR erase must remove them)
        used = np.unique(res)
        remap = np.full(len(resources), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        resources = [resources[i] for i in used.tolist()]
        res = remap[res.astype(np.int64)].astype(np.uint32)
    values.update(encode_resource_postings(resource_terms(resources)))
    postings, kept_terms = encode_postings(tenant, seg_id, values)

    cols, blocks = encode_segment_columns(tenant, seg_id, ts, lid, level, res, resources, recs)
    cols.append(
        (fmt.column_key(tenant, seg_id, fmt.COL_TERMS), fmt.compress(fmt.encode_blobs(kept_terms)))
    )
    level_counts = [int(x) for x in np.bincount(level, minlength=7)[:7]]
    meta = SegmentMeta(
        id=seg_id,
        tenant=tenant,
        rows=len(recs),
        min_ts=int(ts[0]) if len(ts) else 0,
        max_ts=int(ts[-1]) if len(ts) else 0,
        blocks=blocks,
        unindexed=sorted(unindexed),
        level_counts=level_counts,
    )
    meta.nbytes = sum(len(k) + len(v) for k, v in cols) + sum(len(k) + len(v) for k, v in postings)
    return BuiltSegment(meta, cols, postings)


def segment_keys(seg: SegmentReader) -> tuple[list[bytes], bytes, bytes]:
    """Posting keys of a segment and the [lo, hi) range of its columns, for deletion."""
    m = seg.meta
    posts = [fmt.posting_key(m.tenant, t, m.id) for t in seg.terms()]
    lo = fmt.segment_columns_prefix(m.tenant, m.id)
    return posts, lo, fmt.prefix_end(lo)


def pick_merge(
    segments: list[SegmentReader], small_rows: int, fanin: int, max_rows: int
) -> list[SegmentReader]:
    """Oldest run of `fanin` consecutive small segments (by id) whose sum stays under max_rows."""
    run: list[SegmentReader] = []
    for s in sorted(segments, key=lambda s: s.meta.id):
        if s.meta.rows >= small_rows:
            run = []
            continue
        run.append(s)
        while sum(x.meta.rows for x in run) > max_rows and len(run) > 1:
            run.pop(0)
        if len(run) >= fanin:
            return run
    return []
