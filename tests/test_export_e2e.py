"""Export jobs end to end: a real `otelog serve`, records sent by the real OpenTelemetry SDK,
exports written to a real S3 server (seaweedfs `weed mini`) and to local files, read back
with the minio client and each format's own reader, and compared with what the `logs`
search (GraphQL and REST) answers for the same query.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import OtelogProcess
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from s3server import ACCESS_KEY, SECRET_KEY, S3Server

BUCKET = "exports"
SERVICES = ("billing", "catalog", "gateway")
PER_SERVICE = 1200
QUERY = "service=billing OR level>=ERROR"
LOG_FIELDS = "logId timestampUnixNano service level body traceId spanId host attributes resource"
JOB_FIELDS = "id query format destination state total written bytes progress startedAt "
JOB_FIELDS += "finishedAt error location"
BULK = 40_000  # records of one service, for exports long enough to cancel
BULK_BODY = 900  # bytes of each bulk body: the CSV spans several 8 MiB parts


def s3_args(s3: S3Server) -> list[str]:
    return [
        "--s3-endpoint",
        s3.endpoint,
        "--s3-access-key",
        ACCESS_KEY,
        "--s3-secret-key",
        SECRET_KEY,
    ]


def send_with_sdk(server: OtelogProcess) -> int:
    """PER_SERVICE records per service through LoggingHandler -> BatchLogRecordProcessor ->
    OTLP/gRPC; one in four inside a span (trace and span ids), bodies CSV must quote."""
    tracer = TracerProvider().get_tracer("export-e2e")
    sent = 0
    for s, service in enumerate(SERVICES):
        provider = LoggerProvider(
            resource=Resource.create({"service.name": service, "host.name": f"node-{s}"})
        )
        provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=server.grpc_endpoint, insecure=True),
                max_export_batch_size=512,
            )
        )
        logger = logging.getLogger(f"export-e2e-{service}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
        logger.addHandler(handler)
        levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
        try:
            for i in range(PER_SERVICE):
                extra = {"order.id": i, "amount": i / 4, "vip": i % 3 == 0, "region": "eu-west"}
                body = f'order {i}, "{service}" step\n{i % 7} ✓'
                if i % 4 == 0:
                    with tracer.start_as_current_span("handle"):
                        logger.log(levels[i % 5], body, extra=extra)
                else:
                    logger.log(levels[i % 5], body, extra=extra)
                sent += 1
            assert provider.force_flush(30_000)
        finally:
            logger.removeHandler(handler)
            provider.shutdown()
    return sent


def send_bulk(server: OtelogProcess, service: str, n: int) -> None:
    """n records of one service over OTLP/HTTP protobuf, in requests of 2,000."""
    pad = "x" * BULK_BODY
    now = time.time_ns()
    for start in range(0, n, 2000):
        recs = [
            LogRecord(
                time_unix_nano=now - (n - i) * 1000,
                severity_number=9,  # type: ignore[arg-type]
                body=AnyValue(string_value=f"bulk {i} {pad}"),
                attributes=[KeyValue(key="i", value=AnyValue(int_value=i))],
            )
            for i in range(start, min(n, start + 2000))
        ]
        req = ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=ResourcePb(
                        attributes=[
                            KeyValue(key="service.name", value=AnyValue(string_value=service))
                        ]
                    ),
                    scope_logs=[ScopeLogs(log_records=recs)],
                )
            ]
        )
        r = httpx.post(
            server.http_url + "/v1/logs",
            content=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=60,
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[OtelogProcess]:
    # local exports go to the tests' own folders, all under the session's base folder
    root = str(tmp_path_factory.getbasetemp())
    p = OtelogProcess(
        tmp_path_factory.mktemp("export-e2e") / "data",
        extra_args=[*s3_args(s3_server), "--export-dir", root],
    )
    p.start()
    try:
        assert send_with_sdk(p) == len(SERVICES) * PER_SERVICE
        send_bulk(p, "bulk", BULK)
        yield p
    finally:
        p.stop()


def all_logs(server: OtelogProcess, query: str) -> list[dict[str, Any]]:
    """Every match of `query` through the GraphQL search, oldest first."""
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = server.data(
            "query($q: String!, $t: String) { logs(query: $q, limit: 1000, pageToken: $t) {"
            f" total nextPageToken records {{ {LOG_FIELDS} }} }} }}",
            {"q": query, "t": token},
        )["logs"]
        out += page["records"]
        token = page["nextPageToken"]
        if token is None:
            break
    return out[::-1]


def rest_search(server: OtelogProcess, query: str) -> list[dict[str, Any]]:
    """Every match through REST /logs/search, oldest first (its records are log_json)."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"query": query, "limit": 1000}
    while True:
        r = httpx.get(server.api_url + "/logs/search", params=params, timeout=30)
        assert r.status_code == 200, r.text
        out += r.json()["logs"]
        if not r.json()["next_page_token"]:
            break
        params["page_token"] = r.json()["next_page_token"]
    return out[::-1]


def start_export(server: OtelogProcess, query: str, fmt: str, destination: str) -> dict[str, Any]:
    job: dict[str, Any] = server.data(
        "mutation($q: String!, $f: ExportFormat!, $d: String!) {"
        f" startExport(query: $q, format: $f, destination: $d) {{ {JOB_FIELDS} }} }}",
        {"q": query, "f": fmt, "d": destination},
    )["startExport"]
    return job


def export_job(server: OtelogProcess, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] | None = server.data(
        f"query($id: ID!) {{ exportJob(id: $id) {{ {JOB_FIELDS} }} }}", {"id": job_id}
    )["exportJob"]
    return job


def wait_done(server: OtelogProcess, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = export_job(server, job_id)
        assert job is not None
        if job["state"] != "RUNNING":
            return job
        time.sleep(0.05)
    raise AssertionError(f"export {job_id} still running after {timeout} s")


def table_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The search's records in the export's flat shape (attributes/resource as objects)."""
    return [
        {
            "log_id": r["logId"],
            "ts": int(r["timestampUnixNano"]),
            "service": r["service"],
            "level": r["level"],
            "host": r["host"] or "",
            "trace_id": r["traceId"] or "",
            "span_id": r["spanId"] or "",
            "message": r["body"],
            "attributes": r["attributes"],
            "resource": r["resource"],
        }
        for r in records
    ]


def ns_of(rfc3339: str) -> int:
    base, frac = rfc3339.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac)


def parse_export(fmt: str, data: bytes) -> list[dict[str, Any]]:
    if fmt == "CSV":
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
        return [
            {
                **{k: v for k, v in r.items() if k != "timestamp"},
                "ts": ns_of(r["timestamp"]),
                "attributes": json.loads(r["attributes"]),
                "resource": json.loads(r["resource"]),
            }
            for r in rows
        ]
    if fmt == "PARQUET":
        table = pq.read_table(io.BytesIO(data))
        ts = table.column("timestamp").cast("int64").to_pylist()
        cols = table.drop_columns(["timestamp"]).to_pylist()
        return [
            {
                **{k: (v if v is not None else "") for k, v in c.items()},
                "ts": t,
                "attributes": json.loads(c["attributes"]),
                "resource": json.loads(c["resource"]),
            }
            for c, t in zip(cols, ts, strict=True)
        ]
    raise AssertionError(fmt)


def get_object(s3: S3Server, location: str) -> bytes:
    assert location.startswith(f"s3://{BUCKET}/")
    resp = s3.client().get_object(BUCKET, location[len(f"s3://{BUCKET}/") :])
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def objects_under(s3: S3Server, prefix: str) -> list[str]:
    return [str(o.object_name) for o in s3.client().list_objects(BUCKET, prefix, recursive=True)]


# ---- what an export holds


@pytest.mark.parametrize("fmt", ["CSV", "PARQUET"])
def test_s3_export_holds_exactly_the_search_results(
    server: OtelogProcess, s3_server: S3Server, fmt: str
) -> None:
    prefix = f"e2e/{fmt.lower()}-{uuid.uuid4().hex[:6]}"
    started = start_export(server, QUERY, fmt, f"s3://{BUCKET}/{prefix}")
    assert started["state"] == "RUNNING"
    key = f"{prefix}/{started['id']}.{fmt.lower()}"
    assert started["location"] == f"s3://{BUCKET}/{key}"
    job = wait_done(server, started["id"])
    assert job["state"] == "SUCCEEDED", job["error"]
    data = get_object(s3_server, job["location"])
    got = parse_export(fmt, data)
    want = table_of(all_logs(server, QUERY))
    assert len(want) > PER_SERVICE  # billing, and the errors of the others
    assert [g["log_id"] for g in got] == [w["log_id"] for w in want]
    assert got == want
    assert job["total"] == job["written"] == len(want)
    assert job["bytes"] == len(data)
    assert job["progress"] == 1.0 and job["finishedAt"] is not None
    assert objects_under(s3_server, prefix) == [key]


def test_s3_jsonl_export_is_the_rest_search_line_by_line(
    server: OtelogProcess, s3_server: S3Server
) -> None:
    r = httpx.post(
        server.api_url + "/logs/export",
        json={"query": QUERY, "format": "jsonl", "destination": f"s3://{BUCKET}/e2e/jsonl/"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "RUNNING"
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while (job := httpx.get(f"{server.api_url}/logs/export/{job_id}").json())["status"] == (
        "RUNNING"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "SUCCEEDED", job
    assert job["location"] == f"s3://{BUCKET}/e2e/jsonl/{job_id}.jsonl"
    lines = get_object(s3_server, job["location"]).decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rest_search(server, QUERY)
    assert job["total"] == job["written"] == len(lines)


def test_local_export_is_written_whole_and_named_for_the_job(
    server: OtelogProcess, tmp_path: Path
) -> None:
    job = start_export(server, "level=WARN AND attributes.region=eu-west", "CSV", str(tmp_path))
    done = wait_done(server, job["id"])
    assert done["state"] == "SUCCEEDED", done["error"]
    path = tmp_path / f"{job['id']}.csv"
    assert done["location"] == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    got = parse_export("CSV", path.read_bytes())
    assert got == table_of(all_logs(server, "level=WARN AND attributes.region=eu-west"))
    assert {g["level"] for g in got} == {"WARN"} and len(got) == len(SERVICES) * PER_SERVICE // 5
    assert done["bytes"] == path.stat().st_size


def test_export_jobs_lists_them_newest_first(server: OtelogProcess, tmp_path: Path) -> None:
    a = wait_done(server, start_export(server, "service=catalog", "JSONL", str(tmp_path))["id"])
    b = wait_done(server, start_export(server, "service=gateway", "JSONL", str(tmp_path))["id"])
    ids = [j["id"] for j in server.data("{ exportJobs { id } }")["exportJobs"]]
    assert ids.index(b["id"]) < ids.index(a["id"])
    rest_ids = [j["job_id"] for j in httpx.get(server.api_url + "/logs/export").json()["exports"]]
    assert rest_ids == ids
    done = server.data("{ exportJobs(state: SUCCEEDED) { state } }")["exportJobs"]
    assert {j["state"] for j in done} == {"SUCCEEDED"}


# ---- cancel


def wait_bytes(server: OtelogProcess, job_id: str, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = export_job(server, job_id)
        assert job is not None
        if job["state"] != "RUNNING" or job["bytes"] >= at_least:
            return job
        time.sleep(0.01)
    raise AssertionError("the export did not progress")


def test_rest_cancel_of_an_s3_export_leaves_no_object(
    server: OtelogProcess, s3_server: S3Server
) -> None:
    prefix = f"e2e/cancel-{uuid.uuid4().hex[:6]}/"
    r = httpx.post(
        server.api_url + "/logs/export",
        json={"query": "service=bulk", "format": "CSV", "destination": f"s3://{BUCKET}/{prefix}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    # past the first 8 MiB part: the multipart upload has begun
    running = wait_bytes(server, job_id, 9 << 20)
    assert running["state"] == "RUNNING", running
    r = httpx.delete(f"{server.api_url}/logs/export/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "CANCELLED", job
    assert job["location"] is None and job["error"] is None
    assert 0 < job["written"] < job["total"] == BULK
    assert objects_under(s3_server, prefix) == []
    assert export_job(server, job_id)["state"] == "CANCELLED"  # type: ignore[index]
    # cancelling again answers the job as it is
    assert httpx.delete(f"{server.api_url}/logs/export/{job_id}").json()["status"] == "CANCELLED"


def test_graphql_cancel_of_a_local_export_removes_the_partial_file(
    server: OtelogProcess, tmp_path: Path
) -> None:
    job = start_export(server, "service=bulk", "JSONL", str(tmp_path))
    assert wait_bytes(server, job["id"], 1 << 20)["state"] == "RUNNING"
    cancelled = server.data(
        "mutation($id: ID!) { cancelExport(id: $id) { state written total location } }",
        {"id": job["id"]},
    )["cancelExport"]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["written"] < cancelled["total"] and cancelled["location"] is None
    assert list(tmp_path.iterdir()) == []


# ---- bad requests


@pytest.mark.parametrize("query", ["level>", "service=(auth", 'a AND "open'])
def test_a_bad_query_is_the_same_error_as_the_search(server: OtelogProcess, query: str) -> None:
    body = server.graphql(
        'mutation($q: String!) { startExport(query: $q, format: CSV, destination: "/tmp") { id } }',
        {"q": query},
    )
    search = server.graphql("query($q: String!) { logs(query: $q) { total } }", {"q": query})
    (err,) = body["errors"]
    assert err["message"] == search["errors"][0]["message"]
    assert err["extensions"]["code"] == "QUERY_SYNTAX"
    assert err["extensions"]["position"] == search["errors"][0]["extensions"]["position"]
    r = httpx.post(
        server.api_url + "/logs/export",
        json={"query": query, "format": "csv", "destination": "/tmp"},
    )
    assert r.status_code == 400
    assert r.json()["error"] == f"query: {err['message']}"
    assert r.json()["position"] == err["extensions"]["position"]


@pytest.mark.parametrize(
    "body,message",
    [
        ({"format": "xlsx", "destination": "/tmp"}, "format: unknown format 'xlsx'"),
        ({"format": "csv"}, "destination: required"),
        ({"format": "csv", "destination": "out/x.csv"}, "no such directory"),
        ({"format": "csv", "destination": "/nonexistent/dir/x.csv"}, "outside the export dir"),
        ({"format": "csv", "destination": "../../../etc/x.csv"}, "outside the export dir"),
        ({"format": "csv", "destination": "/etc/cron.d/x"}, "outside the export dir"),
        ({"format": "csv", "destination": "/tmp", "since": "later"}, "since"),
        ({"format": "csv", "destination": "/tmp", "from": "yesterday"}, "from: not an RFC 3339"),
        ({"format": "csv", "destination": "/tmp", "color": "red"}, "color: unknown field"),
        ([1, 2], "body: expected a JSON object"),
    ],
)
def test_bad_rest_requests_are_400_naming_the_field(
    server: OtelogProcess, body: Any, message: str
) -> None:
    r = httpx.post(server.api_url + "/logs/export", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_bad_graphql_destination_is_a_graphql_error(server: OtelogProcess) -> None:
    body = server.graphql(
        'mutation { startExport(query: "", format: CSV, destination: "/tmp/../etc/x") { id } }'
    )
    (err,) = body["errors"]
    assert "outside the export directory" in err["message"]
    assert err["extensions"]["code"] == "BAD_ARGUMENT"


def test_unknown_jobs_are_404_and_null(server: OtelogProcess) -> None:
    assert httpx.get(server.api_url + "/logs/export/nope").status_code == 404
    assert httpx.delete(server.api_url + "/logs/export/nope").status_code == 404
    assert export_job(server, "nope") is None
    body = server.graphql('mutation { cancelExport(id: "nope") { id } }')
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_s3_destinations_need_an_endpoint(otelog_factory: Any) -> None:
    plain: OtelogProcess = otelog_factory()
    r = httpx.post(
        plain.api_url + "/logs/export",
        json={"format": "csv", "destination": "s3://exports/x/"},
    )
    assert r.status_code == 400
    assert "--s3-endpoint" in r.json()["error"]


# ---- S3 down


def test_s3_outage_fails_the_job_clearly_and_the_server_stays_healthy(
    otelog_factory: Any, tmp_path: Path
) -> None:
    s3 = S3Server(tmp_path / "s3").start()
    try:
        srv: OtelogProcess = otelog_factory(
            tmp_path / "data", s3_args(s3) + ["--s3-timeout-seconds", "2"]
        )
        send_bulk(srv, "outage", 3000)
        s3.stop()
        job = start_export(srv, "service=outage", "CSV", f"s3://{BUCKET}/down/")
        failed = wait_done(srv, job["id"], timeout=60)
        assert failed["state"] == "FAILED"
        location = f"s3://{BUCKET}/down/{job['id']}.csv"
        assert failed["error"].startswith(
            f"object storage unavailable, {location} not written: "
        ), failed
        assert "Connection refused" in failed["error"]
        assert failed["location"] is None
        assert httpx.get(srv.api_url + "/healthz").text == "ok"
        assert (
            srv.data('{ logs(query: "service=outage", limit: 1) { total } }')["logs"]["total"]
            == 3000
        )
        # S3 going away in the middle of a multipart upload
        s3.start()
        send_bulk(srv, "outage-bulk", 20_000)
        big = start_export(srv, "service=outage-bulk", "CSV", f"s3://{BUCKET}/mid/")
        assert wait_bytes(srv, big["id"], 9 << 20)["state"] == "RUNNING"
        s3.stop()
        cut = wait_done(srv, big["id"], timeout=60)
        assert cut["state"] == "FAILED"
        assert cut["error"].startswith("object storage unavailable, s3://"), cut
        assert cut["total"] == 20_000 and cut["location"] is None
        assert httpx.get(srv.api_url + "/healthz").text == "ok"
        # and once S3 is back, the same export succeeds
        s3.start()
        assert objects_under(s3, "mid/") == []
        again = wait_done(
            srv, start_export(srv, "service=outage", "CSV", f"s3://{BUCKET}/up/")["id"]
        )
        assert again["state"] == "SUCCEEDED", again["error"]
        assert len(get_object(s3, again["location"]).decode().splitlines()) == 3001
    finally:
        s3.stop()
