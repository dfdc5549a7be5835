"""`/metrics` on the API port: names, labels and values of a real scrape, and the
Prometheus rules file written against them."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import OtelogProcess
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from prometheus_client.parser import text_string_to_metric_families

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "otelog-rules.yml"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
LEVELS = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    proc = OtelogProcess(tmp_path_factory.mktemp("metrics") / "data")
    try:
        yield proc.start()
    finally:
        proc.stop()


def logs_request(service: str, levels: dict[str, int], trace_id: bytes = b"") -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.CopyFrom(
        Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    )
    sl = rl.scope_logs.add()
    now = time.time_ns()
    for level, n in levels.items():
        for i in range(n):
            sl.log_records.add(
                time_unix_nano=now,
                severity_number=LEVELS[level],  # type: ignore[arg-type]
                body=AnyValue(string_value=f"{level} {i}"),
                trace_id=trace_id,
                span_id=trace_id[:8],
            )
    return req.SerializeToString()


def scrape(server: OtelogProcess) -> tuple[str, Samples]:
    r = httpx.get(server.api_url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return r.text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def exported_names(text: str) -> set[str]:
    """Every series name a scrape can hold, from the families it declares (a labelled
    metric with no child yet has its # TYPE line but no sample)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
    }
    names = set()
    for fam in text_string_to_metric_families(text):
        for suffix in suffixes.get(fam.type, ("",)):
            names.add(fam.name + suffix)
        names.update(s.name for s in fam.samples)
    return names


def test_ingest_is_counted_per_signal_service_and_level(server: OtelogProcess) -> None:
    service = f"metrics-{uuid.uuid4().hex[:8]}"
    body = logs_request(service, {"DEBUG": 2, "INFO": 3, "ERROR": 1})
    r = httpx.post(
        server.http_url + "/v1/logs",
        content=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    with grpc.insecure_channel(server.grpc_endpoint) as ch:
        ch.unary_unary(LOGS_EXPORT)(logs_request(service, {"WARN": 4}), timeout=10)
    _, s = scrape(server)
    assert value(s, "otelog_received_records_total", signal="logs", service=service) == 10
    received_bytes = value(s, "otelog_received_bytes_total", signal="logs", service=service)
    assert received_bytes is not None and 0 < received_bytes < 2 * len(body) * 10 / 6
    for level, n in (("DEBUG", 2), ("INFO", 3), ("ERROR", 1), ("WARN", 4)):
        got = value(s, "otelog_log_records_accepted_total", service=service, level=level)
        assert got == n, (level, got)
    assert (value(s, "otelog_received_requests_total", signal="logs") or 0) >= 2
    assert (value(s, "otelog_time_to_searchable_seconds_count") or 0) >= 2
    assert (value(s, "otelog_commit_duration_seconds_count") or 0) >= 1


def test_spans_are_counted_per_service(server: OtelogProcess) -> None:
    service = f"spans-{uuid.uuid4().hex[:8]}"
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    now = time.time_ns()
    for i in range(3):
        rs.scope_spans.add().spans.add(
            trace_id=uuid.uuid4().bytes,
            span_id=i.to_bytes(8, "big"),
            name="op",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )
    r = httpx.post(
        server.http_url + "/v1/traces",
        content=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    _, s = scrape(server)
    assert value(s, "otelog_received_records_total", signal="traces", service=service) == 3
    assert value(s, "otelog_spans_accepted_total", service=service) == 3


def test_rejected_and_refused_requests_are_counted_by_reason(server: OtelogProcess) -> None:
    _, before = scrape(server)
    service = f"bad-{uuid.uuid4().hex[:8]}"
    req = ExportLogsServiceRequest.FromString(logs_request(service, {"INFO": 2}))
    req.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano = 1  # 1970: rejected
    r = httpx.post(
        server.http_url + "/v1/logs",
        content=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200  # partial success
    r = httpx.post(
        server.http_url + "/v1/logs",
        content=b"\xff\xff not protobuf",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 400
    _, after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("otelog_records_rejected_total", signal="logs", reason="invalid") == 1
    assert delta("otelog_requests_refused_total", signal="logs", reason="invalid") == 1
    assert value(after, "otelog_log_records_accepted_total", service=service, level="INFO") == 1


def test_queue_storage_latency_and_process_metrics_are_exported(server: OtelogProcess) -> None:
    server.data('{ logs(query: "level=ERROR", limit: 1) { total } }')
    server.data('{ trace(traceId: "0123456789abcdef0123456789abcdef") { traceId } }')
    _, s = scrape(server)
    for name in (
        "otelog_ingest_queue_bytes",
        "otelog_ingest_queue_requests",
        "otelog_ingest_inflight_bytes",
        "otelog_ingest_pressure",
        "otelog_unsealed_records",
        "otelog_unsealed_bytes",
        "otelog_tail_subscribers",
        "otelog_data_dir_capacity_bytes",
        "otelog_data_dir_free_bytes",
        "process_resident_memory_bytes",
    ):
        assert value(s, name) is not None, name
    assert value(s, "otelog_ingest_limit_bytes") == 256 << 20
    for cf in ("cols", "meta", "post", "spans", "wal"):
        assert value(s, "otelog_storage_bytes", column_family=cf) is not None, cf
    for kind in ("logs", "trace"):
        assert (value(s, "otelog_query_duration_seconds_count", query=kind) or 0) >= 1, kind
    assert value(s, "otelog_query_duration_seconds_bucket", query="logs", le="+Inf") is not None


def test_health_and_readiness(server: OtelogProcess) -> None:
    assert httpx.get(server.api_url + "/healthz").text == "ok"
    r = httpx.get(server.api_url + "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


# ---- the rules file


def rules() -> list[dict[str, object]]:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_file_has_the_seed_alerts_each_complete() -> None:
    alerts = {str(r["alert"]): r for r in rules()}
    assert set(alerts) == {
        "HighIngestionLag",
        "LogDropped",
        "SearchLatencySlow",
        "StorageUsageHigh",
        "ErrorRateSpike",
        "DeletionRequestOverdue",
        "ColdTieringFailing",
    }
    for name, rule in alerts.items():
        assert str(rule["expr"]).strip(), name
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name  # type: ignore[index]
        assert rule["annotations"]["summary"], name  # type: ignore[index]


def test_every_metric_the_rules_use_is_in_a_scrape(server: OtelogProcess) -> None:
    text, _ = scrape(server)
    names = exported_names(text)
    metric = re.compile(r"\b(?:otelog|process)_[a-z_]+\b")
    used = {n for r in rules() for n in metric.findall(str(r["expr"]))}
    assert used, "no metric names found in the rules"
    assert sorted(used - names) == []
