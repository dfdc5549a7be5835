"""Alert rules as text: conditions, windows, `for`, and the rules that are refused (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelog.alerting.rules import (
    MAX_SLOTS,
    Condition,
    InvalidRule,
    RuleSpec,
    Target,
    bucket_for,
    decode_rule,
    encode_rule,
    format_duration,
    parse_condition,
    parse_for,
    parse_window,
    validate_rule,
)
from otelog.query.duration import parse_duration_ns

S = 1_000_000_000
NOW = 1_700_000_000 * S


def make(**kw: object) -> RuleSpec:
    base: dict[str, object] = {"name": "errors", "condition": "count > 100"}
    base.update(kw)
    return RuleSpec(**base)  # type: ignore[arg-type]


def valid(**kw: object):  # type: ignore[no-untyped-def]
    return validate_rule(make(**kw), "r1", "default", NOW)


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold", "kind"),
    [
        ("count > 100", "count", ">", 100.0, "threshold"),
        ("count>=5", "count", ">=", 5.0, "threshold"),
        ("  count = 0 ", "count", "==", 0.0, "threshold"),
        ("COUNT < 3", "count", "<", 3.0, "threshold"),
        ("rate > 5", "rate", ">", 5.0, "rate"),
        ("rate > 0.5", "rate", ">", 0.5, "rate"),
        ("ratio > 3", "ratio", ">", 3.0, "spike"),
        ("zscore > 3", "zscore", ">", 3.0, "spike"),
        ("zscore >= -1.5", "zscore", ">=", -1.5, "spike"),
        ("absent", "absent", "==", 0.0, "absence"),
        ("ABSENT", "absent", "==", 0.0, "absence"),
        ("lag > 5", "lag", ">", 5.0, "self"),
        ("dropped != 0", "dropped", "!=", 0.0, "self"),
    ],
)
def test_conditions_parse_to_metric_operator_threshold_and_kind(
    text: str, metric: str, op: str, threshold: float, kind: str
) -> None:
    c = parse_condition(text)
    assert (c.metric, c.op, c.threshold, c.kind) == (metric, op, threshold, kind)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("foo > 3", "unknown condition 'foo'"),
        ("errors > 3", "unknown condition 'errors'"),
        ("count >", "cannot read"),
        ("count >> 3", "cannot read"),
        ("count > many", "cannot read"),
        ("", "cannot read"),
        ("absent > 1", "unknown condition 'absent'"),
    ],
)
def test_unknown_or_malformed_conditions_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidRule, match="condition") as e:
        parse_condition(text)
    assert says in str(e.value)


@pytest.mark.parametrize(
    ("op", "value", "holds"),
    [(">", 101, True), (">", 100, False), (">=", 100, True), ("<", 99, True), ("==", 100, True)]
    + [("!=", 100, False), ("<=", 101, False)],
)
def test_a_condition_compares_a_value_with_its_threshold(
    op: str, value: float, holds: bool
) -> None:
    assert Condition("count", op, 100).holds(value) is holds


@pytest.mark.parametrize(
    ("text", "ns"), [("2s", 2 * S), ("1m", 60 * S), ("1h30m", 5400 * S), ("24h", 86400 * S)]
)
def test_windows_take_s_m_h_units(text: str, ns: int) -> None:
    assert parse_window(text) == ns


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-5m", "must be positive"),
        ("0s", "must be positive"),
        ("500ms", "whole number of seconds"),
        ("25h", "between 1s and 24h"),
        ("5x", "unknown unit"),
        ("5", "missing a unit"),
    ],
)
def test_bad_windows_are_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidRule, match="^window: ") as e:
        parse_window(text)
    assert says in str(e.value)


@pytest.mark.parametrize(("text", "ns"), [("0s", 0), ("", 0), ("0", 0), ("30s", 30 * S)])
def test_for_zero_fires_at_once_and_durations_wait(text: str, ns: int) -> None:
    assert parse_for(text) == ns


def test_for_refuses_negative_durations() -> None:
    with pytest.raises(InvalidRule, match="^for: .*positive"):
        parse_for("-1m")


@pytest.mark.parametrize(
    ("window", "bucket"),
    [("1s", 1), ("2s", 1), ("5s", 1), ("12s", 2), ("30s", 5), ("1m", 10), ("5m", 30)]
    + [("7s", 1), ("1h", 300)],
)
def test_a_window_is_cut_into_at_least_six_buckets_when_it_can(window: str, bucket: int) -> None:
    assert bucket_for(parse_window(window)) == bucket * S


def test_a_good_rule_validates_with_its_kind_buckets_and_history() -> None:
    r = valid(
        condition="ratio > 3",
        query="level=ERROR",
        window="1m",
        baseline="1h",
        group_by="service",
        for_="2m",
        severity="CRITICAL",
        labels={"team": "payments"},
        targets=[Target("http://am:9093/api/v2/alerts", "alertmanager")],
    )
    assert r.kind == "spike"
    assert r.window_buckets == 6 and r.bucket_ns == 10 * S
    assert r.baseline_windows == 60
    assert r.history_ns == 3660 * S
    assert r.for_ns == 120 * S
    assert r.severity == "critical"
    assert r.group_by is not None and r.group_by.kind == "service"


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"query": "service=auth AND (level=ERROR"}, "query: query syntax error at position"),
        ({"query": "timestamp > 5m ago"}, "may not compare timestamp"),
        ({"window": "-5m"}, "window: invalid duration '-5m': a duration must be positive"),
        ({"condition": "bogus > 1"}, "unknown condition 'bogus'"),
        ({"group_by": "colour"}, "groupBy: unknown field 'colour'"),
        ({"condition": "ratio > 3", "window": "1m", "baseline": "1m"}, "at least two windows"),
        ({"condition": "lag > 5", "query": "service=a"}, "takes no query"),
        ({"severity": "meh"}, "severity: use one of"),
        ({"labels": {"bad-name": "x"}}, "not a valid label name"),
        ({"targets": [Target("ftp://x", "alertmanager")]}, "not an http(s) URL"),
        ({"targets": [Target("http://x/hook", "slack")]}, "unknown kind 'slack'"),
        ({"min_count": -1}, "minCount"),
        ({"name": "  "}, "name:"),
        ({"condition": "ratio > 3", "window": "1s", "baseline": "7d"}, f"more than {MAX_SLOTS:,}"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(kw: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidRule) as e:
        valid(**kw)
    assert says in str(e.value)


def test_a_stored_rule_decodes_to_the_same_rule() -> None:
    r = valid(
        condition="zscore > 2.5",
        query='service=api AND "timed out"',
        window="30s",
        baseline="10m",
        group_by="attributes.http.route",
        min_count=3,
        labels={"team": "core"},
        annotations={"runbook": "https://wiki/x"},
        targets=[Target("http://h/x", "json")],
    )
    assert decode_rule(encode_rule(r), "default") == r


@given(st.integers(min_value=1, max_value=7 * 86400).map(lambda s: s * S))
def test_format_duration_reads_back_to_the_same_duration(ns: int) -> None:
    assert parse_duration_ns(format_duration(ns)) == ns


@given(
    name=st.text(
        st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=40
    ).filter(lambda s: s.strip()),
    window_s=st.integers(min_value=1, max_value=3600),
    metric=st.sampled_from(["count", "rate", "absent"]),
    threshold=st.floats(allow_nan=False, allow_infinity=False),
    for_s=st.integers(min_value=0, max_value=3600),
)
def test_any_valid_rule_round_trips_through_storage(
    name: str, window_s: int, metric: str, threshold: float, for_s: int
) -> None:
    cond = "absent" if metric == "absent" else f"{metric} > {threshold!r}"
    r = valid(name=name, window=f"{window_s}s", condition=cond, for_=f"{for_s}s")
    assert decode_rule(encode_rule(r), "default") == r
