"""Parser for the log query language: text in, `otelog.query.ast` tree out.

Grammar (NOT binds tighter than AND, AND tighter than OR; juxtaposition is AND)::

    query      := or_expr? EOF
    or_expr    := and_expr (OR and_expr)*
    and_expr   := unary (AND? unary)*
    unary      := NOT* primary                    NOT is `NOT`, `!` or a `-` prefix
    primary    := '(' or_expr ')' | comparison | WORD | QUOTED
    comparison := WORD OP (WORD | QUOTED) ['ago']  `ago` only after a timestamp duration

Every error is a QuerySyntaxError whose position is the 0-based index of the offending
token. For "expected X after Y" errors that is Y, the operator left without an operand,
because that is where the user has to add something.
"""

from __future__ import annotations

import calendar
import difflib
import math
import re
from collections.abc import Iterator

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
from otelog.query.duration import InvalidDuration, parse_duration_ns
from otelog.query.lexer import Token, TokenKind, iter_tokens, show

__all__ = ["LEVELS", "MAX_DEPTH", "parse"]

# Parentheses and NOTs nested deeper than this are refused. Real queries never come close,
# and the bound keeps both this recursive-descent parser and every consumer that walks
# the tree recursively (planner, repr, ==) far from Python's recursion limit.
MAX_DEPTH = 64

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_LEVEL_SYNONYMS = {"WARNING": "WARN", "ERR": "ERROR", "CRITICAL": "FATAL"}

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
# More digits than this cannot fit in an int64; checking the length first keeps int() away
# from its 4300-digit limit (a ValueError) and from quadratic conversion cost.
_INT64_DIGITS = 19

# Numeric shapes are spelled out with [0-9] so other scripts' digits stay strings. Leading
# zeros keep a value a string (`007`, a zip code), as in Python's own int literals.
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-f]+")
_ID_HEX_LENGTHS = {"trace_id": 32, "span_id": 16}

_DATETIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?"
)
# Enough of a date's shape to tell that the user meant a datetime, to word the error.
_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}")
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_ATTRIBUTE_PREFIXES = (
    ("attributes.", "attributes."),
    ("attr.", "attributes."),
    ("resource.", "resource."),
    ("res.", "resource."),
)

_TERM_START = frozenset({TokenKind.WORD, TokenKind.QUOTED, TokenKind.LPAREN, TokenKind.NOT})
_TIME_FORMS = (
    "expected a duration such as '2h' or '2h ago', an RFC 3339 time such as "
    "'2026-11-25T10:00:00Z', or an integer of nanoseconds since the epoch"
)


def parse(text: str) -> Node:
    """Parse a query. Empty or whitespace-only text is MatchAll().

    Raises QuerySyntaxError, and no other exception, for any text that is not a query.
    """
    return _Parser(iter_tokens(text)).parse_query()


class _Parser:
    """Recursive descent with one token of lookahead, which is all the grammar needs."""

    def __init__(self, tokens: Iterator[Token]) -> None:
        self._tokens = tokens
        self._current = next(tokens)
        self._depth = 0

    def parse_query(self) -> Node:
        if self._peek().kind is TokenKind.EOF:
            return MatchAll()
        node = self._or_expr()
        token = self._peek()
        if token.kind is TokenKind.RPAREN:
            raise QuerySyntaxError(
                token.pos, f"unmatched ')' at position {token.pos}: no '(' is open"
            )
        if token.kind is not TokenKind.EOF:  # pragma: no cover - the loops consume all else
            raise QuerySyntaxError(
                token.pos, f"unexpected {token.describe()} at position {token.pos}"
            )
        return node

    # -- token stream -------------------------------------------------------------------

    def _peek(self) -> Token:
        return self._current

    def _advance(self) -> Token:
        token = self._current
        if token.kind is not TokenKind.EOF:
            self._current = next(self._tokens)
        return token

    def _expect_term_after(self, operator: Token) -> None:
        found = self._peek()
        if found.kind not in _TERM_START:
            raise QuerySyntaxError(
                operator.pos,
                f"expected a term after {show(operator.text)} at position {operator.pos} "
                f"(found {found.describe()})",
            )

    def _enter(self, token: Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise QuerySyntaxError(
                token.pos,
                f"query nests deeper than {MAX_DEPTH} levels of parentheses and NOT "
                f"at position {token.pos}",
            )

    # -- grammar ------------------------------------------------------------------------

    def _or_expr(self) -> Node:
        children = [self._and_expr()]
        while self._peek().kind is TokenKind.OR:
            operator = self._advance()
            self._expect_term_after(operator)
            children.append(self._and_expr())
        return _combine(children, Or)

    def _and_expr(self) -> Node:
        children = [self._unary()]
        while True:
            token = self._peek()
            if token.kind is TokenKind.AND:
                self._advance()
                self._expect_term_after(token)
            elif token.kind not in _TERM_START and token.kind is not TokenKind.OP:
                # A stray OP is let through so _primary can explain it.
                break
            children.append(self._unary())
        return _combine(children, And)

    def _unary(self) -> Node:
        # A loop, not recursion: `!!!!…x` must not be able to exhaust the stack.
        negations = 0
        while self._peek().kind is TokenKind.NOT:
            operator = self._advance()
            self._enter(operator)
            self._expect_term_after(operator)
            negations += 1
        node = self._primary()
        for _ in range(negations):
            node = Not(node)
        self._depth -= negations
        return node

    def _primary(self) -> Node:
        token = self._advance()
        kind = token.kind
        if kind is TokenKind.LPAREN:
            return self._group(token)
        if kind is TokenKind.WORD:
            if self._peek().kind is TokenKind.OP:
                return self._comparison(token)
            return Text(token.value)
        if kind is TokenKind.QUOTED:
            if self._peek().kind is TokenKind.OP:
                raise QuerySyntaxError(
                    token.pos,
                    f"a field name cannot be quoted, at position {token.pos}; "
                    "write it bare, e.g. attributes.user.id",
                )
            if not token.value:
                raise QuerySyntaxError(token.pos, f"empty quoted phrase at position {token.pos}")
            return Text(token.value, phrase=True)
        if kind is TokenKind.OP:
            raise QuerySyntaxError(
                token.pos,
                f"expected a field name before {show(token.text)} at position {token.pos}",
            )
        if kind is TokenKind.RPAREN:
            raise QuerySyntaxError(
                token.pos, f"unmatched ')' at position {token.pos}: no '(' is open"
            )
        if kind in (TokenKind.AND, TokenKind.OR):
            raise QuerySyntaxError(
                token.pos,
                f"expected a term before {show(token.text)} at position {token.pos}",
            )
        raise QuerySyntaxError(
            token.pos, f"unexpected {token.describe()} at position {token.pos}"
        )  # pragma: no cover - EOF is ruled out by every caller

    def _group(self, opening: Token) -> Node:
        self._enter(opening)
        if self._peek().kind is TokenKind.RPAREN:
            raise QuerySyntaxError(opening.pos, f"empty parentheses at position {opening.pos}")
        node = None if self._peek().kind is TokenKind.EOF else self._or_expr()
        if node is None or self._peek().kind is not TokenKind.RPAREN:
            raise QuerySyntaxError(
                opening.pos,
                f"unclosed '(' at position {opening.pos}; add a matching ')'",
            )
        self._advance()
        self._depth -= 1
        return node

    def _comparison(self, name: Token) -> Compare:
        field = _resolve_field(name)
        operator = self._advance()
        value_token = self._peek()
        if value_token.kind not in (TokenKind.WORD, TokenKind.QUOTED):
            raise QuerySyntaxError(
                operator.pos,
                f"expected a value after {show(operator.text)} at position {operator.pos} "
                f"(found {value_token.describe()})",
            )
        self._advance()
        value: Value
        if field == "timestamp":
            value = self._time_value(value_token)
        elif field == "level":
            value = _level_value(value_token)
        elif field in _ID_HEX_LENGTHS:
            value = _hex_id_value(field, value_token)
        else:
            value = _plain_value(value_token)
        return Compare(field, operator.value, value)

    def _time_value(self, token: Token) -> TimeRef:
        after = self._peek()
        if (
            token.kind is TokenKind.WORD
            and after.kind is TokenKind.WORD
            and after.value.lower() == "ago"
        ):
            self._advance()
            return TimeRef(ago_ns=_duration(token, token.value))
        return _time_ref(token)


# -- values ---------------------------------------------------------------------------


def _combine(children: list[Node], kind: type[And | Or]) -> Node:
    if len(children) == 1:
        return children[0]
    flat: list[Node] = []
    for child in children:
        # `(a AND b) AND c` is one And; only the same kind flattens, so NOT(a AND b) stays.
        if isinstance(child, kind):
            flat.extend(child.children)
        else:
            flat.append(child)
    return kind(tuple(flat))


def _resolve_field(token: Token) -> str:
    name = token.value
    lowered = name.lower()
    if lowered in FIELDS:
        return lowered
    if lowered in FIELD_ALIASES:
        return FIELD_ALIASES[lowered]
    for prefix, canonical in _ATTRIBUTE_PREFIXES:
        # Compare only the prefix case-insensitively: the path is an attribute key, kept
        # verbatim, and lower() of the whole name can change its length.
        if name[: len(prefix)].lower() == prefix:
            path = name[len(prefix) :]
            if not path or "" in path.split("."):
                raise QuerySyntaxError(
                    token.pos,
                    f"invalid attribute path {show(name)} at position {token.pos}: "
                    f"expected '{canonical}<key>' with no empty segments",
                )
            return canonical + path
    if lowered in ("attributes", "attr", "resource", "res"):
        raise QuerySyntaxError(
            token.pos,
            f"field {show(name)} at position {token.pos} needs a key, e.g. '{lowered}.user.id'",
        )
    message = (
        f"unknown field {show(name)} at position {token.pos}; "
        f"for a record attribute write {show('attributes.' + name, 60)}"
    )
    close = difflib.get_close_matches(lowered, [*FIELDS, *FIELD_ALIASES], n=1)
    if close:
        message += f", or did you mean '{close[0]}'?"
    raise QuerySyntaxError(token.pos, message)


def _level_value(token: Token) -> str:
    upper = token.value.upper()
    level = _LEVEL_SYNONYMS.get(upper, upper)
    if level not in LEVELS:
        raise QuerySyntaxError(
            token.pos,
            f"unknown level {show(token.value)} at position {token.pos}; "
            f"expected one of {', '.join(LEVELS)}",
        )
    return level


def _hex_id_value(field: str, token: Token) -> str:
    length = _ID_HEX_LENGTHS[field]
    value = token.value.lower()
    if len(value) != length or not _HEX.fullmatch(value):
        raise QuerySyntaxError(
            token.pos,
            f"invalid {field} {show(token.value)} at position {token.pos}: "
            f"expected {length} hex characters",
        )
    return value


def _plain_value(token: Token) -> str | int | float:
    text = token.value
    if token.kind is TokenKind.QUOTED:
        return text
    if _INT.fullmatch(text):
        return _int64(text, token)
    if _FLOAT.fullmatch(text):
        result = float(text)
        if not math.isfinite(result):
            raise QuerySyntaxError(
                token.pos, f"number {show(text)} at position {token.pos} is too large"
            )
        return result
    return text


def _int64(text: str, token: Token) -> int:
    digits = len(text.lstrip("-"))
    number = int(text) if digits <= _INT64_DIGITS else None
    if number is None or not _INT64_MIN <= number <= _INT64_MAX:
        raise QuerySyntaxError(
            token.pos,
            f"integer {show(text)} at position {token.pos} does not fit in 64 bits; "
            "quote it to compare it as a string",
        )
    return number


def _time_ref(token: Token) -> TimeRef:
    text = token.value
    if token.kind is TokenKind.QUOTED:
        text = text.strip()
        # Sliced, not matched with r"(.*?)\s+ago": that pattern is quadratic on long runs
        # of spaces, and this is user input.
        if text[-3:].lower() == "ago" and text[-4:-3].isspace():
            return TimeRef(ago_ns=_duration(token, text[:-3].rstrip()))
    if _UNSIGNED.fullmatch(text):
        return TimeRef(ns=_int64(text, token))
    if _DATE_PREFIX.match(text):
        return TimeRef(ns=_datetime_ns(token, text))
    if text[:1].isdigit() or text[:1] in "+-.":
        return TimeRef(ago_ns=_duration(token, text))
    raise QuerySyntaxError(
        token.pos, f"invalid time {show(token.value)} at position {token.pos}; {_TIME_FORMS}"
    )


def _duration(token: Token, text: str) -> int:
    try:
        return parse_duration_ns(text)
    except InvalidDuration as e:
        raise QuerySyntaxError(
            token.pos,
            f"invalid time {show(token.value)} at position {token.pos}: {e.reason}; {_TIME_FORMS}",
        ) from None


def _datetime_ns(token: Token, text: str) -> int:
    def fail(reason: str) -> QuerySyntaxError:
        return QuerySyntaxError(
            token.pos,
            f"invalid time {show(token.value)} at position {token.pos}: {reason}",
        )

    m = _DATETIME.fullmatch(text)
    if m is None:
        raise fail("expected an RFC 3339 time such as '2026-11-25T10:00:00Z'")
    year, month, day = int(m["year"]), int(m["month"]), int(m["day"])
    hour, minute, second = (int(m[g] or 0) for g in ("hour", "minute", "second"))
    if not 1 <= month <= 12:
        raise fail("month must be 01 to 12")
    month_days = _MONTH_DAYS[month - 1] + (month == 2 and calendar.isleap(year))
    if not 1 <= day <= month_days:
        raise fail(f"day must be 01 to {month_days}")
    if hour > 23 or minute > 59 or second > 59:
        raise fail("time of day out of range")
    offset_s = 0
    tz = m["tz"]
    if tz and tz not in ("Z", "z"):
        digits = tz[1:].replace(":", "")
        tz_hours, tz_minutes = int(digits[:2]), int(digits[2:])
        if tz_hours > 23 or tz_minutes > 59:
            raise fail("UTC offset out of range")
        offset_s = (tz_hours * 3600 + tz_minutes * 60) * (-1 if tz[0] == "-" else 1)
    # A time without an offset is taken as UTC: servers and their logs disagree on local
    # time, UTC is the only reading that means the same thing everywhere.
    days = _days_since_epoch(year, month, day)
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s
    ns = seconds * 1_000_000_000 + int((m["fraction"] or "").ljust(9, "0"))
    if not _INT64_MIN <= ns <= _INT64_MAX:
        raise fail("outside the representable range (about 1677 to 2262)")
    return ns


def _days_since_epoch(year: int, month: int, day: int) -> int:
    # Integer civil-to-days arithmetic (H. Hinnant's days_from_civil) rather than datetime:
    # datetime stops at microseconds and raises on year 0, and here any year must end in
    # the int64 range check with its clearer message.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468
