"""The query language's syntax tree: what the parser produces and the planner consumes.

Every node is an immutable dataclass so plans can be cached and shared (live tail
subscribers with the same filter share one compiled tree).
"""

from __future__ import annotations

from dataclasses import dataclass

# Fields with a fixed meaning. Anything else must be an attribute path:
# `attributes.<key>` (record attribute) or `resource.<key>` (resource attribute).
FIELDS = ("service", "level", "host", "trace_id", "span_id", "body", "timestamp", "log_id")
FIELD_ALIASES = {
    "message": "body",
    "msg": "body",
    "severity": "level",
    "traceid": "trace_id",
    "spanid": "span_id",
    "time": "timestamp",
    "ts": "timestamp",
}
OPS = ("=", "!=", ">", ">=", "<", "<=")


@dataclass(frozen=True)
class TimeRef:
    """A point in time: absolute (`ns` since the epoch) or relative (`ago_ns` before now)."""

    ns: int | None = None
    ago_ns: int | None = None

    def resolve(self, now_ns: int) -> int:
        if self.ns is not None:
            return self.ns
        assert self.ago_ns is not None
        return now_ns - self.ago_ns


Value = str | int | float | TimeRef


@dataclass(frozen=True)
class Compare:
    """`field op value`. `field` is a name of FIELDS or `attributes.<path>` / `resource.<path>`.

    For `level`, value is the level name upper-cased (TRACE..FATAL). For `timestamp`,
    value is a TimeRef. Numbers in other fields are int or float; everything else str.
    """

    field: str
    op: str
    value: Value


@dataclass(frozen=True)
class Text:
    """Full-text match on the body: a bare word (token match) or a quoted phrase."""

    text: str
    phrase: bool = False


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class MatchAll:
    """The empty query."""


Node = Compare | Text | And | Or | Not | MatchAll
