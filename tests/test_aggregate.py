"""Histograms and facets equal the counts computed here from the generated records.

Store level (no server): a real RocksDB store in tmp_path holding three sealed segments
and a fresh part. The first segment is big enough that the high-cardinality `user.id`
attribute gets no postings there (its values are then read from the records), the
others index it, so every counting path runs. Server level: the same kind of data sent
over OTLP/gRPC to a real server in waves that seal into several segments plus a fresh
tail, and asked over GraphQL.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import OtelogProcess
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from otlp_values import key_values

from otelog.errors import InvalidArgument, QuerySyntaxError
from otelog.ingest.writer import Writer
from otelog.query import aggregate
from otelog.query.aggregate import FacetRequest, HistogramRequest
from otelog.query.service import QueryService
from otelog.receiver.decode import decode_logs
from otelog.store.store import Store

TENANT = "default"
S = 1_000_000_000
MIN = 60 * S
H = 3600 * S
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

# (service, host, cloud.region); "" host: no host.name, None region: no cloud.region
RESOURCES: tuple[tuple[str, str, str | None], ...] = (
    ("auth", "h1", "eu-west-1"),
    ("auth", "h2", "us-east-1"),
    ("api", "h1", "us-east-1"),
    ("api", "", "eu-west-1"),
    ("billing", "h3", None),
)
LEVEL_NAMES = ("UNSPECIFIED", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
SEVERITY = (0, 1, 5, 9, 13, 17, 21)
BODIES = ("login ok", "payment failed", "cart updated", "timeout talking to db")
# chunks: three sealed segments (the first over the 1000-distinct-values budget for
# user.id) and the fresh rest
SIZES = (1500, 300, 250, 200)

Scalar = str | int | float | bool


@dataclass
class Rec:
    idx: int
    ts: int
    level: int
    res: int
    body: str
    attrs: dict[str, Any]

    @property
    def service(self) -> str:
        return RESOURCES[self.res][0]

    @property
    def host(self) -> str:
        return RESOURCES[self.res][1]

    def value(self, field: str) -> str | None:
        """The reference value of a field, spelled as otelog shows attribute values."""
        if field == "level":
            return LEVEL_NAMES[self.level]
        if field == "service":
            return self.service
        if field == "host":
            return self.host or None
        if field == "resource.cloud.region":
            return RESOURCES[self.res][2]
        assert field.startswith("attributes.")
        v = flatten(self.attrs).get(field[len("attributes.") :])
        return None if v is None else text_of(v)


def flatten(attrs: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for k, v in attrs.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def text_of(v: Scalar) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


def make_records(n: int, seed: int, now_ns: int) -> list[Rec]:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        ts = now_ns - rng.randrange(2 * MIN, 3 * H)
        if rng.random() < 0.05:
            ts = ts // MIN * MIN  # exactly on a bucket boundary
        attrs: dict[str, Any] = {"user.id": rng.randrange(5000)}
        r = rng.random()
        if r < 0.5:
            attrs["http.status_code"] = rng.choice((200, 200, 404, 500))
        elif r < 0.6:
            attrs["http.status_code"] = rng.choice(("500", "404"))  # same text as the ints
        elif r < 0.7:
            attrs["http.status_code"] = 500.0  # also "500"
        if rng.random() < 0.6:
            attrs["http"] = {"route": rng.choice(("/login", "/pay", "/cart"))}
        if rng.random() < 0.9:
            # nested and over the postings budget in the big segment: read from records
            attrs["req"] = {"id": rng.randrange(3000), "kind": "x"}
        if rng.random() < 0.3:
            attrs["ok"] = rng.random() < 0.5
        if rng.random() < 0.3:
            attrs["ratio"] = rng.choice((0.5, 1.0, 2.25))
        recs.append(
            Rec(
                idx=i,
                ts=ts,
                level=rng.choices(range(7), weights=(3, 5, 10, 50, 15, 12, 5))[0],
                res=rng.choices(range(len(RESOURCES)), weights=(30, 20, 25, 15, 10))[0],
                body=f"#{i} {rng.choice(BODIES)}",
                attrs=attrs,
            )
        )
    return recs


def resource(res: int) -> Resource:
    service, host, region = RESOURCES[res]
    attrs: dict[str, Any] = {"service.name": service}
    if host:
        attrs["host.name"] = host
    if region is not None:
        attrs["cloud.region"] = region
    return Resource(attributes=key_values(attrs))


def logs_request(recs: list[Rec]) -> bytes:
    by_res: dict[int, list[Rec]] = {}
    for r in recs:
        by_res.setdefault(r.res, []).append(r)
    req = ExportLogsServiceRequest()
    for res, rs in by_res.items():
        records = [
            LogRecord(
                time_unix_nano=r.ts,
                severity_number=SEVERITY[r.level],  # type: ignore[arg-type]
                severity_text=LEVEL_NAMES[r.level] if r.level else "",
                body=AnyValue(string_value=r.body),
                attributes=key_values(r.attrs),
            )
            for r in rs
        ]
        req.resource_logs.append(
            ResourceLogs(
                resource=resource(res),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name="t"), log_records=records)],
            )
        )
    return req.SerializeToString()


def chunks(recs: list[Rec], sizes: tuple[int, ...], rng: random.Random) -> list[list[Rec]]:
    """The records dealt into chunks of `sizes`, each spanning the whole time range."""
    shuffled = recs[:]
    rng.shuffle(shuffled)
    out, i = [], 0
    for n in sizes:
        out.append(shuffled[i : i + n])
        i += n
    return out


# ---- the reference

Pred = Callable[[Rec], bool]

QUERIES: dict[str, Pred] = {
    "": lambda r: True,
    "service=auth": lambda r: r.service == "auth",
    "level>=WARN": lambda r: r.level >= 4,
    "attributes.http.status_code=500": lambda r: r.value("attributes.http.status_code") == "500",
    "payment OR timeout": lambda r: "payment" in r.body or "timeout" in r.body,
    # user.id has no postings in the big segment: rows are checked one by one there
    "NOT host=h1 AND attributes.user.id<2500": lambda r: (
        r.host != "h1" and int(r.attrs["user.id"]) < 2500
    ),
}
GROUPS = (
    None,
    "level",
    "service",
    "host",
    "resource.cloud.region",
    "attributes.http.status_code",
    "attributes.http.route",
    "attributes.user.id",
    "attributes.req.id",
    "attributes.ok",
    "attributes.ratio",
)
FACET_FIELDS = tuple(g for g in GROUPS if g is not None)


def ref_histogram(
    recs: list[Rec], pred: Pred, interval_ns: int, group: str | None, start: int, end: int
) -> list[tuple[int, str | None, int]]:
    counts: Counter[tuple[int, str | None]] = Counter()
    for r in recs:
        if start <= r.ts < end and pred(r):
            counts[(r.ts // interval_ns * interval_ns, r.value(group) if group else None)] += 1
    rows = [(s, g, n) for (s, g), n in counts.items()]
    rows.sort(key=lambda x: (x[0], x[1] is not None, x[1] or ""))
    return rows


def ref_facets(
    recs: list[Rec], pred: Pred, field: str, limit: int, start: int = 0, end: int = 2**63
) -> list[tuple[str, int]]:
    counts = Counter(
        v for r in recs if start <= r.ts < end and pred(r) and (v := r.value(field)) is not None
    )
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def points(qs: QueryService, req: HistogramRequest, now: int) -> list[tuple[int, str | None, int]]:
    return [(p.start_ns, p.group, p.count) for p in aggregate.histogram(qs, req, now_ns=now)]


def facet_pairs(qs: QueryService, req: FacetRequest, now: int) -> list[tuple[str, int]]:
    return [(f.value, f.count) for f in aggregate.facets(qs, req, now_ns=now)]


# ---- store level


@dataclass
class Env:
    store: Store
    writer: Writer
    qs: QueryService
    recs: list[Rec]
    now: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    now = time.time_ns()
    recs = make_records(sum(SIZES), seed=7, now_ns=now)
    store = Store(str(tmp_path_factory.mktemp("agg") / "db"))
    writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    try:
        rng = random.Random(8)
        parts = chunks(recs, SIZES, rng)
        for c, part in enumerate(parts):
            for i in range(0, len(part), 100):
                raw = logs_request(part[i : i + 100])
                receipt = time.time_ns()
                batch, decoded = decode_logs(raw, receipt)
                assert decoded.rejected == 0, decoded.message
                writer.submit_logs(TENANT, batch, raw, receipt).result(timeout=60)
            if c < len(parts) - 1:
                assert store.seal() == len(part)
        yield Env(store, writer, QueryService(store), recs, now)
    finally:
        writer.stop()
        store.close()


def test_data_set_layout(env: Env) -> None:
    """The premise: three sealed segments, user.id indexed in all but the big one, and a
    fresh part."""
    snap = env.store.snapshot(TENANT)
    segs = sorted(snap.segments, key=lambda s: s.meta.id)
    assert [s.meta.rows for s in segs] == list(SIZES[:3])
    assert ["a:user.id" in s.unindexed for s in segs] == [True, False, False]
    assert ["a:req.id" in s.unindexed for s in segs] == [True, False, False]
    assert sum(len(b) for b in snap.fresh) == SIZES[3]


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("query", list(QUERIES))
def test_histogram_counts_match_the_records(env: Env, query: str, group: str | None) -> None:
    req = HistogramRequest(query=query, since="4h", interval="1m", group_by=group)
    want = ref_histogram(env.recs, QUERIES[query], MIN, group, 0, 2**63)
    assert points(env.qs, req, env.now) == want


@pytest.mark.parametrize("interval,ns", [("1s", S), ("90s", 90 * S), ("7m", 7 * MIN), ("1h", H)])
@pytest.mark.parametrize("group", [None, "service", "attributes.http.route"])
def test_histogram_buckets_are_aligned_multiples_of_the_interval(
    env: Env, interval: str, ns: int, group: str | None
) -> None:
    # 1s over the 3h of data would exceed the bucket limit: narrow the range to 2h
    start = env.now - 2 * H
    req = HistogramRequest(start_ns=start, end_ns=env.now, interval=interval, group_by=group)
    got = points(env.qs, req, env.now)
    assert got == ref_histogram(env.recs, QUERIES[""], ns, group, start, env.now)
    assert all(s % ns == 0 for s, _g, _n in got)


def test_histogram_with_an_absolute_window(env: Env) -> None:
    start, end = env.now - 2 * H, env.now - 30 * MIN
    req = HistogramRequest(query="level>=WARN", start_ns=start, end_ns=end, group_by="level")
    want = ref_histogram(env.recs, QUERIES["level>=WARN"], MIN, "level", start, end)
    assert want and points(env.qs, req, env.now) == want


def test_histogram_of_nothing_is_empty(env: Env) -> None:
    assert points(env.qs, HistogramRequest(query="service=nosuch"), env.now) == []


def test_histogram_total_equals_the_search_total(env: Env) -> None:
    from otelog.query.service import PageRequest

    for query in QUERIES:
        total = env.qs.logs(PageRequest(query=query, limit=0)).total
        got = sum(n for _s, _g, n in points(env.qs, HistogramRequest(query=query), env.now))
        assert got == total, query


@pytest.mark.parametrize("field", FACET_FIELDS)
@pytest.mark.parametrize("query", list(QUERIES))
def test_facets_match_the_records(env: Env, query: str, field: str) -> None:
    for limit in (3, 1000):
        req = FacetRequest(field=field, query=query, since="4h", limit=limit)
        assert facet_pairs(env.qs, req, env.now) == ref_facets(
            env.recs, QUERIES[query], field, limit
        )


def test_facets_in_a_window(env: Env) -> None:
    start, end = env.now - 90 * MIN, env.now - 20 * MIN
    req = FacetRequest(field="attributes.user.id", start_ns=start, end_ns=end, limit=20)
    want = ref_facets(env.recs, QUERIES[""], "attributes.user.id", 20, start, end)
    assert facet_pairs(env.qs, req, env.now) == want


def test_field_aliases(env: Env) -> None:
    def facet(field: str) -> list[tuple[str, int]]:
        return facet_pairs(env.qs, FacetRequest(field=field), env.now)

    assert facet("severity") == facet("level")
    assert facet("attr.http.route") == facet("attributes.http.route")
    assert facet("res.cloud.region") == facet("resource.cloud.region")


@pytest.mark.parametrize(
    "req,message",
    [
        (HistogramRequest(interval="0s"), "interval"),
        (HistogramRequest(interval="500ms"), "shorter than the minimum of 1s"),
        (HistogramRequest(interval="soon"), "interval"),
        (HistogramRequest(interval="1s"), "more than the maximum of 10,000"),
        (HistogramRequest(since="30d", interval="1m"), "more than the maximum of 10,000"),
        (HistogramRequest(group_by="bogus"), "groupBy: unknown field 'bogus'"),
        (HistogramRequest(group_by="attributes."), "groupBy: unknown field"),
        (HistogramRequest(since="forever"), "since"),
    ],
)
def test_bad_histogram_arguments_are_refused(env: Env, req: HistogramRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        aggregate.histogram(env.qs, req, now_ns=env.now)


@pytest.mark.parametrize(
    "req,message",
    [
        (FacetRequest(field="level", limit=0), "limit must be between 1 and 1000"),
        (FacetRequest(field="level", limit=-5), "limit must be between 1 and 1000"),
        (FacetRequest(field="level", limit=1001), "limit must be between 1 and 1000"),
        (FacetRequest(field="body"), "field: unknown field 'body'"),
    ],
)
def test_bad_facet_arguments_are_refused(env: Env, req: FacetRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        aggregate.facets(env.qs, req, now_ns=env.now)


def test_a_bad_query_is_a_syntax_error(env: Env) -> None:
    with pytest.raises(QuerySyntaxError):
        aggregate.histogram(env.qs, HistogramRequest(query="service=("), now_ns=env.now)
    with pytest.raises(QuerySyntaxError):
        aggregate.facets(env.qs, FacetRequest(field="level", query="(a"), now_ns=env.now)


# ---- server level

HISTOGRAM = """query($q: String!, $since: String, $interval: String!, $groupBy: String) {
  logHistogram(query: $q, since: $since, interval: $interval, groupBy: $groupBy) {
    start count group
  }
}"""
FACETS = """query($q: String!, $field: String!, $limit: Int) {
  facets(query: $q, since: "4h", field: $field, limit: $limit) { value count }
}"""
SERVER_SIZES = (600, 600, 600, 230)  # three waves that seal (--seal-rows 600), a fresh tail


@dataclass
class Served:
    server: OtelogProcess
    recs: list[Rec]


def send(server: OtelogProcess, recs: list[Rec], per_request: int = 100) -> None:
    """Over OTLP/gRPC with a raw stub: the request bytes go out exactly as built."""
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        export = channel.unary_unary(
            LOGS_EXPORT,
            request_serializer=None,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        for i in range(0, len(recs), per_request):
            resp = export(logs_request(recs[i : i + per_request]), timeout=30)
            assert resp.partial_success.rejected_log_records == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = Path(tmp_path_factory.mktemp("agg-server")) / "data"
    # seal by size (each wave), not by age: the last wave stays fresh for the test
    server = OtelogProcess(
        data, extra_args=["--seal-interval-seconds", "120", "--seal-rows", "600"]
    ).start()
    try:
        now = time.time_ns()
        recs = make_records(sum(SERVER_SIZES), seed=11, now_ns=now)
        for wave in chunks(recs, SERVER_SIZES, random.Random(12)):
            send(server, wave)
            time.sleep(0.3)  # the sealer polls every 50 ms
        yield Served(server, recs)
    finally:
        server.stop()


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * S


@pytest.mark.parametrize("group", [None, "level", "service", "attributes.http.status_code"])
@pytest.mark.parametrize("query", ["", "service=auth", "level>=WARN"])
def test_server_histogram_matches_the_records(
    served: Served, query: str, group: str | None
) -> None:
    data = served.server.data(
        HISTOGRAM, {"q": query, "since": "4h", "interval": "5m", "groupBy": group}
    )
    got = [(_ns(b["start"]), b["group"], b["count"]) for b in data["logHistogram"]]
    assert got == ref_histogram(served.recs, QUERIES[query], 5 * MIN, group, 0, 2**63)


@pytest.mark.parametrize(
    "field", ["service", "level", "host", "attributes.http.route", "attributes.user.id"]
)
@pytest.mark.parametrize("query", ["", "level>=WARN"])
def test_server_facets_match_the_records(served: Served, query: str, field: str) -> None:
    data = served.server.data(FACETS, {"q": query, "field": field, "limit": 7})
    got = [(f["value"], f["count"]) for f in data["facets"]]
    assert got == ref_facets(served.recs, QUERIES[query], field, 7)


def test_server_refuses_bad_aggregations_with_messages(served: Served) -> None:
    for variables, message in (
        ({"q": "", "interval": "0s"}, "interval"),
        ({"q": "", "interval": "1m", "groupBy": "nosuch"}, "groupBy: unknown field"),
        ({"q": "level>", "interval": "1m"}, "query syntax error"),
    ):
        body = served.server.graphql(HISTOGRAM, variables)
        assert body["data"] is None
        assert message in body["errors"][0]["message"], body
