"""Row-at-a-time evaluation of a query: for the memtable, residual predicates and live tail.

Compiled once into nested closures, so a filter shared by many tail subscribers costs
one evaluation per record.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from otelog.model import LEVEL_NAMES
from otelog.query.ast import And, Compare, MatchAll, Node, Not, Or, Text, TimeRef
from otelog.query.rows import LogRow
from otelog.store.tokens import is_letter_word, letter_runs

Matcher = Callable[[LogRow], bool]


def value_text(v: object) -> str:
    """How a query value compares to stored attribute text (see anyvalue._scalar_text)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _cmp(op: str, a: float | str, b: float | str) -> bool:
    return _OPS[op](a, b)


def _num(x: str) -> float | None:
    try:
        return float(x)
    except ValueError:
        return None


def _compare_text(op: str, have: str | None, want: object) -> bool:
    if op in ("=", "!="):
        eq = have is not None and have == value_text(want)
        return eq if op == "=" else not eq
    if have is None:
        return False
    if isinstance(want, int) and not isinstance(want, bool):
        # int64 values (ns timestamps, ids) lose precision as floats: compare as ints
        try:
            return _cmp(op, int(have), want)
        except ValueError:
            pass
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        h = _num(have)
        return h is not None and _cmp(op, h, float(want))
    return _cmp(op, have, str(want))


def phrase_matches(phrase: str, body: str) -> bool:
    return phrase.lower() in body.lower()


def word_matches(word: str, body: str) -> bool:
    """A letters-only word matches as a whole run of letters; anything else as a substring."""
    w = word.lower()
    if is_letter_word(w):
        return w in letter_runs(body)
    return w in body.lower()


def compile_matcher(node: Node, now_ns: int) -> Matcher:
    if isinstance(node, MatchAll):
        return lambda r: True
    if isinstance(node, And):
        parts = [compile_matcher(c, now_ns) for c in node.children]
        return lambda r: all(p(r) for p in parts)
    if isinstance(node, Or):
        parts = [compile_matcher(c, now_ns) for c in node.children]
        return lambda r: any(p(r) for p in parts)
    if isinstance(node, Not):
        inner = compile_matcher(node.child, now_ns)
        return lambda r: not inner(r)
    if isinstance(node, Text):
        text = node.text
        if node.phrase:
            return lambda r: phrase_matches(text, r.body)
        return lambda r: word_matches(text, r.body)
    assert isinstance(node, Compare)
    return _compile_compare(node, now_ns)


def _compile_compare(c: Compare, now_ns: int) -> Matcher:
    op, v, f = c.op, c.value, c.field
    if f == "level":
        want = int(LEVEL_NAMES[str(v)])
        return lambda r: _cmp(op, r.level, want)
    if f == "timestamp":
        assert isinstance(v, TimeRef)
        t = v.resolve(now_ns)
        return lambda r: _cmp(op, r.ts, t)
    if f == "service":
        return lambda r: _compare_text(op, r.service, v)
    if f == "host":
        return lambda r: _compare_text(op, r.host, v)
    if f == "trace_id":
        return lambda r: _compare_text(op, r.trace_id, str(v).lower())
    if f == "span_id":
        return lambda r: _compare_text(op, r.span_id, str(v).lower())
    if f == "log_id":
        return lambda r: _compare_text(op, f"{r.log_id:016x}", str(v).lower())
    if f == "body":
        if op in ("=", "!="):
            return lambda r: (r.body == str(v)) == (op == "=")
        return lambda r: _cmp(op, r.body, str(v))
    if f.startswith("attributes."):
        key = f[len("attributes.") :]
        return lambda r: _compare_text(op, r.flat_attrs.get(key), v)
    if f.startswith("resource."):
        key = f[len("resource.") :]
        return lambda r: _compare_text(op, r.flat_resource.get(key), v)
    raise ValueError(f"unknown field {f!r}")
