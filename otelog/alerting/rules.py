"""Alert rules: what a rule is, how its text fields parse, and which rules are refused.

Pure: no I/O. A rule is a query of the query language, a window, a condition on what the
window holds, and what to do when the condition holds long enough (`for`). The condition
names the rule's kind:

| condition        | kind      | holds when                                                     |
|------------------|-----------|----------------------------------------------------------------|
| `count > 100`    | threshold | matching records in the window compare true                    |
| `rate > 5`       | rate      | matching records per second over the window compare true       |
| `ratio > 3`      | spike     | window count / mean count of the baseline's windows            |
| `zscore > 3`     | spike     | (window count - baseline mean) / baseline spread               |
| `absent`         | absence   | no matching record in the window                               |
| `lag > 5`        | self      | otelog's own ingestion lag (s, mean over the window)           |
| `dropped > 0`    | self      | records otelog dropped or refused during the window            |
| `overdue > 0`    | self      | GDPR deletion requests past their erase deadline (now)         |

Spike rules also need `min_count` records in the window, so a quiet service whose
baseline is near zero does not page on its third error of the hour.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from otelog.errors import InvalidArgument, QuerySyntaxError
from otelog.query.aggregate import Field, parse_field
from otelog.query.ast import And, Compare, Node, Not, Or
from otelog.query.duration import parse_duration_ns
from otelog.query.parser import parse
from otelog.query.service import MAX_QUERY_CHARS

__all__ = [
    "KINDS",
    "SEVERITIES",
    "TARGET_KINDS",
    "Condition",
    "InvalidRule",
    "Rule",
    "RuleSpec",
    "Target",
    "decode_rule",
    "encode_rule",
    "format_duration",
    "parse_condition",
    "parse_for",
    "parse_window",
    "validate_rule",
]

S = 1_000_000_000
MIN_WINDOW_NS = S
MAX_WINDOW_NS = 24 * 3600 * S
MAX_BASELINE_NS = 7 * 24 * 3600 * S
MAX_FOR_NS = 24 * 3600 * S
DEFAULT_BASELINE = "1h"
DEFAULT_MIN_COUNT = 10
# a rule keeps one count per bucket per group for its history: this bounds that array
MAX_SLOTS = 20_000
# Buckets a window is cut into, coarsest first. Six or more buckets per window keep the
# partial current bucket (the window always ends "now") a small part of the window.
BUCKET_CHOICES_NS = (300 * S, 60 * S, 30 * S, 10 * S, 5 * S, 2 * S, S)
MIN_BUCKETS_PER_WINDOW = 6
MAX_TARGETS = 10
MAX_NAME_CHARS = 200

SEVERITIES = ("critical", "error", "warning", "info")
TARGET_KINDS = ("alertmanager", "json")
OPS = (">", ">=", "<", "<=", "==", "!=")
# condition metric -> rule kind
KINDS = {
    "count": "threshold",
    "rate": "rate",
    "ratio": "spike",
    "zscore": "spike",
    "absent": "absence",
    "lag": "self",
    "dropped": "self",
    "overdue": "self",
}
_CONDITION = re.compile(
    r"\s*([A-Za-z_]+)\s*(>=|<=|==|!=|>|<|=)\s*"
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*"
)
# Prometheus label names: labels go to Alertmanager as they are
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONDITION_HELP = (
    "use `count > N`, `rate > N` (per second), `ratio > N` or `zscore > N` (spike against "
    "the baseline), `absent`, `lag > N`, `dropped > N` or `overdue > N` with one of > >= < <= == !="
)


class InvalidRule(InvalidArgument):
    """A rule that can never be evaluated as given; the message names the field."""


@dataclass(frozen=True)
class Condition:
    metric: str  # a key of KINDS
    op: str = ">"
    threshold: float = 0.0

    @property
    def kind(self) -> str:
        return KINDS[self.metric]

    def holds(self, value: float) -> bool:
        return bool(COMPARISONS[self.op](value, self.threshold))

    def __str__(self) -> str:
        if self.metric == "absent":
            return "absent"
        t = self.threshold
        # exact: the text is what is stored, and must read back to the same threshold
        num = str(int(t)) if t.is_integer() and abs(t) < 1e15 else repr(t)
        return f"{self.metric} {self.op} {num}"


# one table for scalars (self rules) and numpy arrays (every group of a rule at once)
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Target:
    """A webhook: `alertmanager` gets Alertmanager's `POST /api/v2/alerts` body (a list of
    alerts), `json` gets one otelog JSON document per notification."""

    url: str
    kind: str = "alertmanager"


@dataclass
class RuleSpec:
    """A rule as a person writes it: every field text, checked by `validate_rule`."""

    name: str
    condition: str
    query: str = ""
    window: str = "1m"
    for_: str = "0s"
    group_by: str | None = None
    baseline: str = DEFAULT_BASELINE
    min_count: int = DEFAULT_MIN_COUNT
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    enabled: bool = True


@dataclass(frozen=True)
class Rule:
    id: str
    tenant: str
    name: str
    query: str
    node: Node
    window_ns: int
    condition: Condition
    for_ns: int
    group_by: Field | None
    group_by_text: str | None
    baseline_ns: int
    min_count: int
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    targets: tuple[Target, ...]
    enabled: bool = True
    builtin: bool = False
    created_at: int = 0
    updated_at: int = 0

    @property
    def kind(self) -> str:
        return self.condition.kind

    @property
    def bucket_ns(self) -> int:
        return bucket_for(self.window_ns)

    @property
    def window_buckets(self) -> int:
        return self.window_ns // self.bucket_ns

    @property
    def baseline_windows(self) -> int:
        """Whole windows in the baseline: the samples a spike is measured against."""
        return self.baseline_ns // self.window_ns if self.kind == "spike" else 0

    @property
    def history_ns(self) -> int:
        """How far back counts are kept: the window, plus the baseline for a spike, and for
        an absence the baseline too, since a group is missed only if it was seen before."""
        if self.kind in ("spike", "absence"):
            return self.window_ns + self.baseline_ns
        return self.window_ns

    @property
    def slots(self) -> int:
        # +2: the partial current bucket, and one for records stamped a little ahead
        return self.history_ns // self.bucket_ns + 2

    def spec(self) -> RuleSpec:
        return RuleSpec(
            name=self.name,
            condition=str(self.condition),
            query=self.query,
            window=format_duration(self.window_ns),
            for_=format_duration(self.for_ns),
            group_by=self.group_by_text,
            baseline=format_duration(self.baseline_ns),
            min_count=self.min_count,
            severity=self.severity,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            targets=list(self.targets),
            enabled=self.enabled,
        )


# ---- fields


def format_duration(ns: int) -> str:
    """`90s` -> `1m30s`; the spelling `parse_duration_ns` reads back to the same value."""
    if ns == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3600 * S), ("m", 60 * S), ("s", S), ("ms", 1_000_000)):
        q, ns = divmod(ns, size)
        if q:
            parts.append(f"{q}{unit}")
    if ns:
        parts.append(f"{ns}ns")
    return "".join(parts)


def _duration(text: str, what: str) -> int:
    try:
        return parse_duration_ns(text)
    except ValueError as e:
        raise InvalidRule(f"{what}: {e}") from None


def parse_window(text: str) -> int:
    ns = _duration(text, "window")
    if ns % S:
        raise InvalidRule(f"window: {text!r} is not a whole number of seconds")
    if not MIN_WINDOW_NS <= ns <= MAX_WINDOW_NS:
        raise InvalidRule("window: must be between 1s and 24h")
    return ns


def parse_for(text: str) -> int:
    """`for`: how long the condition must hold before the alert fires; `0s` fires at once."""
    t = text.strip()
    if t in ("", "0", "0s", "0m", "0h"):
        return 0
    ns = _duration(t, "for")
    if ns > MAX_FOR_NS:
        raise InvalidRule("for: must be at most 24h")
    return ns


def parse_condition(text: str) -> Condition:
    t = text.strip()
    if t.lower() == "absent":
        return Condition("absent", "==", 0.0)
    m = _CONDITION.fullmatch(t)
    if m is None:
        raise InvalidRule(f"condition: cannot read {t[:80]!r}; {_CONDITION_HELP}")
    metric, op, number = m.group(1).lower(), m.group(2), m.group(3)
    if metric not in KINDS or metric == "absent":
        raise InvalidRule(f"condition: unknown condition {metric!r}; {_CONDITION_HELP}")
    return Condition(metric, "==" if op == "=" else op, float(number))


def bucket_for(window_ns: int) -> int:
    for b in BUCKET_CHOICES_NS:
        if window_ns % b == 0 and window_ns // b >= MIN_BUCKETS_PER_WINDOW:
            return b
    return S


def _check_query(query: str) -> Node:
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRule(f"query: longer than {MAX_QUERY_CHARS} characters")
    try:
        node = parse(query)
    except QuerySyntaxError as e:
        raise InvalidRule(f"query: {e}") from None
    except InvalidArgument as e:
        raise InvalidRule(f"query: {e}") from None
    if _has_timestamp(node):
        # the matcher is compiled once: `timestamp > 5m ago` would freeze at compile time,
        # and the rule's window already says which records count
        raise InvalidRule("query: a rule's query may not compare timestamp; the window does")
    return node


def _has_timestamp(node: Node) -> bool:
    if isinstance(node, Compare):
        return node.field == "timestamp"
    if isinstance(node, (And, Or)):
        return any(_has_timestamp(c) for c in node.children)
    if isinstance(node, Not):
        return _has_timestamp(node.child)
    return False


def _check_strings(d: dict[str, str], what: str, label_names: bool) -> dict[str, str]:
    if not isinstance(d, dict):
        raise InvalidRule(f"{what}: expected an object of strings")
    out: dict[str, str] = {}
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise InvalidRule(f"{what}: expected an object of strings")
        if label_names and not _LABEL_NAME.fullmatch(k):
            raise InvalidRule(
                f"{what}: {k[:80]!r} is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)"
            )
        out[k] = str(v)
    return out


def _check_target(t: Target) -> Target:
    kind = t.kind.strip().lower()
    if kind not in TARGET_KINDS:
        raise InvalidRule(f"targets: unknown kind {t.kind[:40]!r}; use alertmanager or json")
    url = t.url.strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise InvalidRule(f"targets: {url[:200]!r} is not an http(s) URL")
    return Target(url, kind)


def validate_rule(
    spec: RuleSpec,
    rule_id: str,
    tenant: str,
    now_ns: int,
    created_at: int | None = None,
    builtin: bool = False,
) -> Rule:
    """The rule `spec` describes, or InvalidRule saying which field is wrong and why."""
    name = spec.name.strip()
    if not name or len(name) > MAX_NAME_CHARS or any(ord(c) < 32 for c in name):
        raise InvalidRule(f"name: must be 1 to {MAX_NAME_CHARS} printable characters")
    condition = parse_condition(spec.condition)
    window_ns = parse_window(spec.window)
    for_ns = parse_for(spec.for_)
    node = _check_query(spec.query)
    group: Field | None = None
    group_text = spec.group_by.strip() if spec.group_by else None
    if group_text:
        try:
            group = parse_field(group_text, "groupBy")
        except InvalidArgument as e:
            raise InvalidRule(str(e)) from None
    baseline_ns = _duration(spec.baseline, "baseline")
    if baseline_ns % S or baseline_ns > MAX_BASELINE_NS:
        raise InvalidRule("baseline: must be whole seconds and at most 7d")
    if condition.kind == "spike" and baseline_ns < 2 * window_ns:
        raise InvalidRule(
            f"baseline: a spike needs a baseline of at least two windows "
            f"({format_duration(2 * window_ns)})"
        )
    if condition.kind == "self" and (spec.query.strip() or group):
        raise InvalidRule(
            f"condition: {condition.metric} is otelog's own figure; "
            "it takes no query and no groupBy"
        )
    if spec.min_count < 0:
        raise InvalidRule("minCount: must be 0 or more")
    severity = spec.severity.strip().lower()
    if severity not in SEVERITIES:
        raise InvalidRule(f"severity: use one of {', '.join(SEVERITIES)}")
    if len(spec.targets) > MAX_TARGETS:
        raise InvalidRule(f"targets: at most {MAX_TARGETS}")
    rule = Rule(
        id=rule_id,
        tenant=tenant,
        name=name,
        query=spec.query,
        node=node,
        window_ns=window_ns,
        condition=condition,
        for_ns=for_ns,
        group_by=group,
        group_by_text=group_text,
        baseline_ns=baseline_ns,
        min_count=spec.min_count,
        severity=severity,
        labels=_check_strings(spec.labels, "labels", label_names=True),
        annotations=_check_strings(spec.annotations, "annotations", label_names=False),
        targets=tuple(_check_target(t) for t in spec.targets),
        enabled=spec.enabled,
        builtin=builtin,
        created_at=now_ns if created_at is None else created_at,
        updated_at=now_ns,
    )
    if rule.slots > MAX_SLOTS:
        raise InvalidRule(
            f"baseline: {format_duration(rule.history_ns)} of history in "
            f"{format_duration(rule.bucket_ns)} buckets is more than {MAX_SLOTS:,}; "
            "use a longer window or a shorter baseline"
        )
    return rule


# ---- storage encoding (the value under `rule/` in the meta column family)


def encode_rule(rule: Rule) -> bytes:
    s = rule.spec()
    doc: dict[str, Any] = {
        "v": 1,
        "id": rule.id,
        "name": s.name,
        "query": s.query,
        "window": s.window,
        "condition": s.condition,
        "for": s.for_,
        "group_by": s.group_by,
        "baseline": s.baseline,
        "min_count": s.min_count,
        "severity": s.severity,
        "labels": s.labels,
        "annotations": s.annotations,
        "targets": [{"url": t.url, "kind": t.kind} for t in s.targets],
        "enabled": s.enabled,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_rule(value: bytes, tenant: str) -> Rule:
    """A stored rule, checked again: the same path as a new one, so nothing unchecked runs."""
    d = json.loads(value)
    spec = RuleSpec(
        name=d["name"],
        condition=d["condition"],
        query=d["query"],
        window=d["window"],
        for_=d["for"],
        group_by=d.get("group_by"),
        baseline=d["baseline"],
        min_count=int(d["min_count"]),
        severity=d["severity"],
        labels=d.get("labels", {}),
        annotations=d.get("annotations", {}),
        targets=[Target(t["url"], t["kind"]) for t in d.get("targets", [])],
        enabled=bool(d.get("enabled", True)),
    )
    rule = validate_rule(spec, d["id"], tenant, int(d["updated_at"]), int(d["created_at"]))
    return replace(rule, updated_at=int(d["updated_at"]))
