"""The benchmark's workload generator (bench/workload.py): deterministic, and its ground truth
matches what it encodes."""

from __future__ import annotations

import importlib.util
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord


def _load_workload() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "workload.py"
    spec = importlib.util.spec_from_file_location("otelog_bench_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


wl = _load_workload()

N = 20_000
BATCH = 512
SEED = 7
START = 1_700_000_000 * 10**9
SPAN = 3600 * 10**9
LEVEL_NUMBERS = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


@dataclass
class Parsed:
    record: LogRecord
    service: str
    host: str
    pod: str
    request: int


def _attrs(kvs: Iterator[KeyValue]) -> dict[str, KeyValue]:
    return {kv.key: kv for kv in kvs}


def _parse(bodies: list[bytes]) -> list[Parsed]:
    out = []
    for i, body in enumerate(bodies):
        req = ExportLogsServiceRequest.FromString(body)
        for rl in req.resource_logs:
            res = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    out.append(
                        Parsed(lr, res["service.name"], res["host.name"], res["k8s.pod.name"], i)
                    )
    return out


@pytest.fixture(scope="module")
def workload() -> tuple[Any, list[bytes]]:
    w = wl.Workload(N, BATCH, SEED, START, SPAN)
    return w, list(w.log_requests())


@pytest.fixture(scope="module")
def bodies(workload: tuple[Any, list[bytes]]) -> list[bytes]:
    return workload[1]


@pytest.fixture(scope="module")
def stats(workload: tuple[Any, list[bytes]]) -> Any:
    return workload[0].stats


@pytest.fixture(scope="module")
def parsed(bodies: list[bytes]) -> list[Parsed]:
    return _parse(bodies)


def test_same_seed_same_bytes(bodies: list[bytes]) -> None:
    again = list(wl.generate_requests(N, BATCH, SEED, START, SPAN))
    assert again == bodies
    other = list(wl.generate_requests(N, BATCH, SEED + 1, START, SPAN))
    assert other != bodies


def test_batches_and_canonical_encoding(bodies: list[bytes], parsed: list[Parsed]) -> None:
    assert len(bodies) == math.ceil(N / BATCH)
    per_request = Counter(p.request for p in parsed)
    assert [per_request[i] for i in range(len(bodies))] == [BATCH] * (N // BATCH) + [N % BATCH]
    # the hand-written encoding is exactly what protobuf itself would produce
    for body in bodies:
        assert ExportLogsServiceRequest.FromString(body).SerializeToString() == body
    # several ResourceLogs per request, one per (service, pod), with one ScopeLogs each
    req = ExportLogsServiceRequest.FromString(bodies[0])
    keys = [
        (a.key, a.value.string_value) for rl in req.resource_logs for a in rl.resource.attributes
    ]
    assert len(req.resource_logs) > 10
    assert len({v for k, v in keys if k == "k8s.pod.name"}) == len(req.resource_logs)
    assert all(len(rl.scope_logs) == 1 for rl in req.resource_logs)


def test_counts_match_ground_truth(parsed: list[Parsed], stats: Any) -> None:
    seen = Counter((p.service, p.record.severity_text) for p in parsed)
    expected = {k: n for k, n in stats.counts.items() if n}
    assert dict(seen) == expected
    assert stats.records == N
    # the helper gives the same truth without encoding, whatever the batch size
    truth = wl.expected_counts(N, 100, SEED)
    assert truth.counts == stats.counts
    assert truth.trace_record_counts() == stats.trace_record_counts()
    assert truth.rare_count == stats.rare_count
    # and the query-shaped helpers agree with the raw counts
    at_least_warn = sum(1 for p in parsed if p.record.severity_number >= 13)
    assert stats.at_least("WARN") == at_least_warn
    checkout_errors = seen[("checkout", "ERROR")]
    assert checkout_errors > 0
    assert stats.count("checkout", ("ERROR",)) == checkout_errors


def test_severity_mix(parsed: list[Parsed]) -> None:
    by_text = Counter(p.record.severity_text for p in parsed)
    for p in parsed:
        assert p.record.severity_number == LEVEL_NUMBERS[p.record.severity_text]
    share = {lv: by_text[lv] / N for lv in LEVEL_NUMBERS}
    assert 0.085 <= share["DEBUG"] <= 0.115
    assert 0.68 <= share["INFO"] <= 0.72
    assert 0.105 <= share["WARN"] <= 0.135
    assert 0.06 <= share["ERROR"] <= 0.08
    assert 0.006 <= share["FATAL"] <= 0.014


def test_rare_keyword_exact() -> None:
    w = wl.Workload(N, BATCH, SEED, START, SPAN, rare_every=1000)
    records = [p.record for p in _parse(list(w.log_requests()))]
    word = re.compile(r"\bzebracorn\b")
    hits = sum(1 for r in records if word.search(r.body.string_value))
    assert hits == w.stats.rare_count == N // 1000
    assert sum(r.body.string_value.count("zebracorn") for r in records) == hits
    # one per started block of 100,000 records, at a seeded position inside it
    assert len(wl.Workload(300_000, seed=SEED).rare_indices()) == 3
    assert len(wl.Workload(100_000, seed=SEED).rare_indices()) == 1
    assert (
        wl.Workload(300_000, seed=SEED).rare_indices()
        == wl.Workload(300_000, seed=SEED).rare_indices()
    )


def test_rare_keyword_default_rate(parsed: list[Parsed], stats: Any) -> None:
    hits = sum(1 for p in parsed if "zebracorn" in p.record.body.string_value)
    assert hits == stats.rare_count <= 1


def test_traces(parsed: list[Parsed], stats: Any) -> None:
    traces = stats.traces
    by_trace = Counter(p.record.trace_id for p in parsed if p.record.trace_id)
    assert {t.hex(): n for t, n in by_trace.items()} == stats.trace_record_counts()
    traced = sum(by_trace.values())
    assert traced == stats.traced_records
    assert 0.77 <= traced / N <= 0.83
    for p in parsed:
        r = p.record
        if r.trace_id:
            assert len(r.trace_id) == 16 and len(r.span_id) == 8 and r.flags == 1
            t = traces[r.trace_id]
            assert r.span_id == t.span_ids[t.services.index(p.service)]
        else:
            assert not r.span_id and r.flags == 0
    complete = [t for t in traces.values() if t.complete]
    assert len(complete) >= len(traces) - wl.ACTIVE_TRACES
    assert all(2 <= t.records <= 20 for t in complete)
    assert all(1 <= t.records <= 20 for t in traces.values())
    assert all(1 <= len(t.services) <= 4 for t in traces.values())
    assert max(len(t.services) for t in traces.values()) == 4
    # records of one trace come from several services
    services_per_trace: dict[bytes, set[str]] = {}
    for p in parsed:
        if p.record.trace_id:
            services_per_trace.setdefault(p.record.trace_id, set()).add(p.service)
    multi = sum(1 for s in services_per_trace.values() if len(s) > 1)
    assert multi > len(traces) // 3


def test_attributes_and_resources(parsed: list[Parsed]) -> None:
    lengths = []
    for p in parsed:
        a = _attrs(iter(p.record.attributes))
        assert 3 <= len(a) <= 6
        assert a["http.method"].value.WhichOneof("value") == "string_value"
        assert a["http.status_code"].value.WhichOneof("value") == "int_value"
        assert re.fullmatch(r"u-\d{7}", a["user.id"].value.string_value)
        if "duration_ms" in a:
            assert a["duration_ms"].value.WhichOneof("value") == "double_value"
        if "region" in a:
            assert a["region"].value.string_value in wl.REGIONS
        assert p.record.body.WhichOneof("value") == "string_value"
        lengths.append(len(p.record.body.string_value))
        assert p.service in wl.SERVICES and p.host in wl.HOSTS and p.pod.startswith(p.service)
    assert 60 <= statistics.median(lengths) <= 120
    assert len({p.service for p in parsed}) == len(wl.SERVICES) == 40
    assert len({p.record.attributes[2].value.string_value for p in parsed}) > N * 0.9
    templates = sum(len(t) for t in wl.TEMPLATES.values())
    assert 55 <= templates <= 65


def test_timestamps(parsed: list[Parsed], bodies: list[bytes]) -> None:
    ts = [p.record.time_unix_nano for p in parsed]
    assert all(START <= t < START + SPAN for t in ts)
    assert all(p.record.observed_time_unix_nano > p.record.time_unix_nano for p in parsed)
    # spread over the whole window, and increasing from request to request
    assert min(ts) - START < SPAN / 100 and START + SPAN - max(ts) < SPAN / 100
    medians = [
        statistics.median(p.record.time_unix_nano for p in parsed if p.request == i)
        for i in range(len(bodies))
    ]
    assert medians == sorted(medians)


def test_spans_match_traces(parsed: list[Parsed], stats: Any) -> None:
    spans = [
        (rs, sp)
        for body in wl.generate_span_requests(N, BATCH, SEED, START, SPAN, spans_per_request=300)
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
    ]
    traces = stats.traces
    assert len(spans) == stats.span_count
    by_id = {(sp.trace_id, sp.span_id): sp for _, sp in spans}
    assert len(by_id) == len(spans)
    assert {sp.trace_id for _, sp in spans} == set(traces)
    roots = Counter(sp.trace_id for _, sp in spans if not sp.parent_span_id)
    assert set(roots.values()) == {1}
    for _, sp in spans:
        assert sp.start_time_unix_nano <= sp.end_time_unix_nano
        if sp.parent_span_id:
            assert (sp.trace_id, sp.parent_span_id) in by_id
    for p in parsed:
        r = p.record
        if r.trace_id:
            sp = by_id[(r.trace_id, r.span_id)]
            assert sp.start_time_unix_nano <= r.time_unix_nano <= sp.end_time_unix_nano
