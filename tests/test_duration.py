"""parse_duration_ns: the durations of `since` and of `timestamp > 2h ago`."""

from __future__ import annotations

import pytest

from otelog.query.duration import MAX_DURATION_NS, InvalidDuration, parse_duration_ns

S = 1_000_000_000
M = 60 * S
H = 60 * M
D = 24 * H


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1ns", 1),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("250μs", 250_000),
        ("500ms", 500_000_000),
        ("30s", 30 * S),
        ("15m", 15 * M),
        ("2h", 2 * H),
        ("7d", 7 * D),
        ("1w", 7 * D),
    ],
)
def test_single_unit(text: str, expected: int) -> None:
    assert parse_duration_ns(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", H + 30 * M),
        ("1d12h", D + 12 * H),
        ("1w2d3h4m5s6ms7us8ns", 7 * D + 2 * D + 3 * H + 4 * M + 5 * S + 6_000_000 + 7_000 + 8),
        ("0h30m", 30 * M),
    ],
)
def test_compound_parts_add_up(text: str, expected: int) -> None:
    assert parse_duration_ns(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5h", 90 * M), ("0.5s", S // 2), ("2.25m", 135 * S), ("1h0.5m", H + 30 * S)],
)
def test_decimal_fraction_of_a_unit(text: str, expected: int) -> None:
    assert parse_duration_ns(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("2H", 2 * H), ("500MS", 500_000_000)])
def test_units_are_case_insensitive(text: str, expected: int) -> None:
    assert parse_duration_ns(text) == expected


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_duration_ns("  15m\n") == 15 * M


def test_largest_representable_duration_is_accepted() -> None:
    assert parse_duration_ns(f"{MAX_DURATION_NS}ns") == MAX_DURATION_NS


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("30", "missing a unit"),
        ("h", "expected a number and a unit"),
        ("2x", "unknown unit 'x'"),
        ("2hours", "unknown unit 'hours'"),
        ("2 h", "expected a number and a unit"),
        ("1h 30m", "expected a number and a unit"),
        ("1h30", "expected a number and a unit"),
        ("1.h", "expected a number and a unit"),
        (".5h", "expected a number and a unit"),
        ("1,5h", "expected a number and a unit"),
        ("2h ago", "expected a number and a unit"),
        ("+2h", "takes no sign"),
        ("30m1h", "largest to smallest"),
        ("1h1h", "largest to smallest"),
        ("1us1µs", "largest to smallest"),
        ("0.5ns", "finer than one nanosecond"),
        (f"{MAX_DURATION_NS + 1}ns", "too large"),
        ("300y", "unknown unit 'y'"),
        ("9" * 5000 + "s", "too large"),
        ("\u0661\u0662s", "expected a number and a unit"),  # Arabic-Indic digits are not ours
    ],
)
def test_malformed_duration_is_rejected_with_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidDuration) as excinfo:
        parse_duration_ns(text)
    assert reason in excinfo.value.reason
    assert reason in str(excinfo.value)


@pytest.mark.parametrize("text", ["0s", "0h0m", "0.0s", "-5m", "-1h30m"])
def test_zero_or_negative_duration_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration_ns(text)


def test_error_message_quotes_the_input() -> None:
    with pytest.raises(ValueError, match=r"invalid duration '2x'"):
        parse_duration_ns("2x")


def test_error_message_truncates_huge_input() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration_ns("x" * 100_000)
    assert len(str(excinfo.value)) < 200


def test_invalid_duration_is_a_value_error() -> None:
    assert issubclass(InvalidDuration, ValueError)
