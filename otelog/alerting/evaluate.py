"""Evaluating a rule: what its window holds, whether the condition holds, and what that
does to its alerts. Pure: counts in, alert states and transitions out.

`measure` works on every group of a rule at once (a groups x buckets matrix), so a rule
with a thousand groups costs a few numpy calls, not a thousand Python evaluations.

Alert states
------------
pending -> firing -> resolved, per rule and group (the fingerprint). A condition that
holds makes a `pending` alert, which fires once the condition has held for the rule's
`for` (at once when `for` is 0). A firing alert resolves when the condition stops holding;
a pending one that stops holding is simply dropped (it never fired, nobody was told).
A person may acknowledge a firing alert (someone is on it: no repeats) or silence it
until a time (no notifications); either way it still resolves by itself, and a silence
that runs out while the condition holds makes the alert fire again. A resolved alert that
starts holding again begins a new episode under the same id (one alert per fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from otelog.alerting.rules import COMPARISONS, Rule, format_duration

__all__ = [
    "ACTIVE",
    "Alert",
    "AlertState",
    "Firing",
    "Measurement",
    "Observation",
    "acknowledge",
    "backtest",
    "buckets_needed",
    "fingerprint",
    "measure",
    "measure_self",
    "silence",
    "step",
]


class AlertState(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    RESOLVED = "resolved"


# the states in which an alert is open (it fired and has not resolved)
ACTIVE = frozenset((AlertState.FIRING, AlertState.ACKNOWLEDGED, AlertState.SILENCED))


def fingerprint(rule_id: str, group: str | None) -> str:
    """The alert id of a rule and group: stable across restarts and rule edits."""
    key = json.dumps([rule_id, group]).encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


# ---- measuring


@dataclass
class Measurement:
    """One rule's figures for each of its groups (arrays in group order)."""

    count: np.ndarray  # matching records in the window
    value: np.ndarray  # what the condition compares: count, rate, ratio or z-score
    holds: np.ndarray  # bool
    mean: np.ndarray | None = None  # spike: the baseline's mean count per window
    spread: np.ndarray | None = None  # spike: the spread a z-score divides by


def buckets_needed(rule: Rule) -> int:
    """Columns `measure` reads: the window and, for a spike, the baseline windows."""
    return rule.window_buckets * (1 + rule.baseline_windows)


def measure(rule: Rule, m: np.ndarray) -> Measurement:
    """`m`: counts per group (rows) and bucket (columns, oldest first, the current bucket
    last), `buckets_needed(rule)` wide. The window is its last `window_buckets` columns:
    the current bucket is partial, so the window spans between window - bucket and window
    of time; a bucket is at most a sixth of a window when the window allows it."""
    w = rule.window_buckets
    count = m[:, -w:].sum(axis=1) if m.shape[1] else np.zeros(len(m), dtype=np.int64)
    cond = rule.condition
    metric = cond.metric
    if metric == "absent":
        return Measurement(count, count.astype(np.float64), count == 0)
    if metric == "count":
        value = count.astype(np.float64)
        return Measurement(count, value, _holds(cond.op, value, cond.threshold))
    if metric == "rate":
        value = count / (rule.window_ns / 1e9)
        return Measurement(count, value, _holds(cond.op, value, cond.threshold))
    k = rule.baseline_windows
    base = m[:, -w * (k + 1) : -w].reshape(len(m), k, w).sum(axis=2)
    mean = base.mean(axis=1)
    # A flat baseline has no spread, and then one extra record would be an infinite
    # z-score: counts are roughly Poisson, so sqrt(mean) (at least 1) is the least spread
    # worth believing.
    spread = np.maximum(base.std(axis=1), np.sqrt(np.maximum(mean, 1.0)))
    if metric == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(mean > 0, count / np.where(mean > 0, mean, 1.0), np.inf)
        value = np.where(count == 0, 0.0, value)
    else:
        value = (count - mean) / spread
    # the minimum count keeps a quiet group (3 errors against 0.2) from paging
    holds = _holds(cond.op, value, cond.threshold) & (count >= rule.min_count)
    return Measurement(count, value, holds, mean, spread)


def _holds(op: str, value: np.ndarray, t: float) -> np.ndarray:
    result: np.ndarray = COMPARISONS[op](value, t)
    return result


def measure_self(rule: Rule, value: float) -> tuple[float, bool]:
    """A `self` rule (otelog's own lag or drops over the window): the figure is given."""
    return value, rule.condition.holds(value)


def describe(rule: Rule, m: Measurement, i: int) -> str:
    """The alert message for group `i` of a measurement."""
    window = format_duration(rule.window_ns)
    n = int(m.count[i])
    metric = rule.condition.metric
    if metric == "absent":
        return f"no matching record in the last {window}"
    if metric == "count":
        return f"{n} matching records in the last {window} ({rule.condition})"
    if metric == "rate":
        rate = float(m.value[i])
        return f"{rate:.3g} matching records/s over the last {window} ({rule.condition})"
    assert m.mean is not None and m.spread is not None
    mean = float(m.mean[i])
    base = f"the baseline mean of {mean:.1f} per {window} over the previous " + format_duration(
        rule.baseline_windows * rule.window_ns
    )
    if metric == "ratio":
        v = float(m.value[i])
        times = "no records before" if math.isinf(v) else f"{v:.1f}x {base}"
        return f"{n} matching records in the last {window}: {times} ({rule.condition})"
    return (
        f"{n} matching records in the last {window}: z-score {float(m.value[i]):.1f} against "
        f"{base} (spread {float(m.spread[i]):.1f}) ({rule.condition})"
    )


def describe_self(rule: Rule, value: float) -> str:
    window = format_duration(rule.window_ns)
    if rule.condition.metric == "lag":
        return f"ingestion lag {value:.2f}s (mean over the last {window}) ({rule.condition})"
    return f"{value:g} records dropped or refused in the last {window} ({rule.condition})"


# ---- alerts and their states


@dataclass
class Observation:
    """What one evaluation saw for one group."""

    holds: bool
    value: float
    count: int
    message: str
    services: list[str] = field(default_factory=list)


@dataclass
class Alert:
    alert_id: str
    rule_id: str
    tenant: str
    group: str | None
    state: AlertState
    value: float
    count: int
    message: str
    affected_services: list[str]
    created_at: int  # ns: when this episode started (pending, or firing at once)
    updated_at: int
    triggered_at: int | None = None  # when it fired
    resolved_at: int | None = None
    acknowledged_by: str | None = None
    acknowledged_at: int | None = None
    silenced_by: str | None = None
    silenced_until: int | None = None
    # a firing notification went out this episode: its resolution must follow
    notified: bool = False
    last_sent_at: int | None = None

    def encode(self) -> bytes:
        d: dict[str, Any] = asdict(self)
        d["state"] = self.state.value
        if math.isinf(self.value) or math.isnan(self.value):
            d["value"] = str(self.value)
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Alert:
        d = json.loads(data)
        d["state"] = AlertState(d["state"])
        d["value"] = float(d["value"])
        return cls(**d)


def step(
    alert: Alert | None,
    obs: Observation,
    rule: Rule,
    group: str | None,
    now_ns: int,
) -> tuple[Alert | None, str | None]:
    """The alert of (rule, group) after one evaluation, and the transition it made:
    "pending", "firing", "resolved", "cleared" (a pending alert that stopped holding:
    the alert is gone) or None."""
    if obs.holds:
        if alert is None or alert.state == AlertState.RESOLVED:
            alert = Alert(
                alert_id=fingerprint(rule.id, group),
                rule_id=rule.id,
                tenant=rule.tenant,
                group=group,
                state=AlertState.PENDING,
                value=obs.value,
                count=obs.count,
                message=obs.message,
                affected_services=obs.services,
                created_at=now_ns,
                updated_at=now_ns,
            )
            if rule.for_ns <= 0:
                return _fire(alert, now_ns), "firing"
            return alert, "pending"
        alert = replace(
            alert,
            value=obs.value,
            count=obs.count,
            message=obs.message,
            affected_services=obs.services or alert.affected_services,
        )
        if alert.state == AlertState.PENDING:
            if now_ns - alert.created_at >= rule.for_ns:
                return _fire(alert, now_ns), "firing"
            return alert, None
        if (
            alert.state == AlertState.SILENCED
            and alert.silenced_until is not None
            and alert.silenced_until <= now_ns
        ):
            # the silence ran out while the condition still holds: tell people again
            fired = alert.triggered_at is None
            alert = replace(alert, state=AlertState.FIRING, updated_at=now_ns, notified=False)
            if fired:
                alert.triggered_at = now_ns
            return alert, "firing"
        return alert, None
    if alert is None or alert.state == AlertState.RESOLVED:
        return alert, None
    if alert.state == AlertState.PENDING:
        return None, "cleared"
    return replace(alert, state=AlertState.RESOLVED, resolved_at=now_ns, updated_at=now_ns), (
        "resolved"
    )


def _fire(alert: Alert, now_ns: int) -> Alert:
    return replace(
        alert,
        state=AlertState.FIRING,
        triggered_at=now_ns,
        resolved_at=None,
        updated_at=now_ns,
        acknowledged_by=None,
        acknowledged_at=None,
        silenced_by=None,
        silenced_until=None,
        notified=False,
        last_sent_at=None,
    )


class InvalidTransition(ValueError):
    pass


def acknowledge(alert: Alert, by: str, now_ns: int) -> Alert:
    if alert.state not in ACTIVE:
        raise InvalidTransition(
            f"alert {alert.alert_id} is {alert.state.value}; only an open alert can be acknowledged"
        )
    return replace(
        alert,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_by=by,
        acknowledged_at=now_ns,
        updated_at=now_ns,
    )


def silence(alert: Alert, by: str, until_ns: int, now_ns: int) -> Alert:
    if alert.state == AlertState.RESOLVED:
        raise InvalidTransition(f"alert {alert.alert_id} is resolved; nothing to silence")
    if until_ns <= now_ns:
        raise InvalidTransition("until must be in the future")
    return replace(
        alert,
        state=AlertState.SILENCED,
        silenced_by=by,
        silenced_until=until_ns,
        updated_at=now_ns,
    )


# ---- back-testing: when would a rule have fired?


class CountSource(Protocol):
    groups: list[str | None]

    def matrix(self, end_bucket: int, n: int) -> np.ndarray: ...


@dataclass
class Firing:
    group: str | None
    fired_at: int
    resolved_at: int | None
    peak_value: float
    peak_count: int
    message: str


def backtest(
    rule: Rule, counts: CountSource, from_ns: int, to_ns: int, step_ns: int
) -> tuple[int, list[Firing]]:
    """Evaluate `rule` every `step_ns` from `from_ns` to `to_ns` over past counts, with the
    same measurement and state machine as live evaluation. Evaluation times fall on bucket
    ends, so no evaluation sees records stamped after it. Returns (evaluations, firings)."""
    b = rule.bucket_ns
    step_b = max(1, step_ns // b)
    n = buckets_needed(rule)
    alerts: dict[str | None, Alert] = {}
    open_firings: dict[str | None, Firing] = {}
    firings: list[Firing] = []
    evaluations = 0
    # the bucket ending at or after from_ns, then every step
    end_bucket = -(-from_ns // b) - 1
    last_bucket = to_ns // b - 1
    while end_bucket <= last_bucket:
        now = (end_bucket + 1) * b
        evaluations += 1
        groups = list(counts.groups) or [None]
        mat = counts.matrix(end_bucket, n)
        if not len(mat):
            mat = np.zeros((1, n), dtype=np.int64)
        meas = measure(rule, mat)
        for i, g in enumerate(groups):
            obs = Observation(bool(meas.holds[i]), float(meas.value[i]), int(meas.count[i]), "")
            new, event = step(alerts.get(g), obs, rule, g, now)
            if new is None:
                alerts.pop(g, None)
            else:
                alerts[g] = new
            f = open_firings.get(g)
            if event == "firing":
                f = open_firings[g] = Firing(
                    g, now, None, obs.value, obs.count, describe(rule, meas, i)
                )
                firings.append(f)
            elif f is not None and event == "resolved":
                f.resolved_at = now
                del open_firings[g]
            elif f is not None and obs.holds and obs.count > f.peak_count:
                f.peak_value, f.peak_count = obs.value, obs.count
                f.message = describe(rule, meas, i)
        end_bucket += step_b
    return evaluations, firings
