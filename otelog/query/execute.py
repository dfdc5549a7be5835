"""Execution: postings answer term predicates per segment with bitmap algebra; only the
rows a page shows are decoded; rows a bitmap cannot decide are checked one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap

from otelog.anyvalue import attribute_terms
from otelog.model import LogBatch
from otelog.query.ast import And, Compare, MatchAll, Node, Not, Or, Text, TimeRef
from otelog.query.match import Matcher, compile_matcher, value_text
from otelog.query.parser import parse
from otelog.query.plan import TimeWindow, levels_matching, time_window
from otelog.query.rows import LogRow, ResourceCache, row_from_batch, row_from_record
from otelog.store import format as fmt
from otelog.store.deletions import ERASED
from otelog.store.segment import SegmentReader, bitmap_of, rows_array
from otelog.store.store import Store
from otelog.store.tokens import is_indexed_token, word_tokens

Cursor = tuple[int, int]  # (ts, log_id) of the last row returned; next page is older


@dataclass
class SearchResult:
    rows: list[LogRow]
    total: int
    next_cursor: Cursor | None
    next_token: str | None = None


@dataclass
class Matches:
    """Every row a query matches in `window`: a bitmap per sealed segment holding any, and
    row numbers per fresh batch. What aggregations count, where `search` pages."""

    window: TimeWindow
    segments: list[tuple[SegmentReader, BitMap]]
    fresh: list[tuple[LogBatch, list[int]]]


class _SegmentEval:
    """Bitmap evaluation of one query over one sealed segment."""

    def __init__(self, store: Store, tenant: str, seg: SegmentReader, now_ns: int) -> None:
        self.store = store
        self.tenant = tenant
        self.seg = seg
        self.now_ns = now_ns
        self._all: BitMap | None = None

    @property
    def all(self) -> BitMap:
        if self._all is None:
            self._all = self.seg.all_rows()
        return self._all

    def post(self, term: bytes) -> BitMap:
        return self.seg.posting(term)

    def eval(self, node: Node, within: BitMap | None = None) -> tuple[BitMap, bool]:
        """(rows, exact): exact=False means `rows` is a superset still to be checked.

        `within` is a superset of the rows that can matter (from sibling predicates);
        only costly scans use it, to read fewer blocks.
        """
        if isinstance(node, MatchAll):
            return self.all, True
        if isinstance(node, And):
            acc: BitMap | None = within
            exact = True
            # postings first, scans last: a scan then reads only blocks still in play
            for child in sorted(node.children, key=lambda c: isinstance(c, Text)):
                bm, ex = self.eval(child, acc)
                acc = bm if acc is None else acc & bm
                exact = exact and ex
                if not acc:
                    return BitMap(), True
            return (acc if acc is not None else self.all), exact
        if isinstance(node, Or):
            parts = [self.eval(c) for c in node.children]
            return BitMap.union(*(p[0] for p in parts)), all(p[1] for p in parts)
        if isinstance(node, Not):
            bm, ex = self.eval(node.child)
            if ex:
                return self.all - bm, True
            return self.all, False
        if isinstance(node, Text):
            return self._text(node, within)
        assert isinstance(node, Compare)
        return self._compare(node)

    def _text(self, node: Text, within: BitMap | None) -> tuple[BitMap, bool]:
        word = node.text.lower()
        if not node.phrase and is_indexed_token(word):
            return self.post(fmt.T_WORD + word.encode()), True
        # substring semantics: the letter runs wholly inside the text narrow the rows;
        # the first and last run may be parts of longer words in the body, so skip them
        toks = word_tokens(word)
        inner = toks[1:-1] if not _starts_ends_clean(word) else toks
        acc = within
        for t in inner:
            p = self.post(fmt.T_WORD + t.encode())
            acc = p if acc is None else acc & p
        return self._scan_records(word.encode(), acc), False

    def _scan_records(self, needle: bytes, within: BitMap | None) -> BitMap:
        """Rows whose serialized record contains `needle` (ASCII-case-insensitive): a
        superset of the rows whose body does, found with C-speed `bytes.find` per block.
        """
        if not needle.isascii():
            return self.all if within is None else within
        if within is None:
            blocks = range(self.seg.meta.blocks)
        else:
            if not within:
                return BitMap()
            blocks = np.unique(rows_array(within) // fmt.BLOCK_ROWS).tolist()
        hits: list[int] = []
        for blk in blocks:
            offsets, low = self.seg.scan_block(blk, self.store.scan_cache)
            base = blk * fmt.BLOCK_ROWS
            pos = low.find(needle)
            while pos != -1:
                row = int(np.searchsorted(offsets, pos, "right")) - 1
                hits.append(base + row)
                pos = low.find(needle, int(offsets[row + 1]))
        # a map or number body's text is rendered JSON, not in the bytes: always a candidate
        bm = BitMap(hits) | self.post(fmt.T_STRUCTURED)
        return bm if within is None else bm & within

    def _eq_or_ne(self, op: str, term: bytes) -> tuple[BitMap, bool]:
        bm = self.post(term)
        return (bm, True) if op == "=" else (self.all - bm, True)

    def _compare(self, c: Compare) -> tuple[BitMap, bool]:
        f, op, v = c.field, c.op, c.value
        if f == "timestamp" and isinstance(v, TimeRef):
            t = v.resolve(self.now_ns)
            ts = self.seg.ts
            lo, hi = 0, len(ts)
            if op == ">":
                lo = int(np.searchsorted(ts, t, "right"))
            elif op == ">=":
                lo = int(np.searchsorted(ts, t, "left"))
            elif op == "<":
                hi = int(np.searchsorted(ts, t, "left"))
            elif op == "<=":
                hi = int(np.searchsorted(ts, t, "right"))
            elif op == "=":
                lo = int(np.searchsorted(ts, t, "left"))
                hi = int(np.searchsorted(ts, t, "right"))
            else:
                return self.all, False
            bm = BitMap()
            if lo < hi:
                bm.add_range(lo, hi)
            return bm, True
        if f == "level":
            lvls = levels_matching(op, str(v))
            if not lvls:
                return BitMap(), True
            return BitMap.union(*(self.post(fmt.T_LEVEL + bytes([lv])) for lv in lvls)), True
        if op not in ("=", "!="):
            return self.all, False
        if f in ("service", "host"):
            # straight from the segment's resource table: exact for every value, "" included
            col = 0 if f == "service" else 1
            want = str(v)
            idx = [i for i, r in enumerate(self.seg.resources) if r[col] == want]
            bm = bitmap_of(np.flatnonzero(np.isin(self.seg.res, idx))) if idx else BitMap()
            return (bm, True) if op == "=" else (self.all - bm, True)
        if f == "trace_id":
            try:
                tid = bytes.fromhex(str(v))
            except ValueError:
                return (BitMap(), True) if op == "=" else (self.all, True)
            if not self.store.may_hold_trace(self.seg, tid):
                # not in this cold object: no request to object storage
                return (BitMap(), True) if op == "=" else (self.all, True)
            return self._eq_or_ne(op, fmt.T_TRACE + tid)
        for prefix, kind, tag in (
            ("attributes.", fmt.T_ATTR, "a:"),
            ("resource.", fmt.T_RES, "r:"),
        ):
            if f.startswith(prefix):
                key = f[len(prefix) :]
                if tag + key in self.seg.unindexed:
                    return self.all, False
                cands = [kind + t for t in attribute_terms(key, value_text(v))]
                bm = BitMap.union(*(self.post(t) for t in cands))
                return (bm, True) if op == "=" else (self.all - bm, True)
        return self.all, False


def _starts_ends_clean(text: str) -> bool:
    """True when no letter run of `text` can continue past its ends in a body."""
    return bool(text) and not text[0].isalpha() and not text[-1].isalpha()


def _cursor_limit(seg: SegmentReader, cursor: Cursor) -> int:
    """Rows [0, result) of a (ts, lid)-sorted segment come strictly before `cursor`."""
    ts = seg.ts
    c_ts, c_lid = cursor
    lo = int(np.searchsorted(ts, c_ts, "left"))
    hi = int(np.searchsorted(ts, c_ts, "right"))
    if lo == hi:
        return lo
    return lo + int(np.searchsorted(seg.lid[lo:hi], c_lid, "left"))


@dataclass
class _Tombstone:
    """An active deletion request, parsed once: it hides rows with log id <= max_lid."""

    id: str
    node: Node
    now_ns: int
    max_lid: int
    matcher: Matcher
    traces: frozenset[bytes] = frozenset()  # whole traces whose spans it hides too


def whole_traces(node: Node) -> set[bytes]:
    """Trace ids a query selects whole (`trace_id=X`, or an OR of those): deleting their
    logs deletes their spans too. Other queries leave spans alone."""
    if isinstance(node, Compare) and node.field == "trace_id" and node.op == "=":
        try:
            return {bytes.fromhex(str(node.value))}
        except ValueError:
            return set()
    if isinstance(node, Or):
        parts = [whole_traces(c) for c in node.children]
        return set().union(*parts) if all(parts) else set()
    return set()


def hidden_by(tombstones: list[_Tombstone], row: LogRow) -> bool:
    """Does a tombstone hide this decoded row? (Fresh rows, live tail, pages of exports;
    sealed segments use `Searcher.hidden_rows`, bitmaps.)"""
    return any(row.log_id <= t.max_lid and t.matcher(row) for t in tombstones)


def tombstones_of(store: Store, tenant: str) -> list[_Tombstone]:
    out = []
    for d in store.deletions(tenant):
        if d.state == ERASED:
            continue  # none of its rows is left anywhere
        key = ("tombstone", d.id, len(d.traces))
        t = store.query_cache.get(key)
        if t is None:
            node = parse(d.query)
            traces = whole_traces(node) | {bytes.fromhex(x) for x in d.traces}
            t = store.query_cache[key] = _Tombstone(
                d.id, node, d.now_ns, d.max_log_id, compile_matcher(node, d.now_ns),
                frozenset(traces),
            )  # fmt: skip
        assert isinstance(t, _Tombstone)
        out.append(t)
    return out


class Searcher:
    """Runs queries against one tenant's snapshot of the store.

    Rows of active deletion requests (tombstones) are left out of every answer: searches,
    matches (aggregations, exports), traces and resumes all go through `_segment_rows` or
    `hidden_rows` (sealed) and `hidden_by` (fresh).
    """

    def __init__(self, store: Store, tenant: str) -> None:
        self.store = store
        self.tenant = tenant
        self.resources = ResourceCache()
        self.tombstones = tombstones_of(store, tenant)
        self.hidden_traces = {tid for t in self.tombstones for tid in t.traces}

    def hidden_rows(self, seg: SegmentReader, tombstones: list[_Tombstone] | None = None) -> BitMap:
        """Rows of a sealed segment that tombstones hide. Segments are immutable, so the
        answer is cached per segment and tombstone."""
        ts_list = self.tombstones if tombstones is None else tombstones
        if not ts_list:
            return BitMap()
        cache = seg.derived
        parts: list[BitMap] = []
        for t in ts_list:
            key = ("hidden", t.id)
            rows = cache.get(key)
            if not isinstance(rows, BitMap):
                rows = self._tombstone_rows(seg, t)
                cache[key] = rows
            parts.append(rows)
        return BitMap.union(*parts)

    def _tombstone_rows(self, seg: SegmentReader, t: _Tombstone) -> BitMap:
        lid = seg.lid
        if not len(lid) or int(lid.min()) > t.max_lid:
            return BitMap()  # every row came after the request
        rows = self._matching_rows(seg, t.node, TimeWindow(), t.now_ns, t.matcher)
        if rows and int(lid.max()) > t.max_lid:
            rows &= bitmap_of(np.flatnonzero(lid <= t.max_lid))
        return rows

    def _segment_rows(
        self, seg: SegmentReader, node: Node, window: TimeWindow, now_ns: int, matcher: Matcher
    ) -> BitMap:
        bm = self._matching_rows(seg, node, window, now_ns, matcher)
        if self.tombstones and bm:
            bm -= self.hidden_rows(seg)
        return bm

    def _matching_rows(
        self, seg: SegmentReader, node: Node, window: TimeWindow, now_ns: int, matcher: Matcher
    ) -> BitMap:
        ev = _SegmentEval(self.store, self.tenant, seg, now_ns)
        bm, exact = ev.eval(node)
        if window.start > seg.meta.min_ts or window.end <= seg.meta.max_ts:
            ts = seg.ts
            lo = int(np.searchsorted(ts, window.start, "left"))
            hi = int(np.searchsorted(ts, window.end, "left"))
            rng = BitMap()
            if lo < hi:
                rng.add_range(lo, hi)
            bm &= rng
        if not exact and bm:
            keep = [r for r in bm.to_array().tolist() if matcher(self.segment_row(seg, r))]
            bm = BitMap(keep)
        return bm

    def segment_row(self, seg: SegmentReader, r: int) -> LogRow:
        res_idx = int(seg.res[r])
        service, host, resource_pb, scope_pb = seg.resources[res_idx]
        rec = seg.block(r // fmt.BLOCK_ROWS)[r % fmt.BLOCK_ROWS]
        return row_from_record(
            rec,
            int(seg.ts[r]),
            int(seg.lid[r]),
            int(seg.level[r]),
            service,
            host,
            resource_pb,
            scope_pb,
            self.resources,
        )

    def search(
        self,
        node: Node,
        now_ns: int,
        window: TimeWindow | None = None,
        limit: int = 100,
        cursor: Cursor | None = None,
    ) -> SearchResult:
        window = (window or TimeWindow()).intersect(time_window(node, now_ns))
        if window.empty:
            return SearchResult([], 0, None)
        matcher = compile_matcher(node, now_ns)
        snap = self.store.snapshot(self.tenant)
        total = 0
        # candidates for the page: (ts, lid, source, row)
        cands: list[tuple[int, int, object, int]] = []
        for seg in snap.segments:
            m = seg.meta
            if m.rows == 0 or m.max_ts < window.start or m.min_ts >= window.end:
                continue
            bm = self._segment_rows(seg, node, window, now_ns, matcher)
            n = len(bm)
            if not n:
                continue
            total += n
            if limit <= 0:
                continue
            if cursor is not None:
                if m.min_ts > cursor[0]:
                    continue
                upto = _cursor_limit(seg, cursor)
                page = rows_array(bm)
                if upto < m.rows:
                    page = page[page < upto]
            else:
                page = rows_array(bm)
            top = page[-(limit + 1) :]
            ts_col, lid_col = seg.ts, seg.lid
            for r in top.tolist():
                cands.append((int(ts_col[r]), int(lid_col[r]), seg, r))
        for b in snap.fresh:
            total += self._fresh_rows(b, matcher, window, cursor, limit, cands)
        cands.sort(key=lambda c: (c[0], c[1]), reverse=True)
        page_c = cands[:limit]
        rows: list[LogRow] = []
        for _ts, _lid, src, r in page_c:
            if isinstance(src, SegmentReader):
                rows.append(self.segment_row(src, r))
            else:
                assert isinstance(src, LogBatch)
                rows.append(row_from_batch(src, r, self.resources))
        nxt = (page_c[-1][0], page_c[-1][1]) if len(cands) > limit and page_c else None
        return SearchResult(rows, total, nxt)

    def _fresh_rows(
        self,
        b: LogBatch,
        matcher: Matcher,
        window: TimeWindow,
        cursor: Cursor | None,
        limit: int,
        cands: list[tuple[int, int, object, int]],
    ) -> int:
        n = 0
        ws, we = window.start, window.end
        for i, t in enumerate(b.ts):
            if t < ws or t >= we:
                continue
            row = row_from_batch(b, i, self.resources)
            if not matcher(row) or hidden_by(self.tombstones, row):
                continue
            n += 1
            if limit > 0 and (cursor is None or (t, b.log_id[i]) < cursor):
                cands.append((t, b.log_id[i], b, i))
        return n

    def matches(self, node: Node, now_ns: int, window: TimeWindow | None = None) -> Matches:
        """All matching rows, found by the same evaluation as `search` but not decoded."""
        window = (window or TimeWindow()).intersect(time_window(node, now_ns))
        out = Matches(window, [], [])
        if window.empty:
            return out
        matcher = compile_matcher(node, now_ns)
        snap = self.store.snapshot(self.tenant)
        for seg in snap.segments:
            m = seg.meta
            if m.rows == 0 or m.max_ts < window.start or m.min_ts >= window.end:
                continue
            bm = self._segment_rows(seg, node, window, now_ns, matcher)
            if bm:
                out.segments.append((seg, bm))
        # the empty query and no tombstone need no row objects: the time test decides
        rowless = isinstance(node, MatchAll) and not self.tombstones
        ws, we = window.start, window.end
        for b in snap.fresh:
            rows = [
                i
                for i, t in enumerate(b.ts)
                if ws <= t < we and (rowless or self._keeps(b, i, matcher))
            ]
            if rows:
                out.fresh.append((b, rows))
        return out

    def _keeps(self, b: LogBatch, i: int, matcher: Matcher) -> bool:
        row = row_from_batch(b, i, self.resources)
        return matcher(row) and not hidden_by(self.tombstones, row)

    def trace_logs(self, trace_id: bytes) -> list[LogRow]:
        """Every log of a trace, any age: one prefix scan of the trace's posting key."""
        snap = self.store.snapshot(self.tenant)
        # the snapshot first, then only its segments: a memtable sealed meanwhile is
        # still in snap.fresh, and its new segment is not in `segs`, so no row twice
        segs = {s.meta.id: s for s in snap.segments}
        rows: list[LogRow] = []
        term = fmt.T_TRACE + trace_id
        found: list[tuple[SegmentReader, BitMap]] = []
        for seg_id, value in self.store.posting_scan(self.tenant, term):
            seg = segs.get(seg_id)
            if seg is not None:
                found.append((seg, seg.decode_posting(term, value)))
        # cold segments hold their postings in their objects; their bloom filters (in
        # RocksDB) rule out all but the few that may hold the trace
        for seg in snap.segments:
            if seg.meta.cold and self.store.may_hold_trace(seg, trace_id):
                found.append((seg, seg.posting(term)))
        for seg, bm in found:
            if self.tombstones and bm:
                bm = bm - self.hidden_rows(seg)
            rows.extend(self.segment_row(seg, r) for r in bm.to_array().tolist())
        for b in snap.fresh:
            for i, t in enumerate(b.trace_id):
                if t == trace_id:
                    row = row_from_batch(b, i, self.resources)
                    if not hidden_by(self.tombstones, row):
                        rows.append(row)
        rows.sort(key=lambda r: (r.ts, r.log_id))
        return rows
