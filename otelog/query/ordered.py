"""Every row a query matched, decoded page by page in (timestamp, log id) order.

What exports read: `Searcher.matches` gives the rows of one snapshot as bitmaps, still
encoded; this walks them oldest first and decodes only one page at a time, so memory
holds one page of records plus the sort keys of the segments being merged.

Segments are each sorted by (timestamp, log id) but may overlap in time (late records seal
into a newer segment), and fresh rows are in arrival order, so the sources are merged: a
source joins the merge only once the merge reaches its first timestamp, and each round
emits every buffered key up to the smallest "last key of a chunk" among sources that
have more beyond their chunk; nothing unread can be smaller than that.

A long walk can outlive a segment: a merge, tiering or an erasure replaces it and, after
a grace period, deletes its bytes. Log ids are unique, so the remaining rows are found
again by id in the segments that replaced it; rows found nowhere were erased meanwhile
and are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from otelog.model import LogBatch
from otelog.query.execute import Matches, Searcher, hidden_by, tombstones_of
from otelog.query.rows import LogRow, row_from_batch
from otelog.store.segment import SegmentReader, rows_array

__all__ = ["match_count", "ordered_rows"]

# A segment replaced more often than this during one walk is a fault, not a race.
MAX_RELOCATIONS = 8
_INF = (np.iinfo(np.int64).max, np.iinfo(np.int64).max)


def match_count(m: Matches) -> int:
    return sum(len(bm) for _, bm in m.segments) + sum(len(rows) for _, rows in m.fresh)


class _Source:
    """The matched rows of one segment or fresh batch: sort keys, and a way to decode."""

    ts: np.ndarray
    lid: np.ndarray
    pos: int = 0

    def row(self, i: int) -> LogRow | None:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ts)


class _Fresh(_Source):
    def __init__(self, searcher: Searcher, batch: LogBatch, rows: list[int]) -> None:
        self.searcher = searcher
        self.batch = batch
        idx = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(batch.ts, dtype=np.int64)[idx]
        lid = np.asarray(batch.log_id, dtype=np.int64)[idx]
        order = np.lexsort((lid, ts))
        self.rows = idx[order]
        self.ts, self.lid = ts[order], lid[order]

    def row(self, i: int) -> LogRow | None:
        return row_from_batch(self.batch, int(self.rows[i]), self.searcher.resources)


class _Moved:
    """Rows of replaced segments, found again by log id in the segments now in the store."""

    def __init__(self, searcher: Searcher, ts: np.ndarray, lid: np.ndarray, start: int) -> None:
        """Looks up the keys from index `start` on; the rows before it are already read."""
        self.readers: list[SegmentReader] = []
        self.where = np.full(len(lid), -1, dtype=np.int64)  # index into readers; -1: erased
        self.rows = np.zeros(len(lid), dtype=np.int64)
        want_ts, want = ts[start:], lid[start:]
        if not len(want):
            return
        lo_ts, hi_ts = int(want_ts.min()), int(want_ts.max())
        sorter = np.argsort(want)
        for seg in searcher.store.snapshot(searcher.tenant).segments:
            m = seg.meta
            if m.rows == 0 or m.max_ts < lo_ts or m.min_ts > hi_ts:
                continue
            a = int(np.searchsorted(seg.ts, lo_ts, "left"))
            b = int(np.searchsorted(seg.ts, hi_ts, "right"))
            cand = seg.lid[a:b]
            hit = np.flatnonzero(np.isin(cand, want))
            if not len(hit):
                continue
            at = sorter[np.searchsorted(want, cand[hit], sorter=sorter)] + start
            self.where[at] = len(self.readers)
            self.rows[at] = hit + a
            self.readers.append(seg)


class _Segment(_Source):
    def __init__(self, searcher: Searcher, seg: SegmentReader, rows: np.ndarray) -> None:
        self.searcher = searcher
        self.seg = seg
        self.rows = rows.astype(np.int64)
        self.ts, self.lid = seg.ts[self.rows], seg.lid[self.rows]
        self.moved: _Moved | None = None
        self.relocations = 0

    def row(self, i: int) -> LogRow | None:
        while True:
            seg, r = self.seg, int(self.rows[i])
            if self.moved is not None:
                k = int(self.moved.where[i])
                if k < 0:
                    return None
                seg, r = self.moved.readers[k], int(self.moved.rows[i])
            try:
                return self.searcher.segment_row(seg, r)
            except KeyError as e:
                self._relocate(seg, i, e)

    def _relocate(self, lost: SegmentReader, i: int, error: KeyError) -> None:
        s = self.searcher
        if s.store.segment(s.tenant, lost.meta.id) is lost:
            raise error  # still in the catalog: its bytes are missing for another reason
        self.relocations += 1
        if self.relocations > MAX_RELOCATIONS:
            raise KeyError(f"segment {self.seg.meta.id:x}: replaced too often during a read")
        self.moved = _Moved(s, self.ts, self.lid, i)


def _count_upto(src: _Source, end: int, bound: tuple[int, int]) -> int:
    """How many of src's keys in [pos, end) are <= bound."""
    ts, lid, lo = src.ts, src.lid, src.pos
    b_ts, b_lid = bound
    a = int(np.searchsorted(ts[lo:end], b_ts, "left")) + lo
    b = int(np.searchsorted(ts[lo:end], b_ts, "right")) + lo
    return a + int(np.searchsorted(lid[a:b], b_lid, "right")) - lo


def ordered_rows(searcher: Searcher, m: Matches, page_rows: int = 4096) -> Iterator[list[LogRow]]:
    """Pages of the matched rows, oldest first; each page at most `page_rows` records."""
    for seg, _bm in m.segments:
        # the sort keys now, while the snapshot's segments surely have their bytes: they
        # are what finds the rows again should a segment be replaced during the walk
        _ = seg.ts, seg.lid
    # sources join the merge when it reaches their first timestamp: only those that
    # overlap hold sort keys at a time
    pending: list[tuple[int, int, Callable[[], _Source]]] = []
    for n, (seg, bm) in enumerate(m.segments):
        pending.append((seg.meta.min_ts, n, partial(_Segment, searcher, seg, rows_array(bm))))
    for n, (batch, rows) in enumerate(m.fresh):
        first = min(batch.ts[i] for i in rows)
        pending.append((first, len(m.segments) + n, partial(_Fresh, searcher, batch, rows)))
    pending.sort(key=lambda p: (p[0], p[1]), reverse=True)  # pop() takes the earliest
    known = {t.id for t in searcher.tombstones}

    def open_next() -> _Source:
        return pending.pop()[2]()

    live: list[_Source] = []
    while live or pending:
        if not live:
            live.append(open_next())
        while True:
            ends = [min(s.pos + page_rows, len(s)) for s in live]
            limits = [
                (int(s.ts[e - 1]), int(s.lid[e - 1]))
                for s, e in zip(live, ends, strict=True)
                if e < len(s)
            ]
            bound = min(limits) if limits else _INF
            if pending and pending[-1][0] <= bound[0]:
                live.append(open_next())
                continue
            break
        keys_ts: list[np.ndarray] = []
        keys_lid: list[np.ndarray] = []
        src_of: list[np.ndarray] = []
        at: list[np.ndarray] = []
        for k, (s, e) in enumerate(zip(live, ends, strict=True)):
            n = _count_upto(s, e, bound)
            if not n:
                continue
            keys_ts.append(s.ts[s.pos : s.pos + n])
            keys_lid.append(s.lid[s.pos : s.pos + n])
            src_of.append(np.full(n, k, dtype=np.int64))
            at.append(np.arange(s.pos, s.pos + n, dtype=np.int64))
            s.pos += n
        if keys_ts:
            order = np.lexsort((np.concatenate(keys_lid), np.concatenate(keys_ts)))
            which = np.concatenate(src_of)[order].tolist()
            where = np.concatenate(at)[order].tolist()
            for p in range(0, len(which), page_rows):
                page = [
                    live[k].row(i)
                    for k, i in zip(which[p : p + page_rows], where[p : p + page_rows], strict=True)
                ]
                decoded = [r for r in page if r is not None]
                # a deletion recorded during the walk hides its rows from the next page on
                later = [t for t in tombstones_of(searcher.store, searcher.tenant)
                         if t.id not in known]  # fmt: skip
                if later:
                    decoded = [r for r in decoded if not hidden_by(later, r)]
                if decoded:
                    yield decoded
        live = [s for s in live if s.pos < len(s)]
