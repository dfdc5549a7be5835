"""Rule evaluation without I/O: what a window measures, the alert state machine, the count
ring, the batch filter against the row matcher, and back-testing."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelog.alerting.batch_filter import BatchFilter
from otelog.alerting.counts import MAX_GROUPS, OTHER_GROUP, RuleCounts, add_batch
from otelog.alerting.evaluate import (
    Alert,
    AlertState,
    InvalidTransition,
    Observation,
    acknowledge,
    backtest,
    buckets_needed,
    fingerprint,
    measure,
    silence,
    step,
)
from otelog.alerting.rules import Rule, RuleSpec, validate_rule
from otelog.model import LogBatch
from otelog.query.match import compile_matcher
from otelog.query.parser import parse
from otelog.query.rows import ResourceCache, row_from_batch
from otelog.receiver.decode import decode_logs

S = 1_000_000_000
NOW = 1_700_000_000 * S


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {"name": "r", "condition": "count > 5", "window": "6s"}
    base.update(kw)
    return validate_rule(RuleSpec(**base), "rule1", "default", NOW)  # type: ignore[arg-type]


def row(*counts: int) -> np.ndarray:
    return np.asarray([counts], dtype=np.int64)


# ---- measure


def test_a_threshold_counts_the_last_window_of_buckets() -> None:
    r = rule(condition="count > 5", window="6s")  # 1 s buckets, 6 per window
    m = measure(r, np.asarray([[0] * 6 + [1] * 6, [9] * 6 + [0, 0, 0, 0, 0, 6]]))
    assert m.count.tolist() == [6, 6]
    assert m.holds.tolist() == [True, True]


def test_a_rate_is_records_per_second_over_the_window() -> None:
    r = rule(condition="rate > 2", window="6s")
    m = measure(r, row(3, 3, 3, 3, 3, 3))
    assert m.value.tolist() == [3.0] and m.holds.tolist() == [True]
    assert measure(r, row(2, 2, 2, 2, 2, 2)).holds.tolist() == [False]


def spike(**kw: object) -> Rule:
    base: dict[str, object] = {
        "condition": "ratio > 3",
        "window": "2s",
        "baseline": "10s",
        "min_count": 10,
    }
    base.update(kw)
    return rule(**base)


def test_a_spike_by_ratio_compares_the_window_with_the_baseline_mean() -> None:
    r = spike()
    assert r.baseline_windows == 5 and buckets_needed(r) == 12
    m = measure(r, row(*[5] * 10, 20, 20))  # baseline 10 per window, now 40
    assert m.mean is not None and m.mean.tolist() == [10.0]
    assert m.value.tolist() == [4.0] and m.holds.tolist() == [True]
    assert measure(r, row(*[5] * 10, 10, 10)).holds.tolist() == [False]


def test_a_spike_by_zscore_divides_by_the_baseline_spread() -> None:
    r = spike(condition="zscore > 3")
    noisy = [0, 10, 10, 0, 5, 5, 10, 10, 0, 0]  # windows of 10, 10, 10, 20, 0: mean 10, sd 6.3
    m = measure(r, row(*noisy, 15, 15))
    assert m.spread is not None and m.spread[0] == pytest.approx(math.sqrt(40))
    assert m.value[0] == pytest.approx(20 / math.sqrt(40))
    assert m.holds.tolist() == [True]
    assert measure(r, row(*noisy, 10, 10)).holds.tolist() == [False]


def test_a_flat_baseline_has_at_least_poisson_spread() -> None:
    m = measure(spike(condition="zscore > 3"), row(*[8] * 10, 10, 10))  # mean 16, sd 0
    assert m.spread is not None and m.spread[0] == pytest.approx(4.0)
    assert m.value[0] == pytest.approx(1.0)


def test_a_spike_over_a_silent_baseline_is_an_infinite_ratio() -> None:
    m = measure(spike(), row(*[0] * 10, 30, 30))
    assert math.isinf(m.value[0]) and m.holds.tolist() == [True]
    assert measure(spike(), row(*[0] * 12)).value.tolist() == [0.0]


def test_a_quiet_service_never_fires_below_the_minimum_count() -> None:
    r = spike(condition="ratio > 3", min_count=10)
    z = spike(condition="zscore > 3", min_count=10)
    quiet = row(*[0] * 10, 2, 1)  # 3 errors after none: infinite ratio, z-score 3
    assert not measure(r, quiet).holds.any()
    assert not measure(z, quiet).holds.any()


def test_absence_holds_when_the_window_is_empty() -> None:
    r = rule(condition="absent", window="3s", baseline="10s")
    m = measure(r, np.asarray([[5, 0, 0, 0], [0, 0, 1, 0]]))
    assert m.holds.tolist() == [True, False]


# ---- the state machine


def obs(holds: bool, count: int = 10) -> Observation:
    return Observation(holds, float(count), count, f"{count} records", ["svc"])


def test_a_holding_condition_fires_at_once_without_for() -> None:
    a, event = step(None, obs(True), rule(), "g", NOW)
    assert event == "firing"
    assert a is not None and a.state == AlertState.FIRING
    assert a.triggered_at == NOW and a.alert_id == fingerprint("rule1", "g")


def test_with_for_an_alert_is_pending_until_the_condition_held_that_long() -> None:
    r = rule(for_="10s")
    a, event = step(None, obs(True), r, None, NOW)
    assert event == "pending" and a is not None and a.state == AlertState.PENDING
    a, event = step(a, obs(True), r, None, NOW + 5 * S)
    assert event is None and a is not None and a.state == AlertState.PENDING
    a, event = step(a, obs(True), r, None, NOW + 10 * S)
    assert event == "firing" and a is not None and a.triggered_at == NOW + 10 * S
    assert a.created_at == NOW


def test_a_pending_alert_that_stops_holding_is_cleared_not_resolved() -> None:
    r = rule(for_="10s")
    a, _ = step(None, obs(True), r, None, NOW)
    a, event = step(a, obs(False), r, None, NOW + S)
    assert a is None and event == "cleared"


def test_a_firing_alert_resolves_and_a_new_episode_keeps_its_id() -> None:
    r = rule()
    a, _ = step(None, obs(True), r, "x", NOW)
    a, event = step(a, obs(False, 0), r, "x", NOW + S)
    assert event == "resolved" and a is not None and a.resolved_at == NOW + S
    assert a.message == "10 records"  # what fired, for the resolved notification
    b, event = step(a, obs(True), r, "x", NOW + 2 * S)
    assert event == "firing" and b is not None and b.alert_id == a.alert_id
    assert b.triggered_at == NOW + 2 * S and b.resolved_at is None


def test_a_resolved_alert_stays_resolved_while_the_condition_does_not_hold() -> None:
    a, _ = step(None, obs(True), rule(), None, NOW)
    a, _ = step(a, obs(False), rule(), None, NOW + S)
    b, event = step(a, obs(False), rule(), None, NOW + 2 * S)
    assert b is a and event is None


def firing() -> Alert:
    a, _ = step(None, obs(True), rule(), None, NOW)
    assert a is not None
    return a


def test_acknowledging_records_who_and_when_and_the_alert_still_resolves() -> None:
    a = acknowledge(firing(), "ana", NOW + S)
    assert (a.state, a.acknowledged_by, a.acknowledged_at) == (
        AlertState.ACKNOWLEDGED,
        "ana",
        NOW + S,
    )
    a2, event = step(a, obs(True), rule(), None, NOW + 2 * S)
    assert event is None and a2 is not None and a2.state == AlertState.ACKNOWLEDGED
    a3, event = step(a2, obs(False), rule(), None, NOW + 3 * S)
    assert event == "resolved" and a3 is not None and a3.state == AlertState.RESOLVED


def test_a_silence_that_runs_out_while_holding_fires_again() -> None:
    a = silence(firing(), "bo", NOW + 60 * S, NOW + S)
    assert a.state == AlertState.SILENCED and a.silenced_by == "bo"
    a, event = step(a, obs(True), rule(), None, NOW + 30 * S)
    assert event is None and a is not None and a.state == AlertState.SILENCED
    a, event = step(a, obs(True), rule(), None, NOW + 60 * S)
    assert event == "firing" and a is not None and a.state == AlertState.FIRING


def test_resolved_alerts_cannot_be_acknowledged_or_silenced() -> None:
    a, _ = step(firing(), obs(False), rule(), None, NOW + S)
    assert a is not None
    with pytest.raises(InvalidTransition):
        acknowledge(a, "x", NOW)
    with pytest.raises(InvalidTransition):
        silence(a, "x", NOW + 10 * S, NOW)


def test_alert_state_round_trips_through_storage_even_with_an_infinite_value() -> None:
    a = firing()
    a.value = float("inf")
    assert Alert.decode(a.encode()) == a


# ---- the count ring


def counts_add(c: RuleCounts, ts: list[int], groups: list[str | None], now: int) -> int:
    values = sorted(set(groups), key=str)
    codes = np.asarray([values.index(g) for g in groups], dtype=np.int64)
    res = np.zeros(len(ts), dtype=np.int64)
    return c.add(np.asarray(ts, dtype=np.int64), codes, values, res, ["svc"], now)


def test_the_ring_counts_per_bucket_and_group() -> None:
    c = RuleCounts(S, 10)
    counts_add(c, [NOW, NOW + 1, NOW - S, NOW - 3 * S], ["a", "a", "b", "a"], NOW)
    cur = NOW // S
    m = c.matrix(cur, 4)
    assert c.groups == ["a", "b"]
    assert m.tolist() == [[1, 0, 0, 2], [0, 0, 1, 0]]
    assert c.services_since(0, cur) == ["svc"]


def test_a_slot_reused_by_a_newer_bucket_forgets_the_old_count() -> None:
    c = RuleCounts(S, 4)
    counts_add(c, [NOW], ["a"], NOW)
    later = NOW + 4 * S  # the same slot, four buckets on
    counts_add(c, [later], ["a"], later)
    assert c.matrix(later // S, 5).tolist() == [[0, 0, 0, 0, 1]]


def test_records_older_than_the_ring_or_far_ahead_are_not_counted() -> None:
    c = RuleCounts(S, 10)
    n = counts_add(c, [NOW - 20 * S, NOW + 5 * S, NOW + S], ["a", "a", "a"], NOW)
    assert n == 1  # one bucket ahead is allowed (a client clock a little fast)
    assert c.matrix(NOW // S + 1, 2).tolist() == [[0, 1]]


def test_groups_past_the_cap_share_one_overflow_group() -> None:
    c = RuleCounts(S, 4)
    names: list[str | None] = [f"g{i}" for i in range(MAX_GROUPS + 5)]
    counts_add(c, [NOW] * len(names), names, NOW)
    assert len(c.groups) == MAX_GROUPS + 1 and c.groups[-1] == OTHER_GROUP
    assert int(c.matrix(NOW // S, 1)[-1, 0]) == 5


def test_pruning_forgets_quiet_groups_but_keeps_those_with_an_alert() -> None:
    c = RuleCounts(S, 4)
    counts_add(c, [NOW, NOW, NOW], ["a", "b", "c"], NOW)
    later = NOW + 10 * S
    counts_add(c, [later], ["a"], later)
    c.prune(later // S, keep={"c"})
    assert c.groups == ["a", "c"]
    assert c.matrix(later // S, 1).tolist() == [[1], [0]]


# ---- the batch filter agrees with the row matcher


def _kv(k: str, v: str | int) -> KeyValue:
    return KeyValue(
        key=k, value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v)
    )


def sample_batch(n: int = 400, seed: int = 7) -> LogBatch:
    rng = random.Random(seed)
    req = ExportLogsServiceRequest()
    for svc, host, ns in (("a", "h1", "prod"), ("b", "h2", "dev"), ("c", "", "prod")):
        rl = ResourceLogs(
            resource=Resource(
                attributes=[_kv("service.name", svc), _kv("k8s.ns", ns)]
                + ([_kv("host.name", host)] if host else [])
            )
        )
        sl = ScopeLogs()
        for _ in range(n // 3):
            sl.log_records.append(
                LogRecord(
                    time_unix_nano=NOW - rng.randrange(10 * S),
                    severity_number=rng.choice([5, 9, 13, 17, 21]),
                    body=AnyValue(
                        string_value=rng.choice(
                            ["all good", "request timeout", "connection reset by peer", "x"]
                        )
                    ),
                    attributes=[
                        _kv("code", rng.choice([200, 500])),
                        _kv("user.id", "42"),
                        KeyValue(  # a nested map: flattened to ctx.tenant
                            key="ctx",
                            value=AnyValue(
                                kvlist_value=KeyValueList(values=[_kv("tenant", rng.choice("xy"))])
                            ),
                        ),
                    ],
                )
            )
        rl.scope_logs.append(sl)
        req.resource_logs.append(rl)
    batch, _ = decode_logs(req.SerializeToString(), NOW)
    batch.log_id = list(range(len(batch)))
    return batch


@pytest.mark.parametrize(
    "query",
    [
        "",
        "level=ERROR",
        "level>=WARN",
        "service=a",
        "service!=a",
        "host=h1",
        "host!=h2",
        "resource.k8s.ns=prod",
        "timeout",
        '"connection reset"',
        "attributes.code=500",
        "attributes.user.id=42",
        "attributes.code>=500",
        "attributes.user.id!=42",
        "attributes.missing!=1",
        "attributes.ctx.tenant=x",
        "attributes.ctx.tenant!=y AND level>=WARN",
        "service>b",
        "req*",
        "level=ERROR AND service=a",
        "service=a OR level=FATAL",
        "NOT service=a",
        "NOT (level=ERROR AND timeout)",
        "service=b AND NOT attributes.code=500",
        "(service=a OR service=c) AND (timeout OR level<=DEBUG)",
    ],
)
def test_the_batch_filter_matches_exactly_what_the_row_matcher_matches(query: str) -> None:
    batch = sample_batch()
    cache = ResourceCache()
    node = parse(query)
    want = [compile_matcher(node, NOW)(row_from_batch(batch, i, cache)) for i in range(len(batch))]
    got = BatchFilter(node).mask(batch, cache).tolist()
    assert got == want


def test_a_batch_counts_into_the_ring_per_group() -> None:
    batch = sample_batch()
    r = rule(query="level=ERROR", group_by="service", window="10s")
    c = RuleCounts(r.bucket_ns, r.slots)
    cache = ResourceCache()
    n = add_batch(c, r, BatchFilter(r.node), batch, cache, NOW)
    errors = [row_from_batch(batch, i, cache) for i in range(len(batch))]
    want = {s: sum(1 for x in errors if x.service == s and x.level == 5) for s in "abc"}
    got = dict(zip(c.groups, c.matrix(NOW // S, 11).sum(axis=1).tolist(), strict=True))
    assert got == {s: v for s, v in want.items() if v} and n == sum(want.values())


# ---- back-testing


class FakeCounts:
    """Counts of one ungrouped series: bucket -> count."""

    def __init__(self, per_bucket: dict[int, int]) -> None:
        self.groups: list[str | None] = [None]
        self.per_bucket = per_bucket

    def matrix(self, end_bucket: int, n: int) -> np.ndarray:
        return np.asarray(
            [[self.per_bucket.get(b, 0) for b in range(end_bucket - n + 1, end_bucket + 1)]]
        )


def test_a_back_test_says_when_a_spike_would_have_fired_and_resolved() -> None:
    r = spike(condition="ratio > 3", window="2s", baseline="10s", min_count=10)
    t0 = NOW // S
    series = {t0 + i: 2 for i in range(60)}
    for i in range(30, 33):
        series[t0 + i] = 40  # a three-second spike
    evaluations, firings = backtest(r, FakeCounts(series), NOW + 12 * S, NOW + 60 * S, S)
    assert evaluations == 49  # from and to included
    assert len(firings) == 1
    f = firings[0]
    assert f.fired_at == NOW + 31 * S  # the first evaluation whose window holds the spike
    # at +34 s the window (buckets 32-33) still holds 42, but the baseline now holds the
    # spike's first two seconds too: 42 against a mean of 19.2 is no longer 3x
    assert f.resolved_at == NOW + 34 * S
    assert f.peak_count == 80


def test_a_back_test_of_a_quiet_series_never_fires() -> None:
    r = spike()
    evaluations, firings = backtest(r, FakeCounts({NOW // S + 20: 3}), NOW, NOW + 60 * S, S)
    assert evaluations == 61 and firings == []
