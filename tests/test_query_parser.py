"""The query language: text → otelog.query.ast, or a QuerySyntaxError that says where."""

from __future__ import annotations

import calendar
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelog.errors import QuerySyntaxError
from otelog.query.ast import (
    FIELD_ALIASES,
    FIELDS,
    And,
    Compare,
    MatchAll,
    Node,
    Not,
    Or,
    Text,
    TimeRef,
    Value,
)
from otelog.query.parser import LEVELS, MAX_DEPTH, parse

S = 1_000_000_000
H = 3600 * S


def t(word: str) -> Text:
    return Text(word)


def p(phrase: str) -> Text:
    return Text(phrase, phrase=True)


def utc_ns(*args: int) -> int:
    """Nanoseconds since the epoch of a UTC wall-clock time, computed independently."""
    return calendar.timegm((*args, 0, 0, 0)) * S


def syntax_error(query: str) -> QuerySyntaxError:
    with pytest.raises(QuerySyntaxError) as excinfo:
        parse(query)
    return excinfo.value


# -- the seed example and the empty query ---------------------------------------------


def test_seed_example_parses_as_designed() -> None:
    assert parse("service=auth AND level=ERROR AND timestamp>2h ago") == And(
        (
            Compare("service", "=", "auth"),
            Compare("level", "=", "ERROR"),
            Compare("timestamp", ">", TimeRef(ago_ns=7200 * 10**9)),
        )
    )


@pytest.mark.parametrize("query", ["", " ", "\t\n  \r"])
def test_empty_or_blank_query_matches_all(query: str) -> None:
    assert parse(query) == MatchAll()


# -- comparisons ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["=", "!=", ">", ">=", "<", "<="])
def test_every_comparison_operator(op: str) -> None:
    assert parse(f"attributes.n{op}5") == Compare("attributes.n", op, 5)


@pytest.mark.parametrize(
    "query", ["service=auth", "service = auth", "service =auth", "service= auth"]
)
def test_whitespace_around_operator_is_optional(query: str) -> None:
    assert parse(query) == Compare("service", "=", "auth")


@pytest.mark.parametrize("field", [f for f in FIELDS if f not in ("level", "timestamp")])
def test_every_fixed_field_is_accepted(field: str) -> None:
    value = {"trace_id": "a" * 32, "span_id": "b" * 16}.get(field, "x")
    assert parse(f"{field}={value}") == Compare(field, "=", value)


@pytest.mark.parametrize(
    ("alias", "field", "value", "expected"),
    [
        ("message", "body", "hello", "hello"),
        ("msg", "body", "hello", "hello"),
        ("severity", "level", "error", "ERROR"),
        ("traceid", "trace_id", "a" * 32, "a" * 32),
        ("spanid", "span_id", "b" * 16, "b" * 16),
        ("time", "timestamp", "1h", TimeRef(ago_ns=H)),
        ("ts", "timestamp", "1h", TimeRef(ago_ns=H)),
    ],
)
def test_field_alias_resolves_to_its_field(
    alias: str, field: str, value: str, expected: Value
) -> None:
    assert alias in FIELD_ALIASES
    assert parse(f"{alias}={value}") == Compare(field, "=", expected)


@pytest.mark.parametrize(
    ("query", "field"),
    [("Service=x", "service"), ("HOST=x", "host"), ("MSG=x", "body"), ("Log_Id=x", "log_id")],
)
def test_field_names_are_case_insensitive(query: str, field: str) -> None:
    assert parse(query) == Compare(field, "=", "x")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("attributes.user.id=x", "attributes.user.id"),
        ("resource.k8s.pod.name=x", "resource.k8s.pod.name"),
        ("attr.user.id=x", "attributes.user.id"),
        ("res.k8s.pod.name=x", "resource.k8s.pod.name"),
        ("Attributes.User.ID=x", "attributes.User.ID"),
        ("RES.Host-Name=x", "resource.Host-Name"),
        ("attributes.http.request.header.x-id=x", "attributes.http.request.header.x-id"),
        ("attributes.level=x", "attributes.level"),
    ],
)
def test_attribute_path_keeps_key_verbatim_after_canonical_prefix(query: str, field: str) -> None:
    assert parse(query) == Compare(field, "=", "x")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("attributes.n=42", 42),
        ("attributes.n=0", 0),
        ("attributes.n=-5", -5),
        ("attributes.n=9223372036854775807", 2**63 - 1),
        ("attributes.n=-9223372036854775808", -(2**63)),
        ("attributes.n=3.5", 3.5),
        ("attributes.n=-0.25", -0.25),
        ("attributes.n=0.0", 0.0),
        ("service=42", 42),
    ],
)
def test_bare_numeric_literal_becomes_a_number(query: str, expected: float) -> None:
    node = parse(query)
    assert isinstance(node, Compare)
    assert node.value == expected
    assert type(node.value) is type(expected)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("service=auth", "auth"),
        ("service=payment-svc", "payment-svc"),
        ("attributes.zip=007", "007"),
        ("attributes.n=1e5", "1e5"),
        ("attributes.n=1.", "1."),
        ("attributes.n=.5", ".5"),
        ("attributes.n=+5", "+5"),
        ("attributes.n=nan", "nan"),
        ("attributes.n=inf", "inf"),
        ("attributes.n=\u0661\u0662", "\u0661\u0662"),  # Arabic-Indic digits
        ("host=web-01.eu:8080", "web-01.eu:8080"),
        ("attributes.path=/api/v1/users", "/api/v1/users"),
        ("attributes.x=-", "-"),
        ("body=ago", "ago"),
    ],
)
def test_bare_non_numeric_value_stays_a_string(query: str, expected: str) -> None:
    assert parse(query) == Compare(query.split("=")[0], "=", expected)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('attributes.n="42"', "42"),
        ('attributes.n="3.5"', "3.5"),
        ('service="payment svc"', "payment svc"),
        ('service=""', ""),
        ('body="AND"', "AND"),
        ('body="a = (b)"', "a = (b)"),
    ],
)
def test_quoted_value_always_stays_a_string(query: str, expected: str) -> None:
    node = parse(query)
    assert isinstance(node, Compare)
    assert node.value == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (r'body="say \"hi\""', 'say "hi"'),
        (r'body="C:\\temp"', "C:\\temp"),
        (r'body="\\\""', '\\"'),
        ('body="multi\nline"', "multi\nline"),
    ],
)
def test_quoted_value_unescapes_quote_and_backslash(query: str, expected: str) -> None:
    assert parse(query) == Compare("body", "=", expected)


# -- level ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(level, level) for level in LEVELS],
        *[(level.lower(), level) for level in LEVELS],
        ("Error", "ERROR"),
        ("warning", "WARN"),
        ("WARNING", "WARN"),
        ("err", "ERROR"),
        ("critical", "FATAL"),
        ('"info"', "INFO"),
    ],
)
def test_level_value_is_normalised_upper_case(value: str, expected: str) -> None:
    assert parse(f"level={value}") == Compare("level", "=", expected)


def test_level_supports_ordering_operators() -> None:
    assert parse("level>=warn") == Compare("level", ">=", "WARN")


@pytest.mark.parametrize(
    ("query", "position"),
    [("level=ERRR", 6), ("level=5", 6), ('level = "notice"', 8), ("severity=verbose", 9)],
)
def test_unknown_level_is_an_error_at_the_value(query: str, position: int) -> None:
    error = syntax_error(query)
    assert error.position == position
    assert f"unknown level {query[position:].strip(chr(34))!r} at position {position}" in (
        error.message
    )
    assert "TRACE, DEBUG, INFO, WARN, ERROR, FATAL" in error.message


# -- trace_id / span_id ---------------------------------------------------------------


TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"trace_id={TRACE_ID}", Compare("trace_id", "=", TRACE_ID)),
        (f"trace_id={TRACE_ID.upper()}", Compare("trace_id", "=", TRACE_ID)),
        (f'trace_id="{TRACE_ID.upper()}"', Compare("trace_id", "=", TRACE_ID)),
        ("trace_id=" + "1" * 32, Compare("trace_id", "=", "1" * 32)),
        (f"span_id={SPAN_ID.upper()}", Compare("span_id", "=", SPAN_ID)),
        (f"spanid!={SPAN_ID}", Compare("span_id", "!=", SPAN_ID)),
    ],
)
def test_trace_and_span_ids_are_lower_case_hex_strings(query: str, expected: Compare) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("trace_id=abc", "invalid trace_id 'abc' at position 9: expected 32 hex characters"),
        ("trace_id=" + "g" * 32, "expected 32 hex characters"),
        ("trace_id=" + "a" * 33, "expected 32 hex characters"),
        ("span_id=" + "a" * 32, "invalid span_id"),
        ("span_id=" + "a" * 15, "expected 16 hex characters"),
        ('span_id=" ' + "a" * 15 + '"', "expected 16 hex characters"),
    ],
)
def test_malformed_trace_or_span_id_is_an_error(query: str, message: str) -> None:
    error = syntax_error(query)
    assert message in error.message
    assert error.position == query.index("=") + 1


# -- timestamp ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "ago_ns"),
    [
        ("timestamp>2h ago", 2 * H),
        ("timestamp>2h AGO", 2 * H),
        ("timestamp>2h", 2 * H),
        ("timestamp>1h30m ago", H + 1800 * S),
        ("timestamp>=500ms", 500_000_000),
        ("timestamp<7d ago", 7 * 24 * H),
        ('timestamp>"2h ago"', 2 * H),
        ('timestamp>"  2h   ago "', 2 * H),
        ('timestamp>"2h"', 2 * H),
        ("ts>15m ago", 900 * S),
    ],
)
def test_relative_time_becomes_ago_ns(query: str, ago_ns: int) -> None:
    node = parse(query)
    assert isinstance(node, Compare)
    assert node.value == TimeRef(ago_ns=ago_ns)


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("2026-11-25T10:00:00Z", utc_ns(2026, 11, 25, 10, 0, 0)),
        ("2026-11-25t10:00:00z", utc_ns(2026, 11, 25, 10, 0, 0)),
        ("2026-11-25T10:00:00.123+01:00", utc_ns(2026, 11, 25, 9, 0, 0) + 123_000_000),
        ("2026-11-25T10:00:00.123456789Z", utc_ns(2026, 11, 25, 10, 0, 0) + 123_456_789),
        ("2026-11-25T10:00:00,5Z", utc_ns(2026, 11, 25, 10, 0, 0) + 500_000_000),
        ("2026-11-25T10:00:00-05:30", utc_ns(2026, 11, 25, 15, 30, 0)),
        ("2026-11-25T10:00:00+0100", utc_ns(2026, 11, 25, 9, 0, 0)),
        ("2026-11-25T10:00Z", utc_ns(2026, 11, 25, 10, 0, 0)),
        ("2026-11-25T10:00:00", utc_ns(2026, 11, 25, 10, 0, 0)),
        ("2026-11-25", utc_ns(2026, 11, 25, 0, 0, 0)),
        ("2024-02-29T00:00:00Z", utc_ns(2024, 2, 29, 0, 0, 0)),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59Z", -S),
        ('"2026-11-25T10:00:00Z"', utc_ns(2026, 11, 25, 10, 0, 0)),
        ('"2026-11-25 10:00:00Z"', utc_ns(2026, 11, 25, 10, 0, 0)),
    ],
)
def test_rfc3339_time_becomes_absolute_ns(value: str, ns: int) -> None:
    assert parse(f"timestamp>{value}") == Compare("timestamp", ">", TimeRef(ns=ns))


@pytest.mark.parametrize(
    ("value", "ns"),
    [("1764064800000000000", 1_764_064_800_000_000_000), ("0", 0), ('"42"', 42)],
)
def test_integer_time_is_epoch_nanoseconds(value: str, ns: int) -> None:
    assert parse(f"timestamp<={value}") == Compare("timestamp", "<=", TimeRef(ns=ns))


def test_absolute_and_relative_times_combine() -> None:
    assert parse("timestamp>=2026-11-25T10:00:00Z timestamp<1h ago") == And(
        (
            Compare("timestamp", ">=", TimeRef(ns=utc_ns(2026, 11, 25, 10, 0, 0))),
            Compare("timestamp", "<", TimeRef(ago_ns=H)),
        )
    )


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ("timestamp>yesterday", 10, "invalid time 'yesterday' at position 10"),
        ("timestamp>0h ago", 10, "a duration must be positive"),
        ("timestamp>-2h", 10, "a duration must be positive"),
        ("timestamp>2x ago", 10, "unknown unit 'x'"),
        ("timestamp>30 ago", 10, "missing a unit"),
        ('timestamp>"soon"', 10, "invalid time 'soon' at position 10"),
        ('timestamp>""', 10, "invalid time"),
        ("timestamp>2026-13-01", 10, "month must be 01 to 12"),
        ("timestamp>2026-02-29", 10, "day must be 01 to 28"),
        ("timestamp>2026-04-31", 10, "day must be 01 to 30"),
        ("timestamp>2026-11-25T24:00:00Z", 10, "time of day out of range"),
        ("timestamp>2026-11-25T10:60:00Z", 10, "time of day out of range"),
        ("timestamp>2026-11-25T10:00:60Z", 10, "time of day out of range"),
        ("timestamp>2026-11-25T10:00:00+24:00", 10, "UTC offset out of range"),
        ("timestamp>2026-11-25T10:00:00.1234567891Z", 10, "expected an RFC 3339 time"),
        ("timestamp>2026-11-25T10", 10, "expected an RFC 3339 time"),
        ("timestamp>2026-1-5", 10, "invalid time"),
        ("timestamp>9999-01-01T00:00:00Z", 10, "outside the representable range"),
        ("timestamp>0000-01-01", 10, "outside the representable range"),
        ("timestamp>99999999999999999999", 10, "does not fit in 64 bits"),
        ("timestamp>2026-11-25T10:00:00Z ago", 10, "invalid time"),
        ("ts > 1.5.5h", 5, "invalid time '1.5.5h' at position 5"),
    ],
)
def test_bad_time_is_an_error_at_the_value(query: str, position: int, message: str) -> None:
    error = syntax_error(query)
    assert error.position == position
    assert message in error.message


# -- full text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("timeout", t("timeout")),
        ("ERROR", t("ERROR")),
        ("42", t("42")),
        ("service", t("service")),
        ("payment-svc", t("payment-svc")),
        ("ago", t("ago")),
        ("user@example.com", t("user@example.com")),
        ("ünïcödé", t("ünïcödé")),
    ],
)
def test_bare_word_without_operator_is_text(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"connection refused"', p("connection refused")),
        ('"AND"', p("AND")),
        ('"level=ERROR"', p("level=ERROR")),
        (r'"say \"hi\""', p('say "hi"')),
        ('"-x"', p("-x")),
    ],
)
def test_quoted_string_alone_is_a_phrase(query: str, expected: Node) -> None:
    assert parse(query) == expected


# -- boolean structure ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a AND b", And((t("a"), t("b")))),
        ("a and b", And((t("a"), t("b")))),
        ("a And b", And((t("a"), t("b")))),
        ("a && b", And((t("a"), t("b")))),
        ("a&&b", And((t("a"), t("b")))),
        ("a OR b", Or((t("a"), t("b")))),
        ("a or b", Or((t("a"), t("b")))),
        ("a || b", Or((t("a"), t("b")))),
        ("a||b", Or((t("a"), t("b")))),
        ("NOT a", Not(t("a"))),
        ("not a", Not(t("a"))),
        ("!a", Not(t("a"))),
        ("! a", Not(t("a"))),
        ("-a", Not(t("a"))),
        ("- a", Not(t("a"))),
    ],
)
def test_boolean_keywords_and_symbols(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a b", And((t("a"), t("b")))),
        ("a b c", And((t("a"), t("b"), t("c")))),
        ('level=ERROR "disk full"', And((Compare("level", "=", "ERROR"), p("disk full")))),
        ("a (b OR c)", And((t("a"), Or((t("b"), t("c")))))),
        ('"x"y', And((p("x"), t("y")))),
    ],
)
def test_juxtaposition_means_and(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a OR b AND c", Or((t("a"), And((t("b"), t("c")))))),
        ("a AND b OR c", Or((And((t("a"), t("b"))), t("c")))),
        ("a OR b c", Or((t("a"), And((t("b"), t("c")))))),
        ("NOT a AND b", And((Not(t("a")), t("b")))),
        ("NOT a OR b", Or((Not(t("a")), t("b")))),
        ("-a b", And((Not(t("a")), t("b")))),
        ("a || b && !c", Or((t("a"), And((t("b"), Not(t("c"))))))),
    ],
)
def test_precedence_is_not_then_and_then_or(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("(a OR b) AND c", And((Or((t("a"), t("b"))), t("c")))),
        ("NOT (a AND b)", Not(And((t("a"), t("b"))))),
        ("-(a b)", Not(And((t("a"), t("b"))))),
        ("!(level=DEBUG)", Not(Compare("level", "=", "DEBUG"))),
    ],
)
def test_parentheses_override_precedence(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a AND (b AND c)", And((t("a"), t("b"), t("c")))),
        ("(a AND b) AND (c AND d)", And((t("a"), t("b"), t("c"), t("d")))),
        ("a OR (b OR (c OR d))", Or((t("a"), t("b"), t("c"), t("d")))),
        ("a (b c)", And((t("a"), t("b"), t("c")))),
        ("a AND (b OR c)", And((t("a"), Or((t("b"), t("c")))))),
        ("(a OR b) OR (c AND d)", Or((t("a"), t("b"), And((t("c"), t("d")))))),
        ("NOT (a AND b) AND c", And((Not(And((t("a"), t("b")))), t("c")))),
    ],
)
def test_nested_and_or_of_the_same_kind_flatten(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize("query", ["a", "(a)", "((a))", " ( ( a ) ) "])
def test_single_child_is_returned_unwrapped(query: str) -> None:
    assert parse(query) == t("a")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("NOT NOT a", Not(Not(t("a")))),
        ("!-a", Not(Not(t("a")))),
        ("--a", Not(Not(t("a")))),
    ],
)
def test_repeated_negation_is_kept(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("-level=DEBUG", Not(Compare("level", "=", "DEBUG"))),
        ("attributes.delta>-5", Compare("attributes.delta", ">", -5)),
        ("attributes.delta > -5", Compare("attributes.delta", ">", -5)),
        ("attributes.x=-y", Compare("attributes.x", "=", "-y")),
        ("a -b", And((t("a"), Not(t("b"))))),
        ("a-b", t("a-b")),
        (
            "level=ERROR -service=auth",
            And((Compare("level", "=", "ERROR"), Not(Compare("service", "=", "auth")))),
        ),
    ],
)
def test_minus_negates_a_term_but_starts_a_value_after_an_operator(
    query: str, expected: Node
) -> None:
    assert parse(query) == expected


def test_keyword_and_word_containing_keyword_differ() -> None:
    assert parse("android ORacle notice") == And((t("android"), t("ORacle"), t("notice")))


def test_realistic_query() -> None:
    query = (
        '(service=checkout OR svc-x) AND NOT level<=debug && attr.http.status>=500 "timed out" '
        "|| resource.k8s.namespace=prod"
    )
    assert parse(query) == Or(
        (
            And(
                (
                    Or((Compare("service", "=", "checkout"), t("svc-x"))),
                    Not(Compare("level", "<=", "DEBUG")),
                    Compare("attributes.http.status", ">=", 500),
                    p("timed out"),
                )
            ),
            Compare("resource.k8s.namespace", "=", "prod"),
        )
    )


# -- errors ---------------------------------------------------------------------------

ERRORS = [
    # (query, position, the message must contain)
    ("service=", 7, "expected a value after '=' at position 7 (found end of query)"),
    ("service=auth AND level=", 22, "expected a value after '=' at position 22"),
    ("service!= ", 7, "expected a value after '!=' at position 7"),
    ("(service=)", 8, "expected a value after '=' at position 8 (found ')')"),
    ("service= AND x", 7, "expected a value after '=' at position 7 (found 'AND')"),
    ("service=(a)", 7, "expected a value after '=' at position 7 (found '(')"),
    ("attributes.n>=!x", 12, "expected a value after '>=' at position 12 (found '!')"),
    ("=auth", 0, "expected a field name before '=' at position 0"),
    ("a=b=c", 0, "unknown field 'a' at position 0"),
    ("service=a=b", 9, "expected a field name before '=' at position 9"),
    ("service=a >= b", 10, "expected a field name before '>=' at position 10"),
    ('"service"=auth', 0, "a field name cannot be quoted, at position 0"),
    ("(a", 0, "unclosed '(' at position 0"),
    ("a (b (c)", 2, "unclosed '(' at position 2"),
    ("(", 0, "unclosed '(' at position 0"),
    ("a)", 1, "unmatched ')' at position 1"),
    (")", 0, "unmatched ')' at position 0"),
    ("(a))", 3, "unmatched ')' at position 3"),
    ("()", 0, "empty parentheses at position 0"),
    ("a ( ) b", 2, "empty parentheses at position 2"),
    ("a AND", 2, "expected a term after 'AND' at position 2 (found end of query)"),
    ("a OR", 2, "expected a term after 'OR' at position 2"),
    ("a &&", 2, "expected a term after '&&' at position 2"),
    ("a ||", 2, "expected a term after '||' at position 2"),
    ("a AND OR b", 2, "expected a term after 'AND' at position 2 (found 'OR')"),
    ("(a OR)", 3, "expected a term after 'OR' at position 3 (found ')')"),
    ("a AND =b", 2, "expected a term after 'AND' at position 2 (found '=')"),
    ("NOT", 0, "expected a term after 'NOT' at position 0"),
    ("a NOT", 2, "expected a term after 'NOT' at position 2"),
    ("!", 0, "expected a term after '!' at position 0"),
    ("a -", 2, "expected a term after '-' at position 2"),
    ("NOT)", 0, "expected a term after 'NOT' at position 0 (found ')')"),
    ("AND a", 0, "expected a term before 'AND' at position 0"),
    ("OR", 0, "expected a term before 'OR' at position 0"),
    ("(OR a)", 1, "expected a term before 'OR' at position 1"),
    ('"abc', 0, "unterminated quoted string starting at position 0"),
    ('a "b\\"', 2, "unterminated quoted string starting at position 2"),
    ('body="abc\\', 5, "unterminated quoted string starting at position 5"),
    ('"a\\nb"', 2, "unknown escape '\\\\n' at position 2"),
    ('""', 0, "empty quoted phrase at position 0"),
    ("a & b", 2, "unexpected '&' at position 2; use '&&' or AND"),
    ("a | b", 2, "unexpected '|' at position 2; use '||' or OR"),
    ("a==b", 1, "unknown operator '==' at position 1; did you mean '='?"),
    ("a=>b", 1, "did you mean '>='?"),
    ("a=<b", 1, "did you mean '<='?"),
    ("a<>b", 1, "did you mean '!='?"),
    ("a\x00b", 1, "unexpected character '\\x00' at position 1"),
    ("ok \x1b[31m", 3, "unexpected character '\\x1b' at position 3"),
    ("\ud800", 0, "unexpected character"),
    ("user=bob", 0, "unknown field 'user' at position 0; for a record attribute write"),
    ("x user=bob", 2, "write 'attributes.user'"),
    ("a AND foo.bar>3", 6, "unknown field 'foo.bar' at position 6"),
    ("servce=auth", 0, "did you mean 'service'?"),
    ("lvl=error", 0, "did you mean 'level'?"),
    ("attributes=1", 0, "field 'attributes' at position 0 needs a key"),
    ("x res=1", 2, "field 'res' at position 2 needs a key"),
    ("attributes.=1", 0, "invalid attribute path 'attributes.' at position 0"),
    ("attr..x=1", 0, "invalid attribute path 'attr..x' at position 0"),
    ("resource.a.=1", 0, "no empty segments"),
    ("level=ERRR", 6, "unknown level 'ERRR' at position 6"),
    ("timestamp>soon", 10, "invalid time 'soon' at position 10"),
    ("attributes.n=99999999999999999999", 13, "does not fit in 64 bits"),
    ("attributes.n=" + "9" * 5000, 13, "does not fit in 64 bits"),
    ("attributes.n=" + "9" * 400 + ".5", 13, "too large"),
]  # fmt: skip


@pytest.mark.parametrize(("query", "position", "message"), ERRORS)
def test_bad_query_raises_syntax_error_at_the_offending_token(
    query: str, position: int, message: str
) -> None:
    error = syntax_error(query)
    assert error.position == position
    assert message in error.message


@pytest.mark.parametrize(("query", "position"), [(q, pos) for q, pos, _ in ERRORS])
def test_error_message_states_the_position(query: str, position: int) -> None:
    error = syntax_error(query)
    assert f"at position {position}" in error.message
    assert str(error).startswith(f"query syntax error at position {position}: ")


def test_error_message_truncates_a_huge_token() -> None:
    error = syntax_error("x" * 100_000 + "=1")
    assert error.position == 0
    assert len(error.message) < 300


# -- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "(" * 10_000,
        "(" * 10_000 + "a" + ")" * 10_000,
        "!" * 10_000 + "a",
        "-" * 10_000 + "a",
        "NOT " * 10_000 + "a",
        "(NOT " * 5_000 + "a",
    ],
    ids=["parens", "balanced-parens", "bangs", "minuses", "nots", "paren-nots"],
)
def test_pathological_nesting_is_a_syntax_error_not_recursion_error(query: str) -> None:
    error = syntax_error(query)
    assert f"deeper than {MAX_DEPTH} levels" in error.message
    assert error.position <= 4 * MAX_DEPTH


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == t("a")
    nots = parse("NOT " * MAX_DEPTH + "a")
    for _ in range(MAX_DEPTH):
        assert isinstance(nots, Not)
        nots = nots.child
    assert nots == t("a")


def test_nesting_one_past_the_limit_is_refused_at_that_parenthesis() -> None:
    error = syntax_error("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert error.position == MAX_DEPTH


def test_nesting_depth_is_counted_per_branch_not_per_query() -> None:
    query = " ".join(["(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH] * 3)
    assert parse(query) == And((t("a"), t("a"), t("a")))


def test_long_flat_query_parses() -> None:
    node = parse(" OR ".join(f"w{i}" for i in range(20_000)))
    assert isinstance(node, Or)
    assert len(node.children) == 20_000


def test_long_run_of_escapes_parses() -> None:
    assert parse('"' + "\\\\" * 50_000 + '"') == p("\\" * 50_000)


# -- properties -----------------------------------------------------------------------


def parse_or_syntax_error(query: str) -> None:
    try:
        node = parse(query)
    except QuerySyntaxError as e:
        assert 0 <= e.position <= len(query)
        assert isinstance(e.message, str) and e.message
    else:
        assert isinstance(node, (Compare, Text, And, Or, Not, MatchAll))


FRAGMENTS = [
    *FIELDS, *FIELD_ALIASES, "attributes.", "attr.x", "res.", "resource.a.b", "AND", "OR",
    "NOT", "and", "&&", "||", "&", "|", "!", "-", "(", ")", "=", "!=", ">", ">=", "<", "<=",
    "==", '"', "\\", '"a b"', '"\\"', "ago", "2h", "0s", "1h30m", "-5", "3.5", "42", "007",
    "1e5", "ERROR", "warning", "2026-11-25T10:00:00Z", "2026-02-30", "+01:00", "a" * 32,
    "b" * 16, "ns", " ", "\t", "\n", "\x00", "é", "\ud800", "9" * 25,
]  # fmt: skip


@settings(max_examples=500)
@given(st.text())
def test_any_text_parses_or_raises_syntax_error(query: str) -> None:
    parse_or_syntax_error(query)


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join))
def test_any_mix_of_query_fragments_parses_or_raises_syntax_error(query: str) -> None:
    parse_or_syntax_error(query)


def test_random_fragment_strings_parse_or_raise_syntax_error() -> None:
    # Hypothesis shrinks towards small inputs; this sweep adds long, spaced-out ones.
    rng = random.Random(20261125)
    for _ in range(5_000):
        pieces = rng.choices(FRAGMENTS, k=rng.randint(1, 40))
        parse_or_syntax_error(" ".join(pieces) if rng.random() < 0.5 else "".join(pieces))


# Round trip: render a random tree fully parenthesised, parse it back, get the same tree
# (after flattening, which the parser does and the generator does not).

WORDS = st.from_regex(r"[a-z][a-z0-9_.:/@-]{0,10}", fullmatch=True).filter(
    lambda w: w not in ("and", "or", "not")
)
PHRASES = st.text(min_size=1, max_size=12)
ATTRIBUTE_FIELDS = st.from_regex(r"(attributes|resource)\.[a-z][a-z0-9_-]{0,6}", fullmatch=True)
PLAIN_VALUES: st.SearchStrategy[Value] = st.one_of(
    st.text(max_size=10),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda i: i / 100),
)
OPS = st.sampled_from(["=", "!=", ">", ">=", "<", "<="])
COMPARES = st.one_of(
    st.builds(Compare, ATTRIBUTE_FIELDS, OPS, PLAIN_VALUES),
    st.builds(Compare, st.just("level"), OPS, st.sampled_from(LEVELS)),
    st.builds(Compare, st.just("trace_id"), OPS, st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
    st.builds(Compare, st.just("timestamp"), OPS, st.builds(TimeRef, ago_ns=st.integers(1, 2**62))),
    st.builds(Compare, st.just("timestamp"), OPS, st.builds(TimeRef, ns=st.integers(0, 2**62))),
)
LEAVES = st.one_of(COMPARES, st.builds(Text, WORDS), st.builds(Text, PHRASES, st.just(True)))
TREES: st.SearchStrategy[Node] = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.builds(Not, children),
        st.lists(children, min_size=2, max_size=4).map(lambda c: And(tuple(c))),
        st.lists(children, min_size=2, max_size=4).map(lambda c: Or(tuple(c))),
    ),
    max_leaves=12,
)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(node: Node) -> str:
    if isinstance(node, Text):
        return quote(node.text) if node.phrase else node.text
    if isinstance(node, Not):
        return f"NOT ({render(node.child)})"
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(render(child) for child in node.children) + ")"
    assert isinstance(node, Compare)
    value = node.value
    if isinstance(value, TimeRef):
        rendered = f"{value.ago_ns}ns ago" if value.ago_ns is not None else str(value.ns)
    elif isinstance(value, str):
        rendered = quote(value)
    else:
        rendered = repr(value)
    return f"{node.field}{node.op}{rendered}"


def flatten(node: Node) -> Node:
    if isinstance(node, Not):
        return Not(flatten(node.child))
    if isinstance(node, And | Or):
        children: list[Node] = []
        for child in map(flatten, node.children):
            if type(child) is type(node):
                assert isinstance(child, And | Or)
                children.extend(child.children)
            else:
                children.append(child)
        return type(node)(tuple(children))
    return node


@settings(max_examples=300)
@given(TREES)
def test_rendered_tree_parses_back_to_the_same_tree(tree: Node) -> None:
    assert parse(render(tree)) == flatten(tree)
