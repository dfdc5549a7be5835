"""A rule's query over a committed batch, as a row mask: what the engine counts.

`compile_matcher` decides one row at a time and needs a `LogRow` per record (its record
parsed, its attributes flattened). Alert queries are mostly `level` and `service` terms,
which a batch answers with numpy at once from its level column and its resource table.
So the predicates the columns decide (level, service, host, resource attributes) are
vectorized; words and phrases read the batch's body column and record attributes its
serialized KeyValues, each only on the rows still in play (`within`), with the same
functions the row matcher uses; only ids (trace, span, log) fall back to the row matcher.
`service=api AND timeout` looks at api's bodies only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otelog.anyvalue import _scalar_text, kv_terms
from otelog.model import LogBatch
from otelog.query.ast import And, Compare, MatchAll, Node, Not, Or, Text
from otelog.query.match import (
    Matcher,
    _compare_text,
    compile_matcher,
    phrase_matches,
    value_text,
    word_matches,
)
from otelog.query.plan import levels_matching
from otelog.query.rows import ResourceCache, row_from_batch

__all__ = ["BatchFilter", "BatchView"]

Mask = np.ndarray  # bool, one entry per row of the batch
_Column = Callable[["BatchView", Mask], Mask]


class BatchView:
    """The columns of one batch as arrays, each built at most once however many rules
    (filters and counts) read them."""

    def __init__(self, batch: LogBatch, resources: ResourceCache) -> None:
        self.batch = batch
        self.cache = resources
        self._ts: np.ndarray | None = None
        self._level: np.ndarray | None = None
        self._res: np.ndarray | None = None
        self._names: dict[str, np.ndarray] = {}

    @property
    def ts(self) -> np.ndarray:
        if self._ts is None:
            self._ts = np.asarray(self.batch.ts, dtype=np.int64)
        return self._ts

    @property
    def level(self) -> np.ndarray:
        if self._level is None:
            self._level = np.frombuffer(bytes(self.batch.level), dtype=np.uint8)
        return self._level

    @property
    def res(self) -> np.ndarray:
        if self._res is None:
            self._res = np.asarray(self.batch.res, dtype=np.int64)
        return self._res

    def per_resource(self, decide: Callable[[int], bool]) -> Mask:
        """A per-row mask from a decision per resource (service, host, resource attrs)."""
        table = np.fromiter(
            (decide(i) for i in range(len(self.batch.resources))),
            dtype=bool,
            count=len(self.batch.resources),
        )
        return self.rows_of(table)

    def rows_of(self, table: np.ndarray) -> Mask:
        return table[self.res] if len(table) else np.zeros(len(self.batch), dtype=bool)

    def resource_names(self, field: str) -> np.ndarray:
        """Service or host of each resource, as an array numpy compares in one call."""
        col = self._names.get(field)
        if col is None:
            res = self.batch.resources
            values = [r.service for r in res] if field == "service" else [r.host for r in res]
            col = self._names[field] = np.array(values, dtype=object)
        return col


class BatchFilter:
    """One compiled rule query. `mask(batch)` gives the rows that match."""

    def __init__(self, node: Node, now_ns: int = 0) -> None:
        # rule queries hold no timestamp comparison (rules.py refuses them), so `now_ns`
        # never matters to the matchers compiled here
        self.node = node
        self._eval = self._compile(node, now_ns)

    def mask(self, batch: LogBatch, resources: ResourceCache) -> Mask:
        return self.view_mask(BatchView(batch, resources))

    def view_mask(self, view: BatchView) -> Mask:
        return self._eval(view, np.ones(len(view.batch), dtype=bool))

    def _compile(self, node: Node, now_ns: int) -> _Column:
        if isinstance(node, MatchAll):
            return lambda v, within: within
        if isinstance(node, And):
            # column predicates first: the row matcher then sees fewer rows
            kids = sorted(node.children, key=lambda c: not _columnar(c))
            parts = [self._compile(c, now_ns) for c in kids]

            def and_(v: BatchView, within: Mask) -> Mask:
                acc = within
                for p in parts:
                    if not acc.any():
                        break
                    acc = acc & p(v, acc)
                return acc

            return and_
        if isinstance(node, Or):
            parts = [self._compile(c, now_ns) for c in node.children]

            def or_(v: BatchView, within: Mask) -> Mask:
                acc = np.zeros_like(within)
                for p in parts:
                    left = within & ~acc
                    if not left.any():
                        break
                    acc = acc | p(v, left)
                return acc

            return or_
        if isinstance(node, Not):
            inner = self._compile(node.child, now_ns)
            return lambda v, within: within & ~inner(v, within)
        if isinstance(node, Compare):
            col = _column_compare(node)
            if col is not None:
                return col
            if node.field.startswith("attributes."):
                return _attribute_compare(node)
        if isinstance(node, Text):
            return _text(node)
        return _rows(compile_matcher(node, now_ns))


def _columnar(node: Node) -> bool:
    if isinstance(node, Compare):
        return _column_compare(node) is not None
    if isinstance(node, (And, Or)):
        return all(_columnar(c) for c in node.children)
    if isinstance(node, Not):
        return _columnar(node.child)
    return isinstance(node, MatchAll)


def _column_compare(c: Compare) -> _Column | None:
    f, op, value = c.field, c.op, c.value
    if f == "level":
        allowed = np.zeros(256, dtype=bool)
        allowed[levels_matching(op, str(value))] = True
        return lambda v, within: within & allowed[v.level]
    if f in ("service", "host") and op in ("=", "!="):
        # both always have a value (host "" when unset), so = and != are plain compares
        want = value_text(value)

        def by_name(v: BatchView, within: Mask) -> Mask:
            eq = v.resource_names(f) == want
            return within & v.rows_of(eq if op == "=" else ~eq)

        return by_name
    if f in ("service", "host"):

        def by_resource(v: BatchView, within: Mask) -> Mask:
            res = v.batch.resources
            if f == "service":
                return within & v.per_resource(lambda i: _compare_text(op, res[i].service, value))
            return within & v.per_resource(lambda i: _compare_text(op, res[i].host, value))

        return by_resource
    if f.startswith("resource."):
        key = f[len("resource.") :]

        def by_resource_attr(v: BatchView, within: Mask) -> Mask:
            res = v.batch.resources
            return within & v.per_resource(
                lambda i: _compare_text(op, v.cache.flat(res[i].resource_pb).get(key), value)
            )

        return by_resource_attr
    return None


def _text(node: Text) -> _Column:
    """A word or phrase on the body column, as the row matcher decides it."""
    text, phrase = node.text, node.phrase
    low = text.lower()

    def run(v: BatchView, within: Mask) -> Mask:
        out = np.zeros_like(within)
        body = v.batch.body
        for i in np.flatnonzero(within).tolist():
            b = body[i]
            # a substring test first: a whole-word match needs the substring anyway
            if low in b.lower():
                out[i] = phrase_matches(text, b) if phrase else word_matches(text, b)
        return out

    return run


def _scalar(kv: bytes) -> str | None:
    v = KeyValue.FromString(kv).value
    return _scalar_text(v, v.WhichOneof("value"))


def _attribute_text(kvs: list[bytes], key: str, exact: bytes, first: bytes) -> str | None:
    """The text of record attribute `key` (dotted into nested maps), the last one when a
    key repeats: what `LogRow.flat_attrs[key]` holds, without parsing the whole record.

    `exact` opens a serialized KeyValue whose key is `key` (field 1, then field 2's tag);
    `first` is the key's first dotted part, which any KeyValue holding it contains."""
    found: str | None = None
    for kv in kvs:
        if kv.startswith(exact):
            text = _scalar(kv)
        elif first in kv:
            # a nested map or a longer key: flatten this attribute alone
            text = None
            for k, scalar in kv_terms(kv):
                if k == key:
                    text = _scalar(scalar)
        else:
            continue
        if text is not None:
            found = text
    return found


def _attribute_compare(c: Compare) -> _Column:
    key, op, value = c.field[len("attributes.") :], c.op, c.value
    kb = key.encode()
    # a key of 128 bytes or more has a two-byte length: no KeyValue starts with this then
    exact = b"\x0a" + bytes([len(kb)]) + kb + b"\x12" if len(kb) < 128 else b"\xff"
    first = key.split(".", 1)[0].encode()
    missing = _compare_text(op, None, value)

    def run(v: BatchView, within: Mask) -> Mask:
        out = np.zeros_like(within)
        attrs = v.batch.attrs
        for i in np.flatnonzero(within).tolist():
            text = _attribute_text(attrs[i], key, exact, first)
            out[i] = missing if text is None else _compare_text(op, text, value)
        return out

    return run


def _rows(matcher: Matcher) -> _Column:
    """The row matcher on the rows still in play."""

    def run(v: BatchView, within: Mask) -> Mask:
        out = np.zeros_like(within)
        for i in np.flatnonzero(within).tolist():
            out[i] = matcher(row_from_batch(v.batch, i, v.cache))
        return out

    return run
