"""End-to-end benchmark of an otelog server: OTLP/gRPC ingest, time to searchable, bytes on
disk, GraphQL query latency, and a correctness check of the query totals.

    python bench/ingest_query.py --records 1000000             # starts its own server
    python bench/ingest_query.py --grpc 127.0.0.1:4317 --api http://127.0.0.1:8080 \\
        --server-pid 1234 --data-dir /var/lib/otelog                 # a running server

See bench/README.md for what every figure means. Progress goes to stderr; the results table
(or with --json, a single JSON line) to stdout. Exits 1 if a check failed or requests erred.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

# bench/ is not a package: run as a script, this file's directory is on sys.path.
from workload import LEVEL_NAMES, Workload, WorkloadStats

REPO = Path(__file__).resolve().parents[1]
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_MESSAGE = 256 << 20
TTS_SERVICE = "otelog-bench-tts"

COUNT_QUERY = """query($q: String!, $since: String, $limit: Int) {
  logs(query: $q, since: $since, limit: $limit) { total }
}"""
RECORDS_QUERY = """query($q: String!, $since: String, $limit: Int) {
  logs(query: $q, since: $since, limit: $limit) { total records { logId } }
}"""
TRACE_QUERY = """query($id: String!) {
  trace(traceId: $id) { traceId spans { spanId } logs { logId body } }
}"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the parenthesised command name)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid`, its live descendants and its reaped children.

    Uses psutil if it is installed, else /proc (Linux). None if the process is gone."""
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            total = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            return total
        except psutil.Error:
            return None
    ticks = os.sysconf("SC_CLK_TCK")
    total_ticks = 0
    for i, p in enumerate([pid, *_descendants(pid)]):
        fields = _proc_stat(p)
        if fields is None:
            if i == 0:
                return None
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat, 11-14 here
        total_ticks += sum(int(f) for f in fields[11:15])
    return total_ticks / ticks


@dataclass
class Server:
    """The otelog under test: started here, or an external one (`proc` None)."""

    grpc_target: str
    api_url: str
    data_dir: Path | None
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @classmethod
    def start(
        cls, command: list[str], data_dir: Path, log_path: Path, extra: list[str], timeout: float
    ) -> Server:
        grpc_port, http_port, api_port = free_port(), free_port(), free_port()
        argv = [
            *command,
            "serve",
            "--data-dir",
            str(data_dir),
            "--grpc-listen",
            f"127.0.0.1:{grpc_port}",
            "--http-listen",
            f"127.0.0.1:{http_port}",
            "--api-listen",
            f"127.0.0.1:{api_port}",
            *extra,
        ]
        log(f"starting {shlex.join(argv)} (log: {log_path})")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        server = cls(
            f"127.0.0.1:{grpc_port}",
            f"http://127.0.0.1:{api_port}",
            data_dir,
            proc.pid,
            proc,
            log_path,
        )
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"otelog exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(self.api_url + "/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"otelog not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else process_cpu_seconds(self.pid)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (SIGKILL after `timeout`) a server started here; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"otelog did not stop within {timeout:.0f} s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_idle(
    server: Server, timeout: float = 120.0, interval: float = 0.5, busy: float = 0.05
) -> tuple[float | None, float]:
    """Waits until the server uses less than `busy` of a core over `interval` (the work it
    deferred past its acknowledgements is done). (its CPU seconds then, seconds waited)."""
    t0 = time.perf_counter()
    last = server.cpu_seconds()
    if last is None:
        return None, 0.0
    while time.perf_counter() - t0 < timeout:
        time.sleep(interval)
        now = server.cpu_seconds()
        if now is None:
            return None, time.perf_counter() - t0
        if now - last < busy * interval:
            return now, time.perf_counter() - t0
        last = now
    return last, time.perf_counter() - t0


def disk_usage(path: Path) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, files) under `path`."""
    size = allocated = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:  # deleted by a compaction meanwhile
                continue
            size += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return size, allocated, files


# -- OTLP/gRPC --------------------------------------------------------------------------------


def open_channel(target: str) -> grpc.Channel:
    # A local subchannel pool gives every channel its own TCP connection; without it,
    # channels with equal arguments share one.
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_http_proxy", 0),
    ]
    channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel


def export_callable(channel: grpc.Channel, method: str, response: Any) -> Any:
    """A unary Export call that sends pre-serialized request bytes as they are (a generated
    stub would serialize a message object, so it cannot take bytes)."""
    return channel.unary_unary(
        method, request_serializer=None, response_deserializer=response.FromString
    )


RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


@dataclass
class SendResult:
    requests: int = 0
    items: int = 0
    failed_items: int = 0  # in requests that erred
    bytes: int = 0
    rejected: int = 0
    retries: int = 0
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    cpu_s: float | None = None  # server CPU from the first request to the last ack
    cpu_start: float | None = None  # server CPU seconds when sending began


def send_all(
    target: str,
    bodies: Sequence[bytes],
    items: Sequence[int],
    clients: int,
    method: str,
    response: Any,
    rejected_of: Callable[[Any], int],
    server: Server,
    max_attempts: int = 20,
) -> SendResult:
    """Sends every body once over `clients` concurrent connections, as fast as they are
    acknowledged; a body refused with RESOURCE_EXHAUSTED/UNAVAILABLE is retried with backoff.
    Times from the moment every connection is up to the last acknowledgement."""
    result = SendResult()
    lock = threading.Lock()
    next_index = 0
    start = threading.Barrier(clients + 1)
    channels = [open_channel(target) for _ in range(clients)]

    def worker(channel: grpc.Channel) -> None:
        nonlocal next_index
        call = export_callable(channel, method, response)
        requests = sent_items = failed_items = sent_bytes = rejected = retries = errors = 0
        first_error = ""
        start.wait()
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= len(bodies):
                break
            body = bodies[i]
            for attempt in range(max_attempts):
                try:
                    resp = call(body, timeout=120)
                    rejected += rejected_of(resp)
                    break
                except grpc.RpcError as e:
                    code = e.code()
                    if code in RETRYABLE and attempt + 1 < max_attempts:
                        retries += 1
                        time.sleep(min(2.0, 0.01 * 2**attempt))
                        continue
                    errors += 1
                    failed_items += items[i]
                    first_error = first_error or f"{code}: {e.details()}"
                    break
            requests += 1
            sent_items += items[i]
            sent_bytes += len(body)
        with lock:
            result.requests += requests
            result.items += sent_items
            result.failed_items += failed_items
            result.bytes += sent_bytes
            result.rejected += rejected
            result.retries += retries
            result.errors += errors
            result.first_error = result.first_error or first_error

    threads = [threading.Thread(target=worker, args=(ch,), daemon=True) for ch in channels]
    for t in threads:
        t.start()
    cpu0 = result.cpu_start = server.cpu_seconds()
    t0 = time.perf_counter()
    start.wait()
    total = len(bodies)
    last_report = t0
    while any(t.is_alive() for t in threads):
        threads[0].join(0.5)
        now = time.perf_counter()
        if now - last_report >= 5 and total:
            last_report = now
            done = min(next_index, total)
            log(f"  {done}/{total} requests sent ({done / total:.0%}), {now - t0:.0f} s")
    result.wall_s = time.perf_counter() - t0
    cpu1 = server.cpu_seconds()
    if cpu0 is not None and cpu1 is not None:
        result.cpu_s = cpu1 - cpu0
    for ch in channels:
        ch.close()
    return result


# -- time to searchable -----------------------------------------------------------------------


@dataclass
class TtsResult:
    delays_ms: list[float] = field(default_factory=list)
    hit_poll_ms: list[float] = field(default_factory=list)  # latency of the finding poll
    first_poll_hits: int = 0  # samples found by the very first poll
    polls: int = 0
    poll_errors: int = 0  # polls answered with GraphQL errors or failing
    timeouts: int = 0
    errors: int = 0
    first_error: str = ""


def probe_request(token: str, ts_ns: int) -> bytes:
    record = LogRecord(
        time_unix_nano=ts_ns,
        observed_time_unix_nano=ts_ns,
        severity_number=9,  # type: ignore[arg-type]
        severity_text="INFO",
        body=AnyValue(string_value=f"time to searchable probe {token}"),
    )
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=TTS_SERVICE))]
    )
    req = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=[record])])
        ]
    )
    body: bytes = req.SerializeToString()
    return body


def time_to_searchable(
    target: str, api_url: str, samples: int, poll_s: float, timeout_s: float
) -> TtsResult:
    """For each sample: send one record with a unique token, then poll the token's count
    until it is 1. The delay runs from the acknowledgement of the export to the arrival of
    the first answer that finds the record."""
    result = TtsResult()
    channel = open_channel(target)
    call = export_callable(channel, LOGS_EXPORT, ExportLogsServiceResponse)
    with httpx.Client(base_url=api_url, trust_env=False, timeout=30) as client:
        for n in range(samples):
            if n and n % 25 == 0:
                p50 = percentile(result.delays_ms, 50)
                log(f"  {n}/{samples} samples, p50 so far {fmt(p50, ' ms')}")
            token = f"tts{uuid.uuid4().hex}"
            try:
                call(probe_request(token, time.time_ns()), timeout=30)
            except grpc.RpcError as e:
                result.errors += 1
                result.first_error = result.first_error or f"export: {e.code()}: {e.details()}"
                continue
            acked = time.perf_counter()
            variables = {"q": token, "since": "1h", "limit": 1}
            polls = 0
            while True:
                polls += 1
                sent = time.perf_counter()
                try:
                    r = client.post("/graphql", json={"query": COUNT_QUERY, "variables": variables})
                    doc = r.json()
                    total = (doc.get("data") or {}).get("logs", {}).get("total")
                    if doc.get("errors"):
                        result.poll_errors += 1
                        if not result.first_error:
                            result.first_error = f"graphql: {doc['errors'][0].get('message')}"
                except (httpx.HTTPError, ValueError, AttributeError) as e:
                    result.poll_errors += 1
                    result.first_error = result.first_error or f"graphql: {e!r}"
                    total = None
                now = time.perf_counter()
                if total is not None and total >= 1:
                    result.delays_ms.append((now - acked) * 1000)
                    result.hit_poll_ms.append((now - sent) * 1000)
                    result.first_poll_hits += polls == 1
                    break
                if now - acked > timeout_s:
                    result.timeouts += 1
                    break
                time.sleep(poll_s)
            result.polls += polls
    channel.close()
    return result


# -- queries ----------------------------------------------------------------------------------


@dataclass
class QueryResult:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    mismatches: int = 0
    expected: Any = None
    got: Any = None  # of the last run
    detail: str = ""


class GraphQL:
    def __init__(self, api_url: str) -> None:
        self.client = httpx.Client(base_url=api_url, trust_env=False, timeout=120)

    def run(
        self, query: str, variables: dict[str, Any]
    ) -> tuple[float, dict[str, Any] | None, str]:
        """(latency ms, data, error message)"""
        t0 = time.perf_counter()
        try:
            r = self.client.post("/graphql", json={"query": query, "variables": variables})
            ms = (time.perf_counter() - t0) * 1000
            doc = r.json()
        except (httpx.HTTPError, ValueError) as e:
            return (time.perf_counter() - t0) * 1000, None, repr(e)
        if r.status_code != 200 or doc.get("errors"):
            errs = doc.get("errors") or [{"message": f"HTTP {r.status_code}"}]
            return ms, doc.get("data"), str(errs[0].get("message"))
        return ms, doc.get("data"), ""

    def close(self) -> None:
        self.client.close()


def run_count_query(
    gql: GraphQL,
    name: str,
    query: str,
    since: str,
    limit: int,
    expected: int,
    runs: int,
    warmup: int,
) -> QueryResult:
    res = QueryResult(name, expected=expected, detail=f'logs(query: "{query}", since: "{since}")')
    variables = {"q": query, "since": since, "limit": limit}
    gql_text = RECORDS_QUERY if limit > 1 else COUNT_QUERY
    for i in range(warmup + runs):
        ms, data, err = gql.run(gql_text, variables)
        if i < warmup:
            continue
        res.latencies_ms.append(ms)
        if err or data is None:
            res.errors += 1
            res.first_error = res.first_error or err
            res.got = None
            continue
        page = data["logs"]
        res.got = page["total"]
        if limit > 1 and len(page.get("records") or []) != min(limit, expected):
            res.mismatches += 1
        if res.got != expected:
            res.mismatches += 1
    return res


def run_trace_queries(
    gql: GraphQL, stats: WorkloadStats, runs: int, warmup: int, spans_sent: bool, seed: int
) -> QueryResult:
    complete = [t for t in stats.traces.values() if t.complete]
    res = QueryResult("trace by id", detail="trace(traceId) { spans logs }")
    if not complete:
        res.first_error = "the workload has no complete trace"
        return res
    rng = random.Random(seed)
    matched = 0
    for i in range(warmup + runs):
        t = rng.choice(complete)
        ms, data, err = gql.run(TRACE_QUERY, {"id": t.trace_id.hex()})
        if i < warmup:
            continue
        res.latencies_ms.append(ms)
        if err or data is None:
            res.errors += 1
            res.first_error = res.first_error or err
            continue
        trace = data.get("trace")
        logs = len(trace["logs"]) if trace else 0
        spans = len(trace["spans"]) if trace else 0
        ok = logs == t.records and (not spans_sent or spans == t.span_count)
        if ok:
            matched += 1
        else:
            res.mismatches += 1
            if not res.first_error:
                res.first_error = (
                    f"trace {t.trace_id.hex()}: {logs} logs / {spans} spans, expected "
                    f"{t.records} / {t.span_count if spans_sent else '-'}"
                )
    res.expected = f"{runs} traces complete"
    res.got = f"{matched} complete"
    return res


def run_queries(
    api_url: str, stats: WorkloadStats, args: argparse.Namespace, spans_sent: bool
) -> list[QueryResult]:
    gql = GraphQL(api_url)
    runs, warm = args.query_runs, args.warmup
    try:
        return [
            run_trace_queries(gql, stats, runs, warm, spans_sent, args.seed),
            run_count_query(
                gql,
                "service=checkout AND level=ERROR",
                "service=checkout AND level=ERROR",
                "1h",
                100,
                stats.count("checkout", ("ERROR",)),
                runs,
                warm,
            ),
            run_count_query(
                gql,
                f"rare keyword ({stats.rare_keyword})",
                stats.rare_keyword,
                "2h",
                100,
                stats.rare_count,
                runs,
                warm,
            ),
            run_count_query(
                gql,
                "level>=WARN (count)",
                "level>=WARN",
                "1h",
                1,
                stats.at_least("WARN"),
                runs,
                warm,
            ),
        ]
    finally:
        gql.close()


# -- report -----------------------------------------------------------------------------------


def fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def print_table(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []

    def section(title: str) -> None:
        rows.append((f"-- {title}", ""))

    w = report["workload"]
    section("workload")
    rows += [
        ("records / requests / batch", f"{w['records']:,} / {w['requests']:,} / {w['batch']}"),
        ("OTLP bytes per record", fmt(w["otlp_bytes_per_record"])),
        ("pre-encode time", fmt(w["encode_s"], " s", 2)),
        ("traces / spans", f"{w['traces']:,} / {w['spans']:,}"),
    ]
    ing = report["ingest"]
    section(f"ingest (OTLP/gRPC, {ing['clients']} clients)")
    rows += [
        ("wall time", fmt(ing["wall_s"], " s", 2)),
        ("records/s (wall)", fmt(ing["records_per_s"], "", 0)),
        ("MB/s (OTLP protobuf)", fmt(ing["mb_per_s"], "", 2)),
        ("server CPU", fmt(ing["server_cpu_s"], " s", 2)),
        ("server cores busy", fmt(ing["server_cores"], "", 2)),
        ("records per server CPU-second", fmt(ing["records_per_cpu_s"], "", 0)),
        ("  same, counting CPU until idle", fmt(ing.get("records_per_cpu_s_until_idle"), "", 0)),
        ("  server idle after last ack", fmt(ing.get("idle_after_s"), " s", 1)),
        ("rejected / retries / errors", f"{ing['rejected']} / {ing['retries']} / {ing['errors']}"),
    ]
    if report.get("spans"):
        sp = report["spans"]
        rows += [("spans/s (wall)", fmt(sp["spans_per_s"], "", 0) + f" ({sp['spans']:,} spans)")]
    tts = report["tts"]
    section(f"time to searchable ({tts['samples']} samples)")
    rows += [
        ("p50", fmt(tts["p50_ms"], " ms")),
        ("p99", fmt(tts["p99_ms"], " ms")),
        ("max", fmt(tts["max_ms"], " ms")),
        ("found by the first poll", f"{tts['first_poll_hits']} of {tts['found']}"),
        ("latency of the finding poll p50", fmt(tts["hit_poll_p50_ms"], " ms")),
        (
            "timeouts / export errors / poll errors",
            f"{tts['timeouts']} / {tts['errors']} / {tts['poll_errors']}",
        ),
    ]
    disk = report["disk"]
    section(f"disk (after {disk['settle_s']:.0f} s settle)")
    rows += [
        ("bytes on disk", fmt(disk["bytes"])),
        ("bytes per record", fmt(disk["bytes_per_record"])),
        ("vs OTLP protobuf", fmt(disk["ratio_to_otlp"], "x", 2)),
    ]
    if "bytes_after_stop" in disk:
        rows.append(("bytes per record after stop", fmt(disk["bytes_per_record_after_stop"])))
    section("query latency (client-side, HTTP POST /graphql)")
    for name, q in report["queries"].items():
        rows.append(
            (
                name,
                f"p50 {fmt(q['p50_ms'], ' ms')}  p99 {fmt(q['p99_ms'], ' ms')}  ({q['runs']} runs)",
            )
        )
    section("correctness")
    for c in report["checks"]:
        status = "OK" if c["ok"] else "MISMATCH"
        line = f"{status}  expected {c['expected']}, got {c['got']}"
        if c.get("error"):
            line += f"  [{c['error']}]"
        rows.append((c["name"], line))
    width = max(len(r[0]) for r in rows) + 2
    for label, value in rows:
        print(label if label.startswith("--") else f"  {label:<{width}}{value}")
    print(f"\nresult: {'OK' if report['ok'] else 'FAILED'}")


# -- main -------------------------------------------------------------------------------------


def default_server_command() -> list[str]:
    """`otelog` as `python -m otelog.cli`, run from this checkout (PYTHONPATH and cwd point at
    it), so the code benchmarked is the code next to this file even if another copy of otelog
    is installed."""
    return [sys.executable, "-m", "otelog.cli"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000, help="log records to ingest")
    p.add_argument("--clients", type=int, default=4, help="concurrent gRPC connections")
    p.add_argument("--batch", type=int, default=512, help="records per Export request")
    p.add_argument("--seed", type=int, default=1, help="workload seed")
    p.add_argument(
        "--span-minutes",
        type=float,
        default=30.0,
        help="record timestamps cover the last N minutes before pre-encoding (default 30)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--server-cmd-auto",
        action="store_true",
        help="start `otelog serve` as a subprocess on free loopback ports (the default)",
    )
    mode.add_argument("--grpc", metavar="HOST:PORT", help="OTLP/gRPC of a running server")
    p.add_argument("--api", metavar="URL", help="GraphQL base URL of a running server")
    p.add_argument("--server-pid", type=int, help="pid of a running server (for its CPU time)")
    p.add_argument(
        "--server-cmd",
        help="command that runs otelog, e.g. `otelog` (default: python -m otelog.cli, run from "
        "this checkout)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for `otelog serve` (repeatable), e.g. --server-arg=--seal-rows=50000",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="data dir for the started server (must be empty or absent; kept afterwards); "
        "with --grpc, the running server's data dir, for bytes on disk",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    p.add_argument("--no-spans", action="store_true", help="do not send the traces' spans")
    p.add_argument("--tts-samples", type=int, default=200, help="time-to-searchable samples")
    p.add_argument("--tts-poll-ms", type=float, default=5.0, help="poll interval")
    p.add_argument("--tts-timeout", type=float, default=30.0, help="give up a sample after (s)")
    p.add_argument(
        "--tts-during-ingest",
        action="store_true",
        help="measure time to searchable while the ingest runs (default: after it)",
    )
    p.add_argument("--settle", type=float, default=3.0, help="seconds before measuring disk")
    p.add_argument("--query-runs", type=int, default=50, help="timed runs per query")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per query first")
    p.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to readyz")
    p.add_argument("--json", action="store_true", help="print only one JSON line to stdout")
    args = p.parse_args(argv)
    if (args.grpc is None) != (args.api is None):
        p.error("--grpc and --api go together")
    if args.records < 1 or args.clients < 1 or args.batch < 1:
        p.error("--records, --clients and --batch must be positive")
    if args.span_minutes <= 0 or args.span_minutes > 55:
        p.error("--span-minutes must be in (0, 55]: the queries look back 1 hour")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="otelog-bench-"))
    server: Server | None = None
    try:
        # a. pre-encode (not timed)
        span_ns = int(args.span_minutes * 60 * 10**9)
        start_ns = time.time_ns() - span_ns
        wl = Workload(args.records, args.batch, args.seed, start_ns, span_ns)
        log(f"pre-encoding {args.records:,} records in batches of {args.batch} ...")
        t0 = time.perf_counter()
        bodies = list(wl.log_requests())
        encode_s = time.perf_counter() - t0
        stats = wl.stats
        items = [args.batch] * len(bodies)
        items[-1] = args.records - args.batch * (len(bodies) - 1)
        span_bodies = [] if args.no_spans else list(wl.span_requests())
        span_items = [
            sum(
                len(ss.spans)
                for rs in ExportTraceServiceRequest.FromString(b).resource_spans
                for ss in rs.scope_spans
            )
            for b in span_bodies
        ]
        otlp_bytes = sum(len(b) for b in bodies)
        log(
            f"encoded {len(bodies):,} requests ({otlp_bytes / 1e6:,.1f} MB) in {encode_s:.1f} s "
            f"({args.records / encode_s:,.0f} records/s); {len(span_bodies)} span requests"
        )

        # the server
        if args.grpc:
            server = Server(args.grpc, args.api.rstrip("/"), args.data_dir, args.server_pid)
            server.wait_ready(args.startup_timeout)
        else:
            data_dir = args.data_dir or work / "data"
            if data_dir.exists() and any(data_dir.iterdir()):
                raise SystemExit(f"--data-dir {data_dir} is not empty")
            command = shlex.split(args.server_cmd) if args.server_cmd else default_server_command()
            server = Server.start(
                command, data_dir, work / "otelog.log", args.server_arg, args.startup_timeout
            )
        log(f"server ready: gRPC {server.grpc_target}, API {server.api_url}, pid {server.pid}")

        # b. ingest (c. time to searchable alongside, if asked)
        tts_box: list[TtsResult] = []
        tts_thread: threading.Thread | None = None

        def tts_job() -> None:
            assert server is not None
            tts_box.append(
                time_to_searchable(
                    server.grpc_target,
                    server.api_url,
                    args.tts_samples,
                    args.tts_poll_ms / 1000,
                    args.tts_timeout,
                )
            )

        if args.tts_during_ingest:
            tts_thread = threading.Thread(target=tts_job, daemon=True)
            tts_thread.start()
        log(f"ingesting over {args.clients} gRPC connections ...")
        ingest = send_all(
            server.grpc_target,
            bodies,
            items,
            args.clients,
            LOGS_EXPORT,
            ExportLogsServiceResponse,
            lambda r: int(r.partial_success.rejected_log_records),
            server,
        )
        log(
            f"ingested {ingest.items:,} records in {ingest.wall_s:.2f} s "
            f"({ingest.items / max(ingest.wall_s, 1e-9):,.0f}/s), errors {ingest.errors}"
            + (f" ({ingest.first_error})" if ingest.first_error else "")
        )
        del bodies
        idle_cpu: float | None = None
        idle_after_s: float | None = None
        if tts_thread is None and server.pid is not None:
            log("waiting for the server to go idle ...")
            idle_cpu, idle_after_s = wait_idle(server)
            log(f"  idle after {idle_after_s:.1f} s")
        spans: SendResult | None = None
        if span_bodies:
            spans = send_all(
                server.grpc_target,
                span_bodies,
                span_items,
                args.clients,
                TRACES_EXPORT,
                ExportTraceServiceResponse,
                lambda r: int(r.partial_success.rejected_spans),
                server,
            )
            log(f"sent {spans.items:,} spans in {spans.wall_s:.2f} s, errors {spans.errors}")

        # c. time to searchable (after the ingest unless done during it)
        if tts_thread is None:
            log(f"measuring time to searchable ({args.tts_samples} samples) ...")
            tts_job()
        else:
            log("waiting for the time-to-searchable samples ...")
            tts_thread.join()
        tts = tts_box[0]

        # d. bytes on disk
        disk_bytes = disk_alloc = disk_files = None
        if server.data_dir is not None:
            log(f"settling {args.settle:.0f} s before measuring the data dir ...")
            time.sleep(args.settle)
            disk_bytes, disk_alloc, disk_files = disk_usage(server.data_dir)

        # e. queries and their correctness
        age_min = (time.time_ns() - start_ns) / 60e9
        if age_min > 59:
            log(f"WARNING: the oldest records are {age_min:.0f} min old; 1h windows miss some")
        log(f"running queries ({args.warmup} warm-up + {args.query_runs} runs each) ...")
        queries = run_queries(server.api_url, stats, args, spans is not None)
        # f. report
        report = build_report(
            args, stats, encode_s, otlp_bytes, ingest, spans, tts, queries, server
        )
        if idle_cpu is not None and ingest.cpu_start is not None:
            cpu = idle_cpu - ingest.cpu_start
            report["ingest"].update(
                server_cpu_until_idle_s=cpu,
                idle_after_s=idle_after_s,
                records_per_cpu_s_until_idle=ingest.items / cpu if cpu > 0 else None,
            )
        report["disk"].update(
            bytes=disk_bytes,
            allocated_bytes=disk_alloc,
            files=disk_files,
            bytes_per_record=None if disk_bytes is None else disk_bytes / ingest.items,
            ratio_to_otlp=None if disk_bytes is None else disk_bytes / otlp_bytes,
        )
    finally:
        exit_code = server.stop() if server is not None else None
        if exit_code is not None:
            log(f"server stopped with exit code {exit_code}")
        after_stop = None
        if server is not None and server.proc is not None and server.data_dir is not None:
            after_stop = disk_usage(server.data_dir)[0]
        if args.keep_data or exit_code:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    assert server is not None
    if server.proc is not None:
        report["disk"]["bytes_after_stop"] = after_stop
        report["disk"]["bytes_per_record_after_stop"] = (
            None if after_stop is None else after_stop / ingest.items
        )
        report["checks"].append(
            {
                "name": "server stopped cleanly on SIGTERM",
                "expected": 0,
                "got": exit_code,
                "ok": exit_code == 0,
                "error": "" if exit_code == 0 else server.log_tail(5),
            }
        )
        report["ok"] = all(c["ok"] for c in report["checks"])
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    else:
        print_table(report)
        print(json.dumps(report, separators=(",", ":")))
    return 0 if report["ok"] else 1


def build_report(
    args: argparse.Namespace,
    stats: WorkloadStats,
    encode_s: float,
    otlp_bytes: int,
    ingest: SendResult,
    spans: SendResult | None,
    tts: TtsResult,
    queries: list[QueryResult],
    server: Server,
) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    for q in queries:
        ok = q.errors == 0 and q.mismatches == 0 and bool(q.latencies_ms)
        checks.append(
            {
                "name": q.name,
                "expected": q.expected,
                "got": q.got,
                "ok": ok,
                "runs_wrong": q.mismatches + q.errors,
                "error": q.first_error,
            }
        )
    requests_ok = ingest.errors == 0 and ingest.rejected == 0
    checks.append(
        {
            "name": "ingest accepted every record",
            "expected": ingest.items,
            "got": ingest.items - ingest.rejected - ingest.failed_items,
            "ok": requests_ok,
            "error": ingest.first_error,
        }
    )
    if spans is not None:
        checks.append(
            {
                "name": "spans accepted",
                "expected": spans.items,
                "got": spans.items - spans.rejected - spans.failed_items,
                "ok": spans.errors == 0 and spans.rejected == 0,
                "error": spans.first_error,
            }
        )
    checks.append(
        {
            "name": "time-to-searchable samples found",
            "expected": args.tts_samples,
            "got": len(tts.delays_ms),
            "ok": len(tts.delays_ms) == args.tts_samples,
            "error": tts.first_error,
        }
    )
    ingest_cores = (
        None if ingest.cpu_s is None or ingest.wall_s <= 0 else ingest.cpu_s / ingest.wall_s
    )
    return {
        "workload": {
            "records": stats.records,
            "requests": math.ceil(stats.records / args.batch),
            "batch": args.batch,
            "seed": args.seed,
            "span_minutes": args.span_minutes,
            "levels": {lv: stats.count(levels=(lv,)) for lv in LEVEL_NAMES},
            "traces": len(stats.traces),
            "spans": stats.span_count,
            "rare_count": stats.rare_count,
            "otlp_bytes_per_record": otlp_bytes / stats.records,
            "encode_s": encode_s,
            "encode_records_per_s": stats.records / encode_s if encode_s else None,
        },
        "ingest": {
            "clients": args.clients,
            "wall_s": ingest.wall_s,
            "records": ingest.items,
            "records_per_s": ingest.items / ingest.wall_s if ingest.wall_s else None,
            "mb_per_s": ingest.bytes / 1e6 / ingest.wall_s if ingest.wall_s else None,
            "server_cpu_s": ingest.cpu_s,
            "server_cores": ingest_cores,
            "records_per_cpu_s": ingest.items / ingest.cpu_s if ingest.cpu_s else None,
            "rejected": ingest.rejected,
            "retries": ingest.retries,
            "errors": ingest.errors,
        },
        "spans": None
        if spans is None
        else {
            "spans": spans.items,
            "wall_s": spans.wall_s,
            "spans_per_s": spans.items / spans.wall_s if spans.wall_s else None,
            "server_cpu_s": spans.cpu_s,
            "errors": spans.errors,
            "rejected": spans.rejected,
        },
        "tts": {
            "samples": args.tts_samples,
            "found": len(tts.delays_ms),
            "during_ingest": args.tts_during_ingest,
            "p50_ms": percentile(tts.delays_ms, 50),
            "p99_ms": percentile(tts.delays_ms, 99),
            "max_ms": max(tts.delays_ms, default=None),
            "mean_ms": sum(tts.delays_ms) / len(tts.delays_ms) if tts.delays_ms else None,
            "polls": tts.polls,
            "first_poll_hits": tts.first_poll_hits,
            "hit_poll_p50_ms": percentile(tts.hit_poll_ms, 50),
            "poll_errors": tts.poll_errors,
            "timeouts": tts.timeouts,
            "errors": tts.errors,
        },
        "disk": {"settle_s": args.settle if server.data_dir is not None else 0.0},
        "queries": {
            q.name: {
                "runs": len(q.latencies_ms),
                "errors": q.errors,
                "p50_ms": percentile(q.latencies_ms, 50),
                "p99_ms": percentile(q.latencies_ms, 99),
                "max_ms": max(q.latencies_ms, default=None),
                "query": q.detail,
            }
            for q in queries
        },
        "checks": checks,
        "ok": all(c["ok"] for c in checks),
    }


if __name__ == "__main__":
    sys.exit(main())
