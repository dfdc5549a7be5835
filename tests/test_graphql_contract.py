"""The GraphQL contract: graphql/schema.graphql is the code's schema, the names DESIGN.md
promises exist, the example operations in graphql/ are valid and answer on a real server,
and bad arguments are GraphQL errors with a message (never an HTTP 500).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import OtelogProcess
from graphql import FieldNode as GqlFieldNode
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLType,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
    parse,
    validate,
)

from otelog.api.schema import MAX_QUERY_DEPTH, schema

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "graphql"
SCHEMA_FILE = CONTRACT / "schema.graphql"
REGENERATE = (
    'python -c "from otelog.api.schema import schema; '
    "open('graphql/schema.graphql', 'w').write(schema.as_str() + '\\n')\""
)
EXAMPLES = sorted(p for p in CONTRACT.glob("*.graphql") if p != SCHEMA_FILE)

# Names DESIGN.md ("GraphQL, the core of the schema") makes contract: type -> field ->
# the argument names it must accept. Alert and mutation names are listed there too but
# are not built yet; they join this table with their implementation.
DESIGN: dict[str, dict[str, tuple[str, ...]]] = {
    "Query": {
        "logs": ("query", "since", "from", "to", "limit", "pageToken"),
        "trace": ("traceId",),
        "logHistogram": ("query", "since", "from", "to", "interval", "groupBy"),
        "services": (),
    },
    "LogPage": {"total": (), "nextPageToken": (), "records": ()},
    "LogRecord": {
        f: ()
        for f in (
            "logId",
            "timestamp",
            "service",
            "level",
            "body",
            "traceId",
            "spanId",
            "host",
            "attributes",
            "resource",
        )
    },
    "Trace": {f: () for f in ("traceId", "spans", "logs", "services", "startTime", "durationMs")},
    "Span": {
        f: ()
        for f in (
            "spanId",
            "parentSpanId",
            "name",
            "service",
            "kind",
            "startTime",
            "durationMs",
            "status",
            "attributes",
            "events",
        )
    },
    "HistogramBucket": {"start": (), "count": (), "group": ()},
    "FacetValue": {"value": (), "count": ()},
}
# The types DESIGN.md gives the root fields (`Trace` nullable, the rest not).
RETURN_TYPES = {
    "logs": "LogPage!",
    "trace": "Trace",
    "logHistogram": "[HistogramBucket!]!",
    "services": "[String!]!",
}


def test_schema_file_is_the_schema_of_the_code() -> None:
    assert SCHEMA_FILE.exists(), (
        f"graphql/schema.graphql is missing; generate it with:\n{REGENERATE}"
    )
    if SCHEMA_FILE.read_text() != schema.as_str() + "\n":
        pytest.fail(
            "graphql/schema.graphql and the schema in otelog/api/schema.py differ. If the "
            "change is intended, regenerate the file from the repository root with\n"
            f"    {REGENERATE}\nand review the diff: every name in it is public contract.",
            pytrace=False,
        )


@pytest.mark.parametrize("type_name", list(DESIGN))
def test_design_names_exist(type_name: str) -> None:
    t = schema._schema.get_type(type_name)
    assert isinstance(t, GraphQLObjectType), f"type {type_name} is missing"
    for field, args in DESIGN[type_name].items():
        assert field in t.fields, f"{type_name}.{field} is missing"
        missing = set(args) - set(t.fields[field].args)
        assert not missing, f"{type_name}.{field} lacks arguments {sorted(missing)}"


def _spell(t: GraphQLType) -> str:
    if isinstance(t, GraphQLNonNull):
        return _spell(t.of_type) + "!"
    if isinstance(t, GraphQLList):
        return f"[{_spell(t.of_type)}]"
    return get_named_type(t).name


def test_root_fields_return_the_design_types() -> None:
    query = schema._schema.query_type
    assert query is not None
    got = {name: _spell(query.fields[name].type) for name in RETURN_TYPES}
    assert got == RETURN_TYPES


def test_examples_cover_the_main_queries() -> None:
    roots: set[str] = set()
    for path in EXAMPLES:
        for op in parse(path.read_text()).definitions:
            assert isinstance(op, OperationDefinitionNode)
            roots |= {
                s.name.value for s in op.selection_set.selections if isinstance(s, GqlFieldNode)
            }
    assert {"logs", "trace", "logHistogram", "facets", "services"} <= roots


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_operation_is_valid(path: Path) -> None:
    errors = validate(schema._schema, parse(path.read_text()))
    assert not errors, [e.message for e in errors]


# ---- against a real server


def _post_logs(server: OtelogProcess, records: list[dict[str, Any]]) -> list[str]:
    r = httpx.post(server.api_url + "/logs/ingest", json=records, timeout=30)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["log_ids"]
    return ids


TRACE_ID = "5b8efff798038103d269b633813fc60c"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = OtelogProcess(tmp_path_factory.mktemp("contract") / "data").start()
    try:
        now_ms = time.time_ns() // 1_000_000
        _post_logs(
            p,
            [
                {
                    "service": svc,
                    "level": level,
                    "message": f"request {i} {level.lower()}",
                    "timestamp": now_ms - i * 1000,
                    "trace_id": TRACE_ID if i % 3 == 0 else None,
                    "host": f"h{i % 2}",
                    "attributes": {"http.status_code": 200 if level != "ERROR" else 500},
                }
                for i, (svc, level) in enumerate(
                    [("auth", "ERROR"), ("auth", "INFO"), ("api", "WARN"), ("api", "ERROR")] * 5
                )
            ],
        )
        yield p
    finally:
        p.stop()


VARIABLES: dict[str, dict[str, Any]] = {"trace.graphql": {"traceId": TRACE_ID}}


def _is_subscription(text: str) -> bool:
    return any(
        isinstance(d, OperationDefinitionNode) and d.operation is OperationType.SUBSCRIPTION
        for d in parse(text).definitions
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_operation_answers(server: OtelogProcess, path: Path) -> None:
    text = path.read_text()
    if _is_subscription(text):
        pytest.skip("subscriptions run over a WebSocket, not a POST")
    data = server.data(text, VARIABLES.get(path.name, {}))
    # every example finds something in the data set above
    assert any(v for v in data.values()), json.dumps(data)[:500]


def test_seed_search_example_finds_the_errors(server: OtelogProcess) -> None:
    data = server.data((CONTRACT / "search.graphql").read_text())
    assert data["logs"]["total"] == 5
    assert {r["service"] for r in data["logs"]["records"]} == {"auth"}


def _nested(depth: int) -> str:
    # `records { records { ... } }` is invalid past one level, but the depth check runs
    # on the document alone, before any field is looked up
    return "{ logs { " + "records { " * depth + "logId" + " }" * depth + " } }"


@pytest.mark.parametrize(
    "query,message",
    [
        ("{ logs(limit: -1) { total } }", "limit must be between 0 and"),
        ("{ logs(limit: 100000) { total } }", "limit must be between 0 and"),
        ('{ logs(query: "level>") { total } }', "query syntax error at position"),
        ('{ logs(since: "yesterday") { total } }', "since"),
        ('{ logs(pageToken: "nope") { total } }', "invalid pageToken"),
        ('{ logHistogram(interval: "0s") { count } }', "interval"),
        ('{ logHistogram(interval: "100ms") { count } }', "minimum of 1s"),
        ('{ logHistogram(since: "7d", interval: "1s") { count } }', "maximum of 10,000"),
        ('{ logHistogram(groupBy: "color") { count } }', "groupBy: unknown field 'color'"),
        ('{ facets(field: "color") { count } }', "field: unknown field 'color'"),
        ('{ facets(field: "level", limit: -1) { count } }', "limit must be between 1 and"),
        ('{ trace(traceId: "xyz") { traceId } }', "traceId must be 32 hex characters"),
        ('{ logs(from: "not a time") { total } }', "DateTime"),
        (_nested(MAX_QUERY_DEPTH + 5), "exceeds maximum operation depth of 12"),
        (_nested(5000), "nested too deeply"),
    ],
    ids=lambda v: v[:60] if isinstance(v, str) else v,
)
def test_bad_arguments_are_graphql_errors_with_a_message(
    server: OtelogProcess, query: str, message: str
) -> None:
    r = httpx.post(server.api_url + "/graphql", json={"query": query}, timeout=30)
    assert r.status_code == 200, r.text
    errors = r.json()["errors"]
    assert any(message in e["message"] for e in errors), errors


def test_a_normal_depth_query_is_not_refused(server: OtelogProcess) -> None:
    data = server.data(
        "query($id: String!) { trace(traceId: $id) { spans { spanId } logs { logId } } }",
        {"id": TRACE_ID},
    )
    assert len(data["trace"]["logs"]) == 7
