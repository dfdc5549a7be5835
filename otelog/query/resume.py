"""Reading the store forwards: the records stored after a cursor, oldest log id first.

The live tail resumes from here. The cursor is a log id, not a timestamp: log ids
(`wal_seq << 24 | index`) are handed out by the single writer in commit order, so
"every record whose log id is greater than X" is exactly "every record acknowledged
after X", whatever timestamps the clients put on them. A timestamp cursor would have a
gap: a record stamped an hour ago but acknowledged after the cursor sorts before it and
would never be sent.

Segments are sorted by (timestamp, log id), not by log id, so a segment is searched
whole: the log-id column (numpy) picks the rows past the cursor, postings narrow them
to the query, and only the `limit` oldest by log id are decoded.
"""

from __future__ import annotations

import bisect

import numpy as np

from otelog.model import LogBatch
from otelog.query.ast import Node
from otelog.query.execute import Searcher, _SegmentEval, hidden_by
from otelog.query.match import Matcher, compile_matcher
from otelog.query.rows import LogRow, row_from_batch
from otelog.store.segment import SegmentReader, bitmap_of, rows_array
from otelog.store.store import Store


def records_after(
    store: Store,
    tenant: str,
    node: Node,
    after: int,
    limit: int,
    now_ns: int,
    searcher: Searcher | None = None,
) -> list[LogRow]:
    """Up to `limit` records matching `node` with log id > `after`, ascending by log id.

    Reads one snapshot, so the answer is a prefix, in commit order, of what the store
    holds: if it has a record with log id L, it has every record committed before L.
    Page on by calling again with the last row's log id. `searcher` lends its resource
    cache to consecutive pages (one caller at a time).
    """
    if limit <= 0:
        return []
    s = searcher or Searcher(store, tenant)
    matcher = compile_matcher(node, now_ns)
    snap = store.snapshot(tenant)
    # (log id, the row when already built, the segment and row number otherwise)
    cands: list[tuple[int, LogRow | None, SegmentReader | None, int]] = []
    for seg in snap.segments:
        if seg.meta.rows:
            _segment_candidates(s, seg, node, matcher, after, limit, now_ns, cands)
    for b in snap.fresh:
        _fresh_candidates(s, b, matcher, after, limit, cands)
    cands.sort(key=lambda c: c[0])
    rows: list[LogRow] = []
    for _lid, row, src, r in cands[:limit]:
        if row is None:
            assert src is not None
            row = s.segment_row(src, r)
        rows.append(row)
    return rows


def _segment_candidates(
    s: Searcher,
    seg: SegmentReader,
    node: Node,
    matcher: Matcher,
    after: int,
    limit: int,
    now_ns: int,
    out: list[tuple[int, LogRow | None, SegmentReader | None, int]],
) -> None:
    lid = seg.lid
    newer = np.flatnonzero(lid > after)
    if not len(newer):
        return
    within = bitmap_of(newer)
    # `within` lets full-text scans read only the blocks that hold newer rows
    bm, exact = _SegmentEval(s.store, s.tenant, seg, now_ns).eval(node, within)
    if s.tombstones and bm:
        bm -= s.hidden_rows(seg)
    rows = rows_array(bm & within)
    if not len(rows):
        return
    # oldest log id first, and no further than `limit` matches: a cursor far in the past
    # must not decode the whole segment for one page
    ordered = rows[np.argsort(lid[rows], kind="stable")]
    taken = 0
    for r in ordered.tolist():
        row: LogRow | None = None
        if not exact:
            row = s.segment_row(seg, r)
            if not matcher(row):
                continue
        out.append((int(lid[r]), row, seg, r))
        taken += 1
        if taken >= limit:
            return


def _fresh_candidates(
    s: Searcher,
    b: LogBatch,
    matcher: Matcher,
    after: int,
    limit: int,
    out: list[tuple[int, LogRow | None, SegmentReader | None, int]],
) -> None:
    # a committed batch's ids are consecutive and ascending: skip to the first newer one
    start = bisect.bisect_right(b.log_id, after)
    taken = 0
    for i in range(start, len(b)):
        row = row_from_batch(b, i, s.resources)
        if matcher(row) and not hidden_by(s.tombstones, row):
            out.append((row.log_id, row, None, i))
            taken += 1
            if taken >= limit:
                return
