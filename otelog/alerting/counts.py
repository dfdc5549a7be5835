"""Per-rule, per-group counts of matching records in time buckets: what rules evaluate.

Each rule keeps a ring of `slots` buckets (`Rule.bucket_ns` wide) covering its history
(the window, plus the baseline for spike and absence rules), one row per group. The ring
is filled two ways, and each record is counted by exactly one of them:

- seeding (`seed`): when a rule starts (server start, rule created or changed), one pass
  over the store: the query's bitmaps per segment (`Searcher.matches`), then numpy over
  the matching rows' time stamps — no record is decoded unless grouping by a record
  attribute;
- incrementally (`add_batch`): every batch the writer commits afterwards, matched with
  the rule's `BatchFilter`.

Which records the seed counts is decided by WAL sequence (`log_id >> 24`): those at or
below the sequence the engine had reached when the rule started; the engine's queue
delivers the later ones. Time cannot draw that line (clients stamp records, late or early);
the sequence can, because the single writer assigns it in commit order.

A bucket lives in slot `bucket % slots`; each slot remembers which bucket it holds, so a
slot is cleared when a newer bucket claims it and a read of a bucket the ring has moved
past gives 0. No clock-driven sweep is needed and late records land in their own bucket
while it is still in the ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelog.alerting.batch_filter import BatchFilter, BatchView
from otelog.alerting.rules import Rule
from otelog.anyvalue import flatten_attributes, flatten_serialized
from otelog.model import Level, LogBatch
from otelog.query.aggregate import Field
from otelog.query.execute import Searcher
from otelog.query.plan import TimeWindow
from otelog.query.rows import ResourceCache
from otelog.store import format as fmt
from otelog.store.segment import SegmentReader, rows_array
from otelog.store.store import Store

__all__ = ["MAX_GROUPS", "OTHER_GROUP", "Part", "RuleCounts", "add_batch", "seed"]

# Groups one rule tracks; later values share OTHER_GROUP. A groupBy on a key with a
# value per request (an id) would otherwise grow memory and alerts without bound.
MAX_GROUPS = 1000
OTHER_GROUP = "__other__"
_LEVEL_NAMES: list[str | None] = [lv.name for lv in Level]

Group = str | None


class Part:
    """Matching rows of one batch or one segment, as the columns counting needs."""

    def __init__(
        self,
        ts: np.ndarray,
        res: np.ndarray,
        level: np.ndarray,
        resources: Sequence[tuple[str, str, bytes]],
        attrs: Sequence[list[bytes]] | None = None,
        seg: SegmentReader | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.ts = ts
        self.res = res
        self.level = level
        self.resources = resources
        self._attrs = attrs  # serialized KeyValues per row (a batch's)
        self._seg = seg  # or the segment and the row numbers to decode
        self._rows = rows

    def __len__(self) -> int:
        return len(self.ts)

    def attribute(self, key: str) -> list[Group]:
        if self._attrs is not None:
            return [flatten_serialized(a).get(key) for a in self._attrs]
        assert self._seg is not None and self._rows is not None
        out: list[Group] = []
        blk_no, recs = -1, []
        for r in self._rows.tolist():
            b, i = divmod(r, fmt.BLOCK_ROWS)
            if b != blk_no:
                blk_no, recs = b, self._seg.block(b)
            attrs = LogRecord.FromString(recs[i]).attributes
            out.append(next((t for k, t in flatten_attributes(attrs) if k == key), None))
        return out


def batch_part(view: BatchView, mask: np.ndarray) -> Part:
    rows = np.flatnonzero(mask)
    batch = view.batch
    attrs = batch.attrs
    return Part(
        ts=view.ts[rows],
        res=view.res[rows],
        level=view.level[rows],
        resources=[(r.service, r.host, r.resource_pb) for r in batch.resources],
        attrs=[attrs[i] for i in rows.tolist()],
    )


def group_codes(
    field: Field | None, part: Part, cache: ResourceCache
) -> tuple[np.ndarray, list[Group]]:
    """(code per row, value per code) of the rule's groupBy field over a part.

    Values agree with `aggregate.histogram`'s groups: service as sent, host and attributes
    None when missing.
    """
    n = len(part)
    if field is None:
        return np.zeros(n, dtype=np.int64), [None]
    if field.kind == "level":
        return part.level.astype(np.int64), list(_LEVEL_NAMES)
    if field.kind in ("service", "host", "resource"):
        per_res: list[Group]
        if field.kind == "service":
            per_res = [s for s, _h, _r in part.resources]
        elif field.kind == "host":
            per_res = [h or None for _s, h, _r in part.resources]
        else:
            per_res = [cache.flat(rpb).get(field.key) for _s, _h, rpb in part.resources]
        return part.res, per_res
    values = part.attribute(field.key)
    table: dict[Group, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int64, count=n)
    return codes, list(table)


class RuleCounts:
    """The ring of one rule: counts[group row, slot], and per group the services seen."""

    def __init__(self, bucket_ns: int, slots: int) -> None:
        self.bucket_ns = bucket_ns
        self.slots = slots
        self.rows: dict[Group, int] = {}
        self.groups: list[Group] = []
        self.counts = np.zeros((4, slots), dtype=np.int64)
        self.slot_bucket = np.full(slots, -1, dtype=np.int64)
        # group row -> service -> newest bucket it had a matching record in
        self.services: list[dict[str, int]] = []

    def _row(self, group: Group) -> int:
        r = self.rows.get(group)
        if r is not None:
            return r
        if len(self.groups) >= MAX_GROUPS and group != OTHER_GROUP:
            return self._row(OTHER_GROUP)
        r = self.rows[group] = len(self.groups)
        self.groups.append(group)
        self.services.append({})
        if r >= len(self.counts):
            grown = np.zeros((2 * len(self.counts), self.slots), dtype=np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        return r

    def ensure_group(self, group: Group) -> None:
        """Track `group` even before it has a record (the one group of an ungrouped rule,
        whose absence is an alert)."""
        self._row(group)

    def add(
        self,
        ts: np.ndarray,
        codes: np.ndarray,
        values: list[Group],
        res: np.ndarray,
        services: Sequence[str],
        now_ns: int,
    ) -> int:
        """Count rows (time stamp, group code into `values`, resource index into `services`).

        Rows stamped more than a bucket ahead of `now_ns` are not counted: a client clock
        far ahead must not claim slots and push the baseline out of the ring. Rows older
        than the ring are not counted either. Returns the rows counted.
        """
        if not len(ts):
            return 0
        cur = now_ns // self.bucket_ns
        b = ts // self.bucket_ns
        lo, hi = int(b.min()), int(b.max())
        if hi > cur + 1 or lo <= cur + 1 - self.slots:
            keep = (b <= cur + 1) & (b > cur + 1 - self.slots)
            b, codes, res = b[keep], codes[keep], res[keep]
            if not len(b):
                return 0
            lo, hi = int(b.min()), int(b.max())
        if lo == hi:
            return self._add_one_bucket(lo, codes, values, res, services)
        ub = np.unique(b)
        slot = ub % self.slots
        have = self.slot_bucket[slot]
        newer = ub > have
        if newer.any():
            claim = slot[newer]
            self.counts[:, claim] = 0
            self.slot_bucket[claim] = ub[newer]
        if (ub < have).any():
            # the slot already holds a later bucket (the wall clock went back): drop these
            ok = np.isin(b, ub[ub >= have])
            b, codes, res = b[ok], codes[ok], res[ok]
        g = self._group_rows(codes, values)
        cells, n = np.unique(g * self.slots + b % self.slots, return_counts=True)
        self.counts.reshape(-1)[cells] += n
        self._note_services(g, res, b, services)
        return len(b)

    def _group_rows(self, codes: np.ndarray, values: list[Group]) -> np.ndarray:
        """The ring row of each row's group."""
        if len(values) == 1:
            return np.full(len(codes), self._row(values[0]), dtype=np.int64)
        # only values some row has: a resource of the batch with no matching record must
        # not become a group (an absence rule would call it absent)
        row_of = np.full(len(values), -1, dtype=np.int64)
        for u in np.unique(codes).tolist():
            row_of[u] = self._row(values[u])
        return row_of[codes]

    def _add_one_bucket(
        self,
        bucket: int,
        codes: np.ndarray,
        values: list[Group],
        res: np.ndarray,
        services: Sequence[str],
    ) -> int:
        """`add` for rows all in one bucket: what a live batch almost always is."""
        s = bucket % self.slots
        have = int(self.slot_bucket[s])
        if bucket < have:
            return 0  # the slot holds a later bucket (the wall clock went back)
        if bucket > have:
            self.counts[:, s] = 0
            self.slot_bucket[s] = bucket
        g = self._group_rows(codes, values)
        n = len(self.groups)
        self.counts[:n, s] += np.bincount(g, minlength=n)
        nres = max(len(services), 1)
        for k in np.unique(g * nres + res).tolist():
            row, r = divmod(k, nres)
            seen = self.services[row]
            svc = services[r]
            if seen.get(svc, -1) < bucket:
                seen[svc] = bucket
        return len(codes)

    def _note_services(
        self, g: np.ndarray, res: np.ndarray, b: np.ndarray, services: Sequence[str]
    ) -> None:
        nres = max(len(services), 1)
        key = g * nres + res
        order = np.lexsort((b, key))
        ks, bs = key[order], b[order]
        last = np.ones(len(ks), dtype=bool)
        last[:-1] = ks[1:] != ks[:-1]
        for k, bucket in zip(ks[last].tolist(), bs[last].tolist(), strict=True):
            row, r = divmod(k, nres)
            seen = self.services[row]
            svc = services[r]
            if seen.get(svc, -1) < bucket:
                seen[svc] = bucket

    def matrix(self, end_bucket: int, n: int) -> np.ndarray:
        """Counts of every group in buckets end_bucket-n+1 .. end_bucket (groups x n)."""
        buckets = np.arange(end_bucket - n + 1, end_bucket + 1, dtype=np.int64)
        idx = buckets % self.slots
        valid = self.slot_bucket[idx] == buckets
        return self.counts[: len(self.groups), idx] * valid

    def services_since(self, row: int, bucket: int) -> list[str]:
        return sorted(s for s, b in self.services[row].items() if b >= bucket and s)

    def prune(self, end_bucket: int, keep: set[Group]) -> None:
        """Forget groups with no record left in the ring, unless in `keep` (an alert of
        theirs is open): a groupBy service whose service left would otherwise stay."""
        if not self.groups:
            return
        alive = self.matrix(end_bucket, self.slots).sum(axis=1) > 0
        survivors = [i for i, g in enumerate(self.groups) if alive[i] or g in keep]
        if len(survivors) == len(self.groups):
            return
        idx = np.asarray(survivors, dtype=np.int64)
        counts = np.zeros((max(4, len(idx)), self.slots), dtype=np.int64)
        counts[: len(idx)] = self.counts[idx]
        self.counts = counts
        self.groups = [self.groups[i] for i in survivors]
        self.services = [self.services[i] for i in survivors]
        self.rows = {g: i for i, g in enumerate(self.groups)}


def add_part(counts: RuleCounts, rule: Rule, part: Part, cache: ResourceCache, now_ns: int) -> int:
    if not len(part):
        return 0
    codes, values = group_codes(rule.group_by, part, cache)
    services = [s for s, _h, _r in part.resources]
    return counts.add(part.ts, codes, values, part.res, services, now_ns)


def add_batch(
    counts: RuleCounts,
    rule: Rule,
    flt: BatchFilter,
    batch: LogBatch,
    cache: ResourceCache,
    now_ns: int,
) -> int:
    """Count a committed batch into a rule's ring. Returns the rows counted."""
    view = BatchView(batch, cache)
    mask = flt.view_mask(view)
    if not mask.any():
        return 0
    return add_part(counts, rule, batch_part(view, mask), cache, now_ns)


def seed(
    counts: RuleCounts,
    rule: Rule,
    store: Store,
    upto_seq: int | None,
    now_ns: int,
    start_ns: int | None = None,
) -> int:
    """Count what the store holds for the rule's history, in one pass; only records of WAL
    sequence <= `upto_seq` (None: all). Returns the rows counted."""
    searcher = Searcher(store, rule.tenant)
    cache = searcher.resources
    start = now_ns - rule.history_ns - rule.bucket_ns if start_ns is None else start_ns
    window = TimeWindow(max(0, start), now_ns + 2 * rule.bucket_ns)
    m = searcher.matches(rule.node, now_ns, window)
    limit = None if upto_seq is None else (upto_seq + 1) << 24
    total = 0
    for seg, bm in m.segments:
        rows = rows_array(bm)
        if limit is not None:
            rows = rows[seg.lid[rows] < limit]
        part = Part(
            ts=seg.ts[rows],
            res=seg.res[rows].astype(np.int64),
            level=seg.level[rows],
            resources=[(s, h, rpb) for s, h, rpb, _scope in seg.resources],
            seg=seg,
            rows=rows,
        )
        total += add_part(counts, rule, part, cache, now_ns)
    for b, row_list in m.fresh:
        mask = np.zeros(len(b), dtype=bool)
        mask[row_list] = True
        if limit is not None:
            mask &= np.asarray(b.log_id, dtype=np.int64) < limit
        total += add_part(counts, rule, batch_part(BatchView(b, cache), mask), cache, now_ns)
    return total
