"""Export jobs against a real RocksDB store: what is written, in which order, and when not.

The store holds three sealed segments whose time ranges overlap plus fresh (unsealed) rows,
so every export walks the merge of all four. Expected records come from `QueryService.logs`
(the search path, newest first, paged) and from the records as sent: an export must hold
exactly those, oldest first, in each format, read back with the format's own reader (csv,
json, pyarrow.parquet). Jobs write to files in `tmp_path`; S3 is covered end to end in
test_export_e2e.py against a real S3 server.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from otlp_values import any_value

from otelog.errors import InvalidArgument, Overloaded, QuerySyntaxError
from otelog.ingest.writer import Writer
from otelog.lifecycle.export import (
    ExportFormat,
    ExportJob,
    ExportManager,
    ExportNotFound,
    ExportRequest,
    ExportState,
)
from otelog.lifecycle.export_format import COLUMNS, encode
from otelog.lifecycle.export_target import ChunkReader
from otelog.query.ordered import match_count, ordered_rows
from otelog.query.plan import TimeWindow
from otelog.query.rows import LogRow
from otelog.query.service import PageRequest, QueryService
from otelog.query.shape import json_safe, rfc3339
from otelog.receiver.decode import decode_logs
from otelog.store import format as fmt
from otelog.store.merge import merge_segments
from otelog.store.segment import SegmentReader
from otelog.store.store import Store

TENANT = "default"
SEC = 10**9
SERVICES = ("auth", "checkout", "search")
SEVERITY = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}
# bodies a CSV writer must quote or escape, and text JSON must escape
AWKWARD = ("comma, inside", 'quote " inside', "new\nline", "tab\tand unicode ✓ ü", " padded ")


@dataclass
class Sent:
    service: str
    host: str
    level: str
    ts: int
    body: str
    attrs: dict[str, Any]
    trace_id: str = ""
    span_id: str = ""


def request(recs: list[Sent]) -> bytes:
    req = ExportLogsServiceRequest()
    by_res: dict[tuple[str, str], list[Sent]] = {}
    for r in recs:
        by_res.setdefault((r.service, r.host), []).append(r)
    for (service, host), rs in by_res.items():
        res = Resource(
            attributes=[
                KeyValue(key="service.name", value=any_value(service)),
                KeyValue(key="host.name", value=any_value(host)),
                KeyValue(key="deployment.environment", value=any_value("test")),
            ]
        )
        req.resource_logs.append(
            ResourceLogs(
                resource=res,
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="export-test"),
                        log_records=[
                            LogRecord(
                                time_unix_nano=r.ts,
                                severity_number=SEVERITY[r.level],  # type: ignore[arg-type]
                                severity_text=r.level,
                                body=any_value(r.body),
                                attributes=[
                                    KeyValue(key=k, value=any_value(v)) for k, v in r.attrs.items()
                                ],
                                trace_id=bytes.fromhex(r.trace_id),
                                span_id=bytes.fromhex(r.span_id),
                            )
                            for r in rs
                        ],
                    )
                ],
            )
        )
    return req.SerializeToString()


def dataset(seed: int, n: int, now: int, hours_ago: int = 0) -> list[Sent]:
    """n records stamped within the hour that ended `hours_ago` hours before `now`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        attrs: dict[str, Any] = {"i": i, "user": {"id": rng.randint(1, 50), "tags": ["a", "b"]}}
        if i % 7 == 0:
            attrs["ratio"] = float("nan")  # legal OTLP; JSON gets it as a string
        if i % 5 == 0:
            attrs["ok"] = rng.random() < 0.5
        traced = i % 3 == 0
        out.append(
            Sent(
                service=SERVICES[i % len(SERVICES)],
                host=f"h{i % 2}",
                level=rng.choice(list(SEVERITY)),
                ts=now - (hours_ago * 3600 + rng.randint(1, 3599)) * SEC - rng.randint(0, SEC - 1),
                body=f"{AWKWARD[i % len(AWKWARD)]} #{i}",
                attrs=attrs,
                trace_id=rng.randbytes(16).hex() if traced else "",
                span_id=rng.randbytes(8).hex() if traced else "",
            )
        )
    return out


@dataclass
class Env:
    store: Store
    writer: Writer
    qs: QueryService
    sent: dict[str, Sent]  # by body (unique)

    def manager(self, **kw: Any) -> ExportManager:
        return ExportManager(self.store, self.qs, None, **kw)


def open_env(
    path: Path, chunks: tuple[int, ...] = (700, 500, 600, 300), overlap: bool = True
) -> Env:
    """Every chunk but the last a sealed segment; all span the same hour, so they overlap,
    unless not `overlap`: then each has its own hour, the first chunk the oldest."""
    store = Store(str(path))
    writer = Writer(store, seal_interval_s=3600, seal_rows=10**9)
    writer.start()
    now = time.time_ns()
    sent: dict[str, Sent] = {}
    first = 0
    for c, n in enumerate(chunks):
        recs = dataset(c, n, now, 0 if overlap else len(chunks) - c)
        for r in recs:
            r.body += f"/{first}"  # unique across chunks
            sent[r.body] = r
        first += n
        for i in range(0, n, 97):
            raw = request(recs[i : i + 97])
            batch, res = decode_logs(raw, time.time_ns())
            assert res.rejected == 0, res.message
            writer.submit_logs(TENANT, batch, raw, time.time_ns()).result(timeout=60)
        if c < len(chunks) - 1:
            assert store.seal() == n
    return Env(store, writer, QueryService(store), sent)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = open_env(tmp_path / "db")
    yield e
    e.writer.stop()
    e.store.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One store for the tests that only read it."""
    e = open_env(tmp_path_factory.mktemp("export") / "db")
    yield e
    e.writer.stop()
    e.store.close()


def searched(qs: QueryService, query: str = "") -> list[LogRow]:
    """Every match of `query` through the search path, oldest first."""
    rows: list[LogRow] = []
    token = None
    while True:
        res = qs.logs(PageRequest(query=query, limit=1000, page_token=token))
        rows += res.rows
        token = res.next_token
        if token is None:
            break
    return rows[::-1]


def expected_table(rows: list[LogRow]) -> list[dict[str, str]]:
    def j(v: Any) -> str:
        return json.dumps(json_safe(v), ensure_ascii=False, separators=(",", ":"))

    return [
        {
            "log_id": f"{r.log_id:016x}",
            "timestamp": rfc3339(r.ts),
            "service": r.service,
            "level": r.level_name,
            "host": r.host,
            "trace_id": r.trace_id,
            "span_id": r.span_id,
            "message": r.body,
            "attributes": j(r.attributes()),
            "resource": j(r.resource()),
        }
        for r in rows
    ]


def run_to_end(mgr: ExportManager, req: ExportRequest, timeout: float = 60) -> ExportJob:
    job = mgr.start(req)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = mgr.job(job.id)
        assert got is not None
        if got.state is not ExportState.RUNNING:
            return got
        time.sleep(0.01)
    raise AssertionError(f"export {job.id} still running after {timeout} s")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert tuple(header) == COLUMNS
        return [dict(zip(header, row, strict=True)) for row in reader]


# ---- the walk: every match once, oldest first


def test_ordered_rows_merge_overlapping_segments_and_fresh_rows_oldest_first(
    shared: Env,
) -> None:
    searcher = shared.qs.searcher()
    m = searcher.matches(shared.qs.compile(""), time.time_ns(), TimeWindow())
    assert len(m.segments) == 3 and m.fresh, "the data set must hold sealed and fresh rows"
    pages = list(ordered_rows(searcher, m, page_rows=64))
    assert all(0 < len(p) <= 64 for p in pages)
    got = [(r.ts, r.log_id) for p in pages for r in p]
    assert got == sorted(got), "not oldest first"
    assert got == [(r.ts, r.log_id) for r in searched(shared.qs)]
    assert match_count(m) == len(got) == len(shared.sent)


@pytest.mark.parametrize("query", ["level>=WARN", "service=auth OR inside", 'NOT "new"'])
def test_ordered_rows_of_a_query_are_the_search_results(shared: Env, query: str) -> None:
    searcher = shared.qs.searcher()
    m = searcher.matches(shared.qs.compile(query), time.time_ns(), TimeWindow())
    got = [r.log_id for p in ordered_rows(searcher, m, page_rows=100) for r in p]
    want = [r.log_id for r in searched(shared.qs, query)]
    assert got == want and 0 < len(want) < len(shared.sent)


# ---- formats round-trip


def test_csv_export_is_the_search_result_field_by_field(shared: Env, tmp_path: Path) -> None:
    job = run_to_end(shared.manager(), ExportRequest("", ExportFormat.CSV, str(tmp_path)))
    assert job.state is ExportState.SUCCEEDED, job.error
    path = tmp_path / f"{job.id}.csv"
    assert job.location == str(path)
    got = read_csv(path)
    assert got == expected_table(searched(shared.qs))
    assert job.total == job.written == len(got) == len(shared.sent)
    assert job.nbytes == path.stat().st_size
    # against what was sent, not only against another read path
    for row in got:
        s = shared.sent[row["message"]]
        assert (row["service"], row["host"], row["level"]) == (s.service, s.host, s.level)
        assert row["trace_id"] == s.trace_id
        attrs = json.loads(row["attributes"])
        assert attrs["user"] == s.attrs["user"] and attrs["i"] == s.attrs["i"]
        if "ratio" in s.attrs:
            assert attrs["ratio"] == "nan"
        assert json.loads(row["resource"])["deployment.environment"] == "test"
    assert not list(tmp_path.glob("*.partial"))


def test_jsonl_export_is_one_rest_record_per_line(shared: Env, tmp_path: Path) -> None:
    out = tmp_path / "errors.jsonl"
    job = run_to_end(shared.manager(), ExportRequest("level>=ERROR", ExportFormat.JSONL, str(out)))
    assert job.state is ExportState.SUCCEEDED, job.error
    lines = out.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines]
    want = searched(shared.qs, "level>=ERROR")
    assert [d["log_id"] for d in docs] == [f"{r.log_id:016x}" for r in want]
    assert {d["level"] for d in docs} == {"ERROR"}
    for d, r in zip(docs, want, strict=True):
        assert d == {
            "log_id": f"{r.log_id:016x}",
            "timestamp": rfc3339(r.ts),
            "service": r.service,
            "level": "ERROR",
            "message": r.body,
            "trace_id": r.trace_id or None,
            "span_id": r.span_id or None,
            "host": r.host,
            "attributes": json_safe(r.attributes()),
        }
    assert job.total == job.written == len(docs)


def test_parquet_export_is_typed_and_in_row_groups(shared: Env, tmp_path: Path) -> None:
    # small row groups: several of them, and the last one partial
    rows = searched(shared.qs)
    data = b"".join(encode(ExportFormat.PARQUET, [rows[:300], rows[300:900], rows[900:]], 500))
    f = pq.ParquetFile(io.BytesIO(data))
    sizes = [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
    assert sizes == [500] * (len(rows) // 500) + [len(rows) % 500]
    table = f.read()
    assert str(table.schema.field("timestamp").type) == "timestamp[ns, tz=UTC]"
    cols = table.drop_columns(["timestamp"]).to_pydict()
    ts = table.column("timestamp").cast("int64").to_pylist()
    assert ts == [r.ts for r in rows]
    want = expected_table(rows)
    for k in COLUMNS:
        if k == "timestamp":
            continue
        got = cols[k]
        if k in ("host", "trace_id", "span_id"):
            got = [v or "" for v in got]  # nulls for absent values
        assert got == [w[k] for w in want], k
    assert None in cols["trace_id"]  # absent trace ids are nulls, not ""


def test_parquet_export_job_reads_back(shared: Env, tmp_path: Path) -> None:
    job = run_to_end(
        shared.manager(), ExportRequest("service=checkout", ExportFormat.PARQUET, str(tmp_path))
    )
    assert job.state is ExportState.SUCCEEDED, job.error
    table = pq.read_table(tmp_path / f"{job.id}.parquet")
    want = searched(shared.qs, "service=checkout")
    assert table.column("log_id").to_pylist() == [f"{r.log_id:016x}" for r in want]
    assert set(table.column("service").to_pylist()) == {"checkout"}
    assert job.total == job.written == table.num_rows


def test_an_export_of_nothing_is_a_file_with_only_a_header(shared: Env, tmp_path: Path) -> None:
    job = run_to_end(
        shared.manager(), ExportRequest("zzzznothing", ExportFormat.CSV, str(tmp_path))
    )
    assert job.state is ExportState.SUCCEEDED and job.total == 0 and job.written == 0
    assert read_csv(tmp_path / f"{job.id}.csv") == []
    job = run_to_end(
        shared.manager(), ExportRequest("zzzznothing", ExportFormat.PARQUET, str(tmp_path))
    )
    assert pq.read_table(tmp_path / f"{job.id}.parquet").num_rows == 0


def test_time_window_arguments_narrow_the_export(shared: Env, tmp_path: Path) -> None:
    job = run_to_end(
        shared.manager(), ExportRequest("", ExportFormat.JSONL, str(tmp_path), since="20m")
    )
    assert job.state is ExportState.SUCCEEDED
    n = len((tmp_path / f"{job.id}.jsonl").read_text().splitlines())
    want = shared.qs.logs(PageRequest(since="20m", limit=0)).total
    assert n == job.total and abs(n - want) <= 2 and 0 < n < len(shared.sent)


def test_chunk_reader_fills_each_read() -> None:
    r = ChunkReader(iter([b"ab", b"", b"cde", b"f"]))
    assert r.read(4) == b"abcd"
    assert r.read(10) == b"ef"
    assert r.read(3) == b""


# ---- refusing bad requests at once


@pytest.mark.parametrize("query", ["level>", "service=auth AND (", '"open', "a OR OR b"])
def test_a_bad_query_is_the_search_syntax_error(shared: Env, tmp_path: Path, query: str) -> None:
    with pytest.raises(QuerySyntaxError) as e:
        shared.manager().start(ExportRequest(query, ExportFormat.CSV, str(tmp_path)))
    with pytest.raises(QuerySyntaxError) as same:
        shared.qs.logs(PageRequest(query=query))
    assert str(e.value) == str(same.value)
    assert e.value.position == same.value.position
    assert shared.manager().jobs() == [] or all(j.query != query for j in shared.manager().jobs())


@pytest.mark.parametrize(
    "destination,message",
    [
        ("exports/out.csv", "neither s3://bucket/prefix nor an absolute path"),
        ("../out.csv", "neither s3://bucket/prefix nor an absolute path"),
        ("/no/such/dir/out.csv", "no such directory '/no/such/dir'"),
        ("/no/such/dir/", "no such directory"),
        ("s3://exports/errors/", "--s3-endpoint"),
        ("s3://", "no bucket"),
        ("s3://Bad_Bucket/x", "is not a bucket name"),
        ("ftp://host/x", "use s3://bucket/prefix or an absolute path"),
    ],
)
def test_a_bad_destination_is_refused_before_the_job_starts(
    shared: Env, destination: str, message: str
) -> None:
    mgr = shared.manager()
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(".", r"\.")):
        mgr.start(ExportRequest("", ExportFormat.CSV, destination))
    assert mgr.jobs() == [j for j in mgr.jobs() if j.destination != destination]


def test_an_existing_file_is_never_overwritten(shared: Env, tmp_path: Path) -> None:
    out = tmp_path / "taken.csv"
    out.write_text("precious")
    with pytest.raises(InvalidArgument, match="already exists"):
        shared.manager().start(ExportRequest("", ExportFormat.CSV, str(out)))
    assert out.read_text() == "precious"


def test_bad_window_is_refused(shared: Env, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="since"):
        shared.manager().start(ExportRequest("", ExportFormat.CSV, str(tmp_path), since="soon"))


def test_format_names_parse_case_insensitively() -> None:
    assert ExportFormat.parse("csv") is ExportFormat.CSV
    assert ExportFormat.parse(" Parquet ") is ExportFormat.PARQUET
    with pytest.raises(ValueError, match="use CSV, JSONL or PARQUET"):
        ExportFormat.parse("xlsx")


# ---- cancel, limits, restarts


class Gate:
    """An on_progress hook that holds the job after its first chunk until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, job: ExportJob) -> None:
        self.calls += 1
        self.reached.set()
        assert self.release.wait(30)


def test_cancel_stops_the_job_and_removes_the_partial_file(env: Env, tmp_path: Path) -> None:
    gate = Gate()
    mgr = env.manager(on_progress=gate, page_rows=50)
    out = tmp_path / "out"
    out.mkdir()
    job = mgr.start(ExportRequest("", ExportFormat.CSV, str(out)))
    assert gate.reached.wait(30)
    assert list(out.iterdir()) == [out / f"{job.id}.csv.partial"]
    running = mgr.job(job.id)
    assert running is not None and running.state is ExportState.RUNNING
    assert running.total == len(env.sent) and 0 < running.written < running.total
    threading.Timer(0.2, gate.release.set).start()
    done = mgr.cancel(job.id, wait_s=30)
    assert done.state is ExportState.CANCELLED
    assert done.finished_at is not None and done.location is None and done.error is None
    assert done.written < done.total  # type: ignore[operator]
    assert list(out.iterdir()) == []
    assert gate.calls == 1  # no chunk after the cancel
    # a finished job is answered as it is
    assert mgr.cancel(job.id).state is ExportState.CANCELLED


def test_cancel_of_an_unknown_job_says_so(shared: Env) -> None:
    with pytest.raises(ExportNotFound):
        shared.manager().cancel("nope")


def test_running_exports_are_limited(env: Env, tmp_path: Path) -> None:
    gate = Gate()
    mgr = env.manager(on_progress=gate, max_running=1)
    first = mgr.start(ExportRequest("", ExportFormat.CSV, str(tmp_path)))
    assert gate.reached.wait(30)
    with pytest.raises(Overloaded, match="1 exports are running"):
        mgr.start(ExportRequest("", ExportFormat.CSV, str(tmp_path)))
    gate.release.set()
    mgr.cancel(first.id, wait_s=30)
    assert run_to_end(mgr, ExportRequest("", ExportFormat.CSV, str(tmp_path))).state is (
        ExportState.SUCCEEDED
    )


def test_jobs_are_stored_and_listed_newest_first(env: Env, tmp_path: Path) -> None:
    mgr = env.manager()
    a = run_to_end(mgr, ExportRequest("level=ERROR", ExportFormat.CSV, str(tmp_path)))
    b = run_to_end(mgr, ExportRequest("level=WARN", ExportFormat.JSONL, str(tmp_path)))
    again = env.manager()  # as after a restart: from the stored records
    assert [j.id for j in again.jobs()] == [b.id, a.id]
    stored = again.job(a.id)
    assert stored is not None
    assert (stored.state, stored.total, stored.written, stored.nbytes, stored.location) == (
        ExportState.SUCCEEDED,
        a.total,
        a.written,
        a.nbytes,
        str(tmp_path / f"{a.id}.csv"),
    )
    assert [j.id for j in again.jobs(state=ExportState.FAILED)] == []


def test_only_the_newest_finished_jobs_are_kept(env: Env, tmp_path: Path) -> None:
    mgr = env.manager(max_kept=2)
    ids = [
        run_to_end(mgr, ExportRequest(f"level={lv}", ExportFormat.CSV, str(tmp_path))).id
        for lv in ("INFO", "WARN", "ERROR")
    ]
    assert [j.id for j in mgr.jobs()] == ids[:0:-1]
    assert [j.id for j in env.manager().jobs()] == ids[:0:-1]  # and so in the store
    assert mgr.job(ids[0]) is None


def test_a_job_running_at_a_crash_is_failed_at_start_and_its_partial_removed(
    env: Env, tmp_path: Path
) -> None:
    job = ExportJob(
        id="0000000000010001",
        tenant=TENANT,
        query="",
        format=ExportFormat.CSV,
        destination=str(tmp_path),
        state=ExportState.RUNNING,
        started_at=time.time_ns(),
        total=10,
        written=4,
    )
    wb = env.store.db.batch()
    env.store.db.put(wb, fmt.CF_META, fmt.export_key(TENANT, job.id), job.encode())
    env.store.db.write(wb, sync=True)
    partial = tmp_path / f"{job.id}.csv.partial"
    partial.write_text("log_id,...")
    mgr = env.manager()
    got = mgr.job(job.id)
    assert got is not None
    assert (got.state, got.error, got.written) == (
        ExportState.FAILED,
        "interrupted by a restart",
        4,
    )
    assert got.finished_at is not None
    assert not partial.exists()
    # and stored so: a second start sees FAILED, not RUNNING
    assert env.manager().job(job.id).state is ExportState.FAILED  # type: ignore[union-attr]


def test_close_ends_running_jobs_as_failed(env: Env, tmp_path: Path) -> None:
    gate = Gate()
    mgr = env.manager(on_progress=gate)
    job = mgr.start(ExportRequest("", ExportFormat.JSONL, str(tmp_path)))
    assert gate.reached.wait(30)
    threading.Timer(0.2, gate.release.set).start()
    mgr.close(timeout_s=30)
    got = mgr.job(job.id)
    assert got is not None and got.state is ExportState.FAILED
    assert got.error == "interrupted by a server shutdown"
    assert list(tmp_path.iterdir()) == [tmp_path / "db"]
    with pytest.raises(Overloaded):
        mgr.start(ExportRequest("", ExportFormat.CSV, str(tmp_path)))


def test_segments_replaced_during_an_export_are_read_where_they_went(tmp_path: Path) -> None:
    """A merge deletes its inputs' bytes while a long export still walks them. The segments
    do not overlap, so the export reaches the later ones only after the merge."""
    env = open_env(tmp_path / "db", overlap=False)
    try:
        _replaced_during_export(env, tmp_path)
    finally:
        env.writer.stop()
        env.store.close()


def _replaced_during_export(env: Env, tmp_path: Path) -> None:
    gate = Gate()
    mgr = env.manager(on_progress=gate, page_rows=20)
    job = mgr.start(ExportRequest("", ExportFormat.CSV, str(tmp_path)))
    assert gate.reached.wait(30)
    before = {s.meta.id for s in env.store.snapshot(TENANT).segments}
    # as in the server's worker process, the merge reads its inputs with readers of its
    # own: the export's readers keep none of the inputs' bytes cached
    env.store.segment_merger = lambda tenant, seg_id, run, keep: merge_segments(
        tenant, seg_id, [SegmentReader(env.store.db, s.meta) for s in run], keep
    )
    while env.store.merge_once(small_rows=10**6, fanin=2, grace_s=0):
        pass
    env.store.collect_garbage(force=True)
    after = {s.meta.id for s in env.store.snapshot(TENANT).segments}
    assert after and not before & after, "the export's segments must be gone"
    gate.release.set()
    deadline = time.monotonic() + 60
    while (j := mgr.job(job.id)) is not None and j.state is ExportState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert j is not None and j.state is ExportState.SUCCEEDED, j.error
    # searched only now: a search before would have left the old segments' bytes cached
    want = expected_table(searched(env.qs))
    assert read_csv(tmp_path / f"{job.id}.csv") == want
    assert j.written == j.total == len(want)


def test_nan_attributes_stay_strict_json(shared: Env) -> None:
    rows = [r for r in searched(shared.qs) if "ratio" in r.attributes()]
    text = b"".join(encode(ExportFormat.JSONL, [rows])).decode()
    for line in text.splitlines():
        doc = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
        assert doc["attributes"]["ratio"] == "nan"
        assert math.isnan(float(doc["attributes"]["ratio"]))


def test_deleted_records_are_in_no_export_even_one_already_running(env: Env) -> None:
    from otelog.lifecycle.manager import LifecycleManager
    from otelog.lifecycle.retention import RetentionPolicy

    lm = LifecycleManager(env.store, None, RetentionPolicy("default"))
    query = "level>=WARN"
    before = [r.log_id for r in searched(env.qs, query)]
    assert len(before) > 100
    # a walk that started before the deletion: pages read after it leave its rows out
    searcher = env.qs.searcher()
    m = searcher.matches(env.qs.compile(""), time.time_ns(), TimeWindow())
    pages = ordered_rows(searcher, m, page_rows=50)
    first = next(pages)
    d = lm.delete_logs(query)
    assert d.matched == len(before)
    rest = [r for p in pages for r in p]
    assert rest and not any(r.log_id in set(before) for r in rest)
    # rows read before the request stay read; every later one under it is left out
    read_before = sum(1 for r in first if r.log_id in set(before))
    assert len(first) + len(rest) == len(env.sent) - (len(before) - read_before)
    # a walk that starts after it never sees them
    searcher = env.qs.searcher()
    m = searcher.matches(env.qs.compile(""), time.time_ns(), TimeWindow())
    assert match_count(m) == len(env.sent) - len(before)
    got = {r.log_id for p in ordered_rows(searcher, m) for r in p}
    assert got.isdisjoint(before) and len(got) == len(env.sent) - len(before)


def test_local_destinations_stay_inside_the_export_directory(tmp_path: Path) -> None:
    from otelog.lifecycle.export_target import LocalTarget

    root = tmp_path / "exports"
    (root / "team").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "sneaky").symlink_to(outside)
    # relative destinations are taken from the root; absolute ones inside it are fine
    assert LocalTarget.resolve("team", "j.csv", str(root)).path == root / "team" / "j.csv"
    assert LocalTarget.resolve(str(root), "j.csv", str(root)).path == root / "j.csv"
    for bad in ("../elsewhere", str(outside), "sneaky", "team/../../elsewhere/x.csv", "/etc"):
        with pytest.raises(InvalidArgument, match="outside the export directory"):
            LocalTarget.resolve(bad, "j.csv", str(root))
