"""Aggregations: histograms (matching records per interval and group) and facets (the top
values of a field among matching records).

Both count from the same per-segment bitmaps as `Searcher.search` (`Searcher.matches`),
batch-wise with numpy over the segment's columns: time buckets, levels and the resource
index (service, host, resource attributes) never go through a Python loop per row. Record
attributes are counted from postings where the segment indexes the key (one posting per
distinct value, intersected with the matching rows); only a key a segment left unindexed
(too many distinct values) makes it decode that segment's matching records.
"""

from __future__ import annotations

import heapq
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from pyroaring import BitMap

from otelog.anyvalue import flatten_attributes, flatten_serialized
from otelog.errors import InvalidArgument
from otelog.model import DEFAULT_TENANT, Level, LogBatch
from otelog.query.duration import parse_duration_ns
from otelog.query.execute import Matches, Searcher
from otelog.query.lexer import show
from otelog.query.plan import MAX_TS
from otelog.query.service import QueryService
from otelog.store import format as fmt
from otelog.store.segment import SegmentReader, rows_array

__all__ = [
    "MAX_BUCKETS",
    "MAX_FACET_LIMIT",
    "MAX_POINTS",
    "MIN_INTERVAL_NS",
    "FacetCount",
    "FacetRequest",
    "Field",
    "HistogramPoint",
    "HistogramRequest",
    "facets",
    "histogram",
    "parse_field",
    "parse_interval",
]

MIN_INTERVAL_NS = 1_000_000_000
# Intervals in one histogram's time range: a chart has no use for more, and the count
# arrays stay small whatever the range.
MAX_BUCKETS = 10_000
# (interval, group) pairs in one answer: grouping by a high-cardinality key over many
# intervals would otherwise build a response nobody can draw.
MAX_POINTS = 100_000
MAX_FACET_LIMIT = 1000
# Past this many cells (intervals x groups) a part counts with a sort instead of a dense
# bincount, so a wide range with many groups cannot allocate a huge array.
_DENSE_CELLS = 1 << 22

LEVEL_LABELS: tuple[str, ...] = tuple(lv.name for lv in Level)
_FIELD_HELP = "use level, service, host, attributes.<key> or resource.<key>"
_PREFIXES = (
    ("attributes.", "attributes"),
    ("attr.", "attributes"),
    ("resource.", "resource"),
    ("res.", "resource"),
)


@dataclass(frozen=True)
class Field:
    """What to group or facet by: `level`, `service`, `host`, or an attribute `key` of the
    record (`attributes`) or of its resource (`resource`)."""

    kind: str
    key: str = ""


def parse_field(text: str, what: str) -> Field:
    """A field name as the query language spells it (`severity` and `attr.`/`res.` too)."""
    t = text.strip()
    low = t.lower()
    if low in ("level", "severity"):
        return Field("level")
    if low in ("service", "host"):
        return Field(low)
    for prefix, kind in _PREFIXES:
        if low.startswith(prefix) and len(t) > len(prefix):
            # attribute keys are case-sensitive; only the prefix is not
            return Field(kind, t[len(prefix) :])
    raise InvalidArgument(f"{what}: unknown field {show(t)}; {_FIELD_HELP}")


def parse_interval(text: str) -> int:
    try:
        ns = parse_duration_ns(text)
    except ValueError as e:
        raise InvalidArgument(f"interval: {e}") from None
    if ns < MIN_INTERVAL_NS:
        raise InvalidArgument(f"interval: {show(text)} is shorter than the minimum of 1s")
    return ns


@dataclass
class HistogramRequest:
    query: str = ""
    since: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    interval: str = "1m"
    group_by: str | None = None


@dataclass(frozen=True)
class HistogramPoint:
    """Records in [start_ns, start_ns + interval) whose group value is `group` (None: the
    record has no value for the field, or the histogram is not grouped)."""

    start_ns: int
    group: str | None
    count: int


@dataclass
class FacetRequest:
    field: str
    query: str = ""
    since: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    limit: int = 10


@dataclass(frozen=True)
class FacetCount:
    value: str
    count: int


# ---- group labels


class _Labels:
    """Distinct group values and their small integer codes; code 0 is "no value"."""

    def __init__(self) -> None:
        self.values: list[str | None] = [None]
        self._codes: dict[str, int] = {}

    def code(self, value: str | None) -> int:
        if value is None:
            return 0
        c = self._codes.get(value)
        if c is None:
            c = self._codes[value] = len(self.values)
            self.values.append(value)
        return c

    def table(self, values: Iterable[str | None]) -> np.ndarray:
        """Codes of `values` as an array to index with a column (one entry per value)."""
        return np.fromiter((self.code(v) for v in values), dtype=np.int64)


# ---- attribute postings of a segment

_TERMS_LOCK = threading.Lock()
# segment -> attribute key -> [(posting term, value text)]; segments are immutable, and the
# cache entry goes with the reader (a merged-away segment's reader is dropped)
_ATTR_TERMS: weakref.WeakKeyDictionary[SegmentReader, dict[str, list[tuple[bytes, str]]]] = (
    weakref.WeakKeyDictionary()
)


def _attr_terms(seg: SegmentReader, key: str) -> list[tuple[bytes, str]] | None:
    """The posting terms of every value of attribute `key` in `seg`, with the value's text;
    None when the segment has no postings for the key (too many distinct values)."""
    if "a:" + key in seg.unindexed:
        return None
    with _TERMS_LOCK:
        cached = _ATTR_TERMS.get(seg, {}).get(key)
    if cached is not None:
        return cached
    # A value's term is T_ATTR + a serialized KeyValue, which always opens with field 1
    # (the key) then the tag of field 2 (the value): see anyvalue.kv_terms.
    prefix = fmt.T_ATTR + KeyValue(key=key).SerializeToString() + b"\x12"
    out: list[tuple[bytes, str]] = []
    for t in seg.terms():
        if t.startswith(prefix):
            for _k, text in flatten_attributes([KeyValue.FromString(t[1:])]):
                out.append((t, text))
    with _TERMS_LOCK:
        _ATTR_TERMS.setdefault(seg, {})[key] = out
    return out


def _record_attr(rec_pb: bytes, key: str) -> str | None:
    """The text of attribute `key` (a dotted path) of a serialized LogRecord, as
    `LogRow.flat_attrs` gives it; only attributes on the path are flattened, which is
    what makes decoding a million records affordable."""
    found = None
    for kv in LogRecord.FromString(rec_pb).attributes:
        k = kv.key
        if k == key or key.startswith(k + "."):
            for path, text in flatten_attributes([kv]):
                if path == key:
                    found = text  # the last one wins, as in a dict of the flattened pairs
    return found


# ---- parts: the matching rows of one segment or one fresh batch, as columns


class _SegmentPart:
    def __init__(self, seg: SegmentReader, bm: BitMap) -> None:
        self.seg = seg
        self.bm = bm
        # the whole segment matches: use the columns as they are, no gather
        self.full = len(bm) == seg.meta.rows
        self._rows: np.ndarray | None = None
        self.resources = [(s, h, rpb) for s, h, rpb, _scope in seg.resources]

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = rows_array(self.bm)
        return self._rows

    def _take(self, col: np.ndarray) -> np.ndarray:
        return col if self.full else col[self.rows]

    def ts(self) -> np.ndarray:
        return self._take(self.seg.ts)

    def level(self) -> np.ndarray:
        return self._take(self.seg.level)

    def res(self) -> np.ndarray:
        return self._take(self.seg.res)

    def level_counts(self) -> np.ndarray:
        if self.full:
            return np.asarray(self.seg.meta.level_counts, dtype=np.int64)
        return np.bincount(self.level(), minlength=len(LEVEL_LABELS))

    def extent(self) -> tuple[int, int]:
        # rows are in time order: the first and last matching rows bound the times
        ts = self.seg.ts
        return int(ts[self.bm.min()]), int(ts[self.bm.max()])

    def _decoded(self, key: str) -> list[str | None]:
        out: list[str | None] = []
        blk_no, recs = -1, []
        for r in self.rows.tolist():
            b, i = divmod(r, fmt.BLOCK_ROWS)
            if b != blk_no:
                blk_no, recs = b, self.seg.block(b)
            out.append(_record_attr(recs[i], key))
        return out

    def attr_codes(self, key: str, labels: _Labels) -> np.ndarray:
        terms = _attr_terms(self.seg, key)
        if terms is None:
            return labels.table(self._decoded(key))
        rows = self.rows
        codes = np.zeros(len(rows), dtype=np.int64)
        for term, text in terms:
            hit = self.seg.posting(term)
            if not self.full:
                hit &= self.bm
            if hit:
                codes[np.searchsorted(rows, rows_array(hit))] = labels.code(text)
        return codes

    def attr_counts(self, key: str) -> Counter[str]:
        terms = _attr_terms(self.seg, key)
        if terms is None:
            return Counter(v for v in self._decoded(key) if v is not None)
        counts: Counter[str] = Counter()
        for term, text in terms:
            p = self.seg.posting(term)
            n = len(p) if self.full else p.intersection_cardinality(self.bm)
            if n:
                counts[text] += n
        return counts


class _FreshPart:
    def __init__(self, b: LogBatch, rows: list[int]) -> None:
        idx = np.asarray(rows, dtype=np.int64)
        self.batch = b
        self.row_list = rows
        self._ts = np.asarray(b.ts, dtype=np.int64)[idx]
        self._level = np.frombuffer(bytes(b.level), dtype=np.uint8)[idx]
        self._res = np.asarray(b.res, dtype=np.int64)[idx]
        self.resources = [(r.service, r.host, r.resource_pb) for r in b.resources]

    def ts(self) -> np.ndarray:
        return self._ts

    def level(self) -> np.ndarray:
        return self._level

    def res(self) -> np.ndarray:
        return self._res

    def level_counts(self) -> np.ndarray:
        return np.bincount(self._level, minlength=len(LEVEL_LABELS))

    def extent(self) -> tuple[int, int]:
        return int(self._ts.min()), int(self._ts.max())

    def _values(self, key: str) -> list[str | None]:
        # fresh rows are a few seconds' worth: row by row is fine here
        attrs = self.batch.attrs
        return [flatten_serialized(attrs[i]).get(key) for i in self.row_list]

    def attr_codes(self, key: str, labels: _Labels) -> np.ndarray:
        return labels.table(self._values(key))

    def attr_counts(self, key: str) -> Counter[str]:
        return Counter(v for v in self._values(key) if v is not None)


_Part = _SegmentPart | _FreshPart


def _parts(m: Matches) -> list[_Part]:
    parts: list[_Part] = [_SegmentPart(seg, bm) for seg, bm in m.segments]
    parts.extend(_FreshPart(b, rows) for b, rows in m.fresh)
    return parts


def _resource_values(part: _Part, field: Field, searcher: Searcher) -> Sequence[str | None] | None:
    """The field's value for each resource of the part, if the field is per resource."""
    if field.kind == "service":
        return [s for s, _h, _r in part.resources]
    if field.kind == "host":
        return [h or None for _s, h, _r in part.resources]
    if field.kind == "resource":
        return [searcher.resources.flat(rpb).get(field.key) for _s, _h, rpb in part.resources]
    return None


# ---- histogram


def _group_codes(
    part: _Part, field: Field | None, labels: _Labels, searcher: Searcher
) -> np.ndarray | None:
    if field is None:
        return None
    if field.kind == "level":
        return labels.table(LEVEL_LABELS)[part.level()]
    per_res = _resource_values(part, field, searcher)
    if per_res is not None:
        return labels.table(per_res)[part.res()]
    return part.attr_codes(field.key, labels)


def _count_cells(
    rel: np.ndarray, codes: np.ndarray | None, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket, group code, count) of every non-empty cell of one part."""
    if codes is None:
        codes = np.zeros(len(rel), dtype=np.int64)
    lo = int(rel.min())
    span = int(rel.max()) - lo + 1
    keys = (rel - lo) * groups + codes
    if span * groups <= _DENSE_CELLS:
        counts = np.bincount(keys, minlength=span * groups)
        cells = np.flatnonzero(counts)
        n = counts[cells]
    else:
        cells, n = np.unique(keys, return_counts=True)
    return lo + cells // groups, cells % groups, n


def _range_check(first: int, last: int, interval_ns: int) -> None:
    n = last - first + 1
    if n > MAX_BUCKETS:
        raise InvalidArgument(
            f"interval: {n:,} intervals of {interval_ns / 1e9:g}s in the time range, more "
            f"than the maximum of {MAX_BUCKETS:,}; use a longer interval or a shorter range"
        )


def histogram(
    qs: QueryService,
    req: HistogramRequest,
    tenant: str = DEFAULT_TENANT,
    now_ns: int | None = None,
) -> list[HistogramPoint]:
    """Matching records per interval (aligned on multiples of the interval since the epoch)
    and group, only non-empty ones, ordered by start then group (no value first).

    The time range is the query's window; an open start is closed by the oldest matching
    record, an open end by now (or the newest record, if later). It may hold at most
    MAX_BUCKETS intervals.
    """
    interval = parse_interval(req.interval)
    field = parse_field(req.group_by, "groupBy") if req.group_by else None
    node = qs.compile(req.query)
    now = time.time_ns() if now_ns is None else now_ns
    window = qs.window(req.since, req.start_ns, req.end_ns, now)
    if window.start > 0 and window.end < MAX_TS:
        # both ends given: refuse before reading anything
        _range_check(window.start // interval, (window.end - 1) // interval, interval)
    searcher = qs.searcher(tenant)
    m = searcher.matches(node, now, window)
    parts = _parts(m)
    if not parts:
        return []
    extents = [p.extent() for p in parts]
    lo = m.window.start if m.window.start > 0 else min(e[0] for e in extents)
    hi = m.window.end - 1 if m.window.end < MAX_TS else max(now, *(e[1] for e in extents))
    first = lo // interval
    _range_check(first, hi // interval, interval)

    labels = _Labels()
    cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for part in parts:
        codes = _group_codes(part, field, labels, searcher)
        rel = part.ts() // interval - first
        cells.append(_count_cells(rel, codes, len(labels.values)))
    groups = len(labels.values)
    keys = np.concatenate([b * groups + g for b, g, _n in cells])
    counts = np.concatenate([n for _b, _g, n in cells])
    uniq, inverse = np.unique(keys, return_inverse=True)
    if len(uniq) > MAX_POINTS:
        raise InvalidArgument(
            f"groupBy: {len(uniq):,} (interval, group) pairs, more than the maximum of "
            f"{MAX_POINTS:,}; group by a field with fewer values or use a longer interval"
        )
    totals = np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)
    points = [
        HistogramPoint(
            (first + int(k) // groups) * interval, labels.values[int(k) % groups], int(c)
        )
        for k, c in zip(uniq.tolist(), totals.tolist(), strict=True)
    ]
    points.sort(key=lambda p: (p.start_ns, p.group is not None, p.group or ""))
    return points


# ---- facets


def facets(
    qs: QueryService, req: FacetRequest, tenant: str = DEFAULT_TENANT, now_ns: int | None = None
) -> list[FacetCount]:
    """The `limit` most frequent values of a field among matching records, by count
    descending then value; records without a value for the field are not counted."""
    field = parse_field(req.field, "field")
    if not 1 <= req.limit <= MAX_FACET_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_FACET_LIMIT}")
    node = qs.compile(req.query)
    now = time.time_ns() if now_ns is None else now_ns
    window = qs.window(req.since, req.start_ns, req.end_ns, now)
    searcher = qs.searcher(tenant)
    counts: Counter[str] = Counter()
    for part in _parts(searcher.matches(node, now, window)):
        if field.kind == "level":
            for lv, n in enumerate(part.level_counts().tolist()):
                if n:
                    counts[LEVEL_LABELS[lv]] += n
            continue
        per_res = _resource_values(part, field, searcher)
        if per_res is None:
            counts.update(part.attr_counts(field.key))
            continue
        by_res = np.bincount(part.res(), minlength=len(per_res))
        for r in np.flatnonzero(by_res).tolist():
            value = per_res[r]
            if value is not None:
                counts[value] += int(by_res[r])
    # a heap, not a sort: an unindexed key can have a value per record
    top = heapq.nsmallest(req.limit, counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [FacetCount(v, n) for v, n in top]
