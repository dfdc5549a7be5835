"""Planning: the time window of a query and how each predicate maps onto postings."""

from __future__ import annotations

from dataclasses import dataclass

from otelog.model import LEVEL_NAMES
from otelog.query.ast import And, Compare, Node, TimeRef
from otelog.query.match import _cmp

MAX_TS = (1 << 63) - 1


@dataclass(frozen=True)
class TimeWindow:
    """[start, end) in ns; used to pick candidate segments and slice their rows."""

    start: int = 0
    end: int = MAX_TS

    def intersect(self, other: TimeWindow) -> TimeWindow:
        return TimeWindow(max(self.start, other.start), min(self.end, other.end))

    @property
    def empty(self) -> bool:
        return self.start >= self.end


def time_window(node: Node, now_ns: int) -> TimeWindow:
    """The window implied by top-level `timestamp` comparisons (ANDed with the rest)."""
    w = TimeWindow()
    preds = node.children if isinstance(node, And) else (node,)
    for p in preds:
        if isinstance(p, Compare) and p.field == "timestamp" and isinstance(p.value, TimeRef):
            t = p.value.resolve(now_ns)
            if p.op == ">":
                w = w.intersect(TimeWindow(t + 1, MAX_TS))
            elif p.op == ">=":
                w = w.intersect(TimeWindow(t, MAX_TS))
            elif p.op == "<":
                w = w.intersect(TimeWindow(0, t))
            elif p.op == "<=":
                w = w.intersect(TimeWindow(0, t + 1))
            elif p.op == "=":
                w = w.intersect(TimeWindow(t, t + 1))
    return w


def levels_matching(op: str, level_name: str) -> list[int]:
    want = int(LEVEL_NAMES[level_name])
    return [lv for lv in range(7) if _cmp(op, lv, want)]
