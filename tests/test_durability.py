"""Durability and start-up: acknowledged records survive kill -9 and SIGTERM, exactly once;
a server that cannot take its port or read its data dir says so and exits non-zero.

The load is raw OTLP/gRPC from concurrent clients. Every record has a unique body
`rec-<run>-<client>-<n>` and an attribute `chunk` shared by ten consecutive requests of one
client (5000 records; the servers allow pages that large), so the check lists each chunk
in one query, without page tokens, and sees both a missing record and one stored twice.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from conftest import OtelogProcess, free_port
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from rocksdict import Options, Rdict

CLIENTS = 4
RECORDS_PER_REQUEST = 100
REQUESTS_PER_CHUNK = 50  # 5000 records: one query page
CHUNK_RECORDS = REQUESTS_PER_CHUNK * RECORDS_PER_REQUEST
# servers whose records are checked allow pages of a whole chunk
SERVER_ARGS = ["--query-max-limit", str(CHUNK_RECORDS)]
SERVICE = "durability"

Factory = Callable[..., OtelogProcess]


# ---- load


@dataclass
class Client:
    """One sending thread: request k holds records n = k*100 .. k*100+99."""

    run: str
    cid: int
    endpoint: str
    attempted: int = 0  # requests sent (the last one may be unacknowledged)
    acked: list[int] = field(default_factory=list)  # request numbers that returned OK
    error: str | None = None  # what ended the loop

    def chunk(self, k: int) -> str:
        return f"{self.run}c{self.cid}k{k // REQUESTS_PER_CHUNK}"

    def body(self, n: int) -> str:
        return f"rec-{self.run}-{self.cid}-{n}"

    def request(self, k: int) -> ExportLogsServiceRequest:
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=SERVICE))
        rl.resource.attributes.add(key="host.name", value=AnyValue(string_value="loadgen"))
        sl = rl.scope_logs.add()
        now = time.time_ns()
        chunk = AnyValue(string_value=self.chunk(k))
        for i in range(RECORDS_PER_REQUEST):
            n = k * RECORDS_PER_REQUEST + i
            lr = sl.log_records.add(
                time_unix_nano=now + i,
                severity_number=9 + (i % 3) * 4,
                body=AnyValue(string_value=self.body(n)),
            )
            lr.attributes.add(key="client", value=AnyValue(int_value=self.cid))
            lr.attributes.add(key="chunk", value=chunk)
            lr.attributes.add(key="n", value=AnyValue(int_value=n))
        return req

    def run_until_error(self, stop: threading.Event) -> None:
        with grpc.insecure_channel(self.endpoint) as channel:
            stub = LogsServiceStub(channel)
            k = 0
            while not stop.is_set():
                req = self.request(k)
                self.attempted = k + 1
                try:
                    stub.Export(req, timeout=15)
                except grpc.RpcError as e:
                    code = e.code() if isinstance(e, grpc.Call) else None
                    self.error = f"request {k}: {code}"
                    return
                self.acked.append(k)
                k += 1
            self.error = "stopped"


def send_until(
    server: OtelogProcess, run: str, seconds: float, interrupt: Callable[[], Any]
) -> list[Client]:
    """CLIENTS threads send as fast as they can; after `seconds`, `interrupt()` runs while
    they are still sending, then the threads are collected."""
    clients = [Client(run, c, server.grpc_endpoint) for c in range(CLIENTS)]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run_until_error, args=(stop,)) for c in clients]
    for t in threads:
        t.start()
    try:
        time.sleep(seconds)
        for c in clients:
            assert c.error is None, (
                f"client {c.cid} stopped early: {c.error}\n{server.log()[-3000:]}"
            )
            assert c.acked, f"client {c.cid} had nothing acknowledged\n{server.log()[-3000:]}"
        interrupt()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return clients


# ---- verification


def chunk_bodies(server: OtelogProcess, chunk: str) -> list[str]:
    page = server.data(
        "query($q: String!, $n: Int!) { logs(query: $q, limit: $n) { total records { body } } }",
        {"q": f"attributes.chunk={chunk}", "n": CHUNK_RECORDS},
    )["logs"]
    bodies = [r["body"] for r in page["records"]]
    sent = CHUNK_RECORDS
    assert page["total"] <= sent, f"chunk {chunk}: {page['total']} records, {sent} were sent"
    assert page["total"] == len(bodies), (chunk, page["total"], len(bodies))
    return bodies


def assert_acknowledged_exactly_once(server: OtelogProcess, clients: list[Client]) -> int:
    """Every acknowledged record is there once; others at most once. Returns the count."""
    found = 0
    for c in clients:
        requests = range(c.attempted)
        acked = set(c.acked)
        for first in range(0, c.attempted, REQUESTS_PER_CHUNK):
            chunk = c.chunk(first)
            bodies = chunk_bodies(server, chunk)
            seen = Counter(bodies)
            twice = sorted(b for b, k in seen.items() if k > 1)
            assert not twice, f"stored more than once: {twice[:5]} ({len(twice)} in {chunk})"
            ks = [k for k in requests if c.chunk(k) == chunk]
            sent = {
                c.body(k * RECORDS_PER_REQUEST + i) for k in ks for i in range(RECORDS_PER_REQUEST)
            }
            strays = sorted(set(bodies) - sent)
            assert not strays, f"records never sent in {chunk}: {strays[:5]}"
            want = {
                c.body(k * RECORDS_PER_REQUEST + i)
                for k in ks
                if k in acked
                for i in range(RECORDS_PER_REQUEST)
            }
            lost = sorted(want - set(bodies))
            assert not lost, (
                f"acknowledged but lost: {len(lost)} records of {chunk}, e.g. {lost[:5]}"
            )
            found += len(bodies)
    return found


def assert_nothing_else_stored(server: OtelogProcess, expected_total: int) -> None:
    total = server.data('{ logs(query: "", limit: 0) { total } }')["logs"]["total"]
    assert total == expected_total, f"{total} records stored, {expected_total} accounted for"


# ---- kill -9 and SIGTERM


def test_acknowledged_records_survive_kill_9_exactly_once_over_two_crashes(
    otelog_factory: Factory,
) -> None:
    server = otelog_factory(extra_args=SERVER_ARGS)
    data_dir = server.data_dir
    runs: list[Client] = []
    for cycle in range(2):
        clients = send_until(server, f"k{cycle}", 2.5, server.kill9)
        for c in clients:
            # each client was cut off by the crash, not by the end of the test
            assert c.error is not None and c.error != "stopped", (c.cid, c.error)
        runs.extend(clients)
        server = otelog_factory(data_dir=data_dir, extra_args=SERVER_ARGS)
        acked = sum(len(c.acked) for c in runs) * RECORDS_PER_REQUEST
        found = assert_acknowledged_exactly_once(server, runs)
        assert found >= acked
        assert_nothing_else_stored(server, found)


def test_sigterm_while_clients_send_exits_0_and_keeps_every_acknowledged_record(
    otelog_factory: Factory,
) -> None:
    server = otelog_factory(extra_args=SERVER_ARGS)
    codes: list[int | None] = []
    clients = send_until(server, "term", 1.5, lambda: codes.append(server.stop(signal.SIGTERM)))
    assert codes == [0], f"exit code {codes}\n{server.log()[-3000:]}"
    assert "Traceback" not in server.log(), server.log()[-5000:]
    restarted = otelog_factory(data_dir=server.data_dir, extra_args=SERVER_ARGS)
    found = assert_acknowledged_exactly_once(restarted, clients)
    assert found >= sum(len(c.acked) for c in clients) * RECORDS_PER_REQUEST
    assert_nothing_else_stored(restarted, found)


def test_sigterm_on_an_idle_server_exits_0_promptly(otelog: OtelogProcess) -> None:
    t0 = time.monotonic()
    assert otelog.stop(signal.SIGTERM) == 0, otelog.log()[-3000:]
    assert time.monotonic() - t0 < 10


def test_records_acknowledged_then_cleanly_restarted_are_there_once(
    otelog_factory: Factory,
) -> None:
    """Acknowledged, sealed or not, then a restart: each record once, none replayed twice."""
    server = otelog_factory(extra_args=SERVER_ARGS)
    client = Client("clean", 0, server.grpc_endpoint)
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        stub = LogsServiceStub(channel)
        for k in range(3):
            stub.Export(client.request(k), timeout=15)
            client.acked.append(k)
            client.attempted = k + 1
            if k == 0:
                time.sleep(1.0)  # sealed into a segment; the later ones stay in the WAL
    server.kill9()
    for _ in range(2):
        server = otelog_factory(data_dir=server.data_dir, extra_args=SERVER_ARGS)
        found = assert_acknowledged_exactly_once(server, [client])
        assert found == 3 * RECORDS_PER_REQUEST
        assert_nothing_else_stored(server, found)
        assert server.stop(signal.SIGTERM) == 0


# ---- start-up failures


def serve_command(data_dir: Path, grpc_port: int, http_port: int, api_port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "otelog.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--grpc-listen",
        f"127.0.0.1:{grpc_port}",
        "--http-listen",
        f"127.0.0.1:{http_port}",
        "--api-listen",
        f"127.0.0.1:{api_port}",
    ]


def run_serve(
    data_dir: Path, grpc_port: int, http_port: int, api_port: int
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(data_dir, grpc_port, http_port, api_port),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_expecting_refusal(
    data_dir: Path, output: Path, extra_args: list[str] | None = None
) -> tuple[int | None, str]:
    """Start `otelog serve`; (exit code, output) once it exits, or (None, output) as soon
    as it reports ready instead (then it is stopped)."""
    api_port = free_port()
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [*serve_command(data_dir, free_port(), free_port(), api_port), *(extra_args or [])],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    finally:
        code = proc.poll()
        if code is None:
            _stop(proc)
    return code, output.read_text(errors="replace")


@pytest.mark.parametrize("taken", ["grpc", "http", "api"])
def test_second_server_on_a_taken_port_exits_non_zero_naming_the_port(
    otelog_factory: Factory, tmp_path: Path, taken: str
) -> None:
    otelog = otelog_factory(extra_args=SERVER_ARGS)
    ports = {"grpc": free_port(), "http": free_port(), "api": free_port()}
    ports[taken] = {"grpc": otelog.grpc_port, "http": otelog.http_port, "api": otelog.api_port}[
        taken
    ]
    result = run_serve(tmp_path / "second", ports["grpc"], ports["http"], ports["api"])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert str(ports[taken]) in output, output
    assert "Traceback" not in output, output
    # the first server still owns its ports and answers on them
    assert httpx.get(otelog.api_url + "/healthz", timeout=10).status_code == 200
    client = Client(f"port{taken}", 0, otelog.grpc_endpoint)
    with grpc.insecure_channel(otelog.grpc_endpoint) as channel:
        LogsServiceStub(channel).Export(client.request(0), timeout=15)
    client.acked, client.attempted = [0], 1
    assert assert_acknowledged_exactly_once(otelog, [client]) == RECORDS_PER_REQUEST


def test_port_taken_by_another_program_exits_non_zero_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        result = run_serve(tmp_path / "data", port, free_port(), free_port())
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert str(port) in output, output
    assert "Traceback" not in output, output


def _regular_file(path: Path) -> None:
    path.write_text("this is not a database\n")


def _foreign_rocksdb_with_column_families(path: Path) -> None:
    db = Rdict(str(path), options=Options(raw_mode=True))
    users = db.create_column_family("users", Options(raw_mode=True))
    users.put(b"alice", b"admin")
    db.put(b"schema", b"app-v3")
    del users
    db.close()


def _foreign_rocksdb_default_column_family(path: Path) -> None:
    db = Rdict(str(path), options=Options(raw_mode=True))
    for i in range(10):
        db.put(f"order/{i}".encode(), b"{}")
    db.close()


def _otelog_store_of_a_future_format(path: Path) -> None:
    proc = OtelogProcess(path).start()
    assert proc.stop(signal.SIGTERM) == 0, proc.log()
    db = Rdict(str(path), options=Options(raw_mode=True))
    meta = db.get_column_family("meta")
    assert meta.get(b"format", None) is not None, "the store has no format marker to overwrite"
    meta.put(b"format", b"otelog-store/99")
    del meta
    db.close()


def _snapshot(path: Path) -> Any:
    """What a refusal must leave untouched: the file, or the column families and keys."""
    if path.is_file():
        return path.read_bytes()
    names = sorted(Rdict.list_cf(str(path), Options(raw_mode=True)))
    db = Rdict(str(path), options=Options(raw_mode=True))
    try:
        out: dict[str, list[tuple[Any, Any]]] = {}
        for name in names:
            cf = db.get_column_family(name)
            out[name] = [(k, v) for k, v in cf.items()]
            del cf
        return out
    finally:
        db.close()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_regular_file, ""),
        (_foreign_rocksdb_with_column_families, ""),
        (_foreign_rocksdb_default_column_family, ""),
        (_otelog_store_of_a_future_format, "format"),
    ],
    ids=["regular-file", "foreign-rocksdb", "foreign-rocksdb-default-cf", "future-format"],
)
def test_data_dir_of_an_unknown_format_exits_non_zero_with_a_clear_message(
    tmp_path: Path, make: Callable[[Path], None], says: str
) -> None:
    data_dir = tmp_path / "data"
    make(data_dir)
    before = _snapshot(data_dir)
    code, output = serve_expecting_refusal(data_dir, tmp_path / "serve.out")
    assert code is not None, f"otelog started serving a data dir it cannot read:\n{output}"
    assert code != 0, output
    assert str(data_dir) in output, output
    assert says in output, output
    assert "Traceback" not in output, output
    assert _snapshot(data_dir) == before, "the refused data dir was modified"
