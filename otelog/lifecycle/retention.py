"""Retention policies: which records stay hot how long, then cold how long, and where.

A record is governed by the first policy (highest priority, then name) whose query
matches it, else by the default. It is hot for `hot_days` after its timestamp, then
cold (in object storage) for `cold_days`, then gone. Decisions are per segment and made
with bitmaps: a segment moves or goes only as a whole, and a segment holding some
expired rows is rewritten without them.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np
from pyroaring import BitMap

from otelog.errors import InvalidArgument
from otelog.lifecycle.objstore import Destination
from otelog.query.execute import Searcher
from otelog.query.match import compile_matcher
from otelog.query.parser import parse
from otelog.query.plan import TimeWindow
from otelog.store import format as fmt
from otelog.store.segment import SegmentReader

DAY_NS = 86_400 * 1_000_000_000
DEFAULT = "default"
POLICY_PREFIX = b"ret/"


def policy_prefix(tenant: str) -> bytes:
    return POLICY_PREFIX + fmt.tenant_prefix(tenant)


@dataclass
class RetentionPolicy:
    name: str
    query: str = ""
    hot_days: float = 7.0
    cold_days: float = 365.0
    destination: str = ""  # s3://bucket/prefix; empty: the configured cold destination
    priority: int = 0

    def validate(self) -> RetentionPolicy:
        if not self.name or len(self.name) > 200:
            raise InvalidArgument("a policy needs a name of 1..200 characters")
        if not (0 <= self.hot_days <= 36_500 and 0 <= self.cold_days <= 36_500):
            raise InvalidArgument("hot_days and cold_days must be between 0 and 36500")
        if self.name == DEFAULT and self.query:
            raise InvalidArgument("the default policy applies to every record: no query")
        if self.destination:
            Destination.parse(self.destination)  # s3://bucket/prefix, or a clear error
        parse(self.query)  # a bad query fails here, with its position
        return self

    @property
    def hot_ns(self) -> int:
        return int(self.hot_days * DAY_NS)

    @property
    def total_ns(self) -> int:
        return int((self.hot_days + self.cold_days) * DAY_NS)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @staticmethod
    def decode(data: bytes) -> RetentionPolicy:
        return RetentionPolicy(**json.loads(data))


def ordered(policies: list[RetentionPolicy], default: RetentionPolicy) -> list[RetentionPolicy]:
    """Matching order: specific policies by priority (high first) then name; default last."""
    specific = [p for p in policies if p.name != DEFAULT]
    specific.sort(key=lambda p: (-p.priority, p.name))
    return [*specific, next((p for p in policies if p.name == DEFAULT), default)]


def load_file(path: str) -> list[RetentionPolicy]:
    """`[[policy]]` tables of a TOML file."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidArgument(f"retention file {path}: {e}") from None
    out = []
    for i, item in enumerate(doc.get("policy", [])):
        try:
            out.append(RetentionPolicy(**item).validate())
        except TypeError as e:
            raise InvalidArgument(f"retention file {path}, policy {i + 1}: {e}") from None
    return out


def assign(
    searcher: Searcher, seg: SegmentReader, policies: list[RetentionPolicy]
) -> list[tuple[RetentionPolicy, BitMap]]:
    """Each row of `seg` under the first policy that matches it (`policies` ordered, the
    last one catch-all): a partition of the rows, from postings where they answer."""
    left = seg.all_rows()
    out = []
    for p in policies[:-1]:
        if not left:
            break
        node = parse(p.query)
        rows = searcher._matching_rows(seg, node, TimeWindow(), 0, compile_matcher(node, 0))
        rows &= left
        if rows:
            out.append((p, rows))
            left -= rows
    if left:
        out.append((policies[-1], left))
    return out


class Action(Enum):
    KEEP = "keep"
    DROP = "drop"  # every row is past its retention
    EXPIRE = "expire"  # some rows are: rewrite without them
    TIER = "tier"  # every row is past its hot period: move the segment to object storage
    SPLIT = "split"  # rows ready to move (per destination) split from the rest


@dataclass
class Plan:
    action: Action
    # EXPIRE: the rows that stay; SPLIT: the ready rows of each destination, then the rest
    keeps: list[BitMap]
    destination: str = ""
    expired: int = 0


def _rows_before(ts: np.ndarray, t: int) -> BitMap:
    """Rows of a time-sorted segment stamped before `t`: a range, no per-row work."""
    bm = BitMap()
    cut = int(np.searchsorted(ts, t, "left"))
    if cut:
        bm.add_range(0, cut)
    return bm


def plan_segment(
    seg: SegmentReader,
    groups: list[tuple[RetentionPolicy, BitMap]],
    now_ns: int,
    default_destination: str,
    can_tier: bool,
) -> Plan:
    ts = seg.ts
    expired = BitMap()
    for p, rows in groups:
        expired |= rows & _rows_before(ts, now_ns - p.total_ns)
    if len(expired) == seg.meta.rows:
        return Plan(Action.DROP, [], expired=len(expired))
    if expired:
        return Plan(Action.EXPIRE, [seg.all_rows() - expired], expired=len(expired))
    if seg.meta.cold or not can_tier:
        return Plan(Action.KEEP, [])
    # rows past their hot period, grouped by where they go
    by_dest: dict[str, BitMap] = {}
    for p, rows in groups:
        ready = rows & _rows_before(ts, now_ns - p.hot_ns)
        if ready:
            dest = p.destination or default_destination
            by_dest[dest] = by_dest.get(dest, BitMap()) | ready
    n_ready = sum(len(b) for b in by_dest.values())
    if n_ready == seg.meta.rows and len(by_dest) == 1:
        return Plan(Action.TIER, [], destination=next(iter(by_dest)))
    # late arrivals share segments with fresh records; once most rows of a segment are
    # ready, split them off rather than keep all of it hot (a lone fresh row does not
    # hold hundreds of old ones back), but never churn a segment for a few rows
    if len(by_dest) > 1 or (n_ready and n_ready * 2 >= seg.meta.rows):
        rest = seg.all_rows() - BitMap.union(*by_dest.values())
        return Plan(Action.SPLIT, [*by_dest.values(), *([rest] if rest else [])])
    return Plan(Action.KEEP, [])


def next_change(
    seg: SegmentReader, groups: list[tuple[RetentionPolicy, BitMap]], now_ns: int
) -> int:
    """The first time after `now_ns` a row of `seg` ends its hot or its cold period: a
    segment kept now need not be looked at again before."""
    ts = seg.ts
    times = []
    for p, rows in groups:
        first = int(ts[rows.min()])
        for t in (first + p.hot_ns, first + p.total_ns):
            if t > now_ns:
                times.append(t)
        # the group's rows become ready one by one: the next one after now
        k = int(np.searchsorted(ts, now_ns - p.hot_ns, "right"))
        if k < len(ts):
            times.append(int(ts[k]) + p.hot_ns)
    return min(times, default=now_ns + DAY_NS)


def may_act(seg: SegmentReader, policies: list[RetentionPolicy], now_ns: int) -> bool:
    """Cheap test from the segment's time range alone: can any policy act on it now?"""
    shortest_total = min(p.total_ns for p in policies)
    if seg.meta.min_ts < now_ns - shortest_total:
        return True  # some row may have expired
    if seg.meta.cold:
        return False
    # some row may be past its hot period (the segment moves, or most of it splits off)
    return seg.meta.min_ts < now_ns - min(p.hot_ns for p in policies)
