"""otelog's own figures for the built-in rules: ingestion lag and records dropped.

A source is a callable returning cumulative counters (`SelfSample`); the engine keeps the
samples of the last window and rules compare differences over it. The figures come from
`otelog.metrics` (the Prometheus registry every layer records into) when that module is
there, read straight from the metric objects: collecting the whole registry would also
stat the disk and read RocksDB properties every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILTIN_RULES", "SelfSample", "SelfSource", "registry_source", "window_value"]


@dataclass(frozen=True)
class SelfSample:
    dropped_total: float  # records dropped (shed) or refused since start
    lag_sum: float  # seconds from receipt to searchable, summed over records' requests
    lag_count: float  # requests in lag_sum
    overdue: float = 0.0  # GDPR deletion requests past their deadline, now (a gauge)


SelfSource = Callable[[], SelfSample]

# (id, name, condition, window, for, severity): off unless the server enables them
BUILTIN_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("otelog-ingest-lag", "otelog_ingestion_lag", "lag > 5", "1m", "1m", "warning"),
    ("otelog-records-dropped", "otelog_records_dropped", "dropped > 0", "5m", "0s", "warning"),
    ("otelog-deletion-overdue", "otelog_deletion_overdue", "overdue > 0", "1m", "0s", "critical"),
)


def _sum_samples(metric: Any, suffix: str, where: dict[str, str] | None = None) -> float:
    total = 0.0
    for family in metric.collect():
        for s in family.samples:
            if not s.name.endswith(suffix):
                continue
            if where and any(s.labels.get(k) != v for k, v in where.items()):
                continue
            total += float(s.value)
    return total


def registry_source() -> SelfSource | None:
    """A source reading `otelog.metrics`, or None when this build has no such module."""
    try:
        from otelog import metrics
    except ImportError:
        return None
    dropped = [
        (getattr(metrics, name, None), where)
        for name, where in (
            ("LOG_RECORDS_SAMPLED", None),
            ("RECORDS_REFUSED", {"signal": "logs"}),
            ("RECORDS_REJECTED", {"signal": "logs"}),
        )
    ]
    lag = getattr(metrics, "TIME_TO_SEARCHABLE", None)
    overdue = getattr(metrics, "DELETIONS_OVERDUE", None)

    def sample() -> SelfSample:
        d = sum(_sum_samples(m, "_total", w) for m, w in dropped if m is not None)
        o = _sum_samples(overdue, "_overdue") if overdue is not None else 0.0
        if lag is None:
            return SelfSample(d, 0.0, 0.0, o)
        return SelfSample(d, _sum_samples(lag, "_sum"), _sum_samples(lag, "_count"), o)

    return sample


def window_value(metric: str, old: SelfSample, new: SelfSample) -> float:
    """The figure a `self` condition compares, between two samples a window apart."""
    if metric == "dropped":
        return max(0.0, new.dropped_total - old.dropped_total)
    if metric == "overdue":
        return new.overdue
    n = new.lag_count - old.lag_count
    # counters that went back (a source that restarted) say nothing about this window
    return (new.lag_sum - old.lag_sum) / n if n > 0 else 0.0
