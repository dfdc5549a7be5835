"""Load shedding under a 10x spike: the server's peak memory, the share of each level it
keeps, and the ingest rate at which shedding starts.

    python bench/spike.py                       # starts its own server with small bounds
    python bench/spike.py --base-rate 3000 --factor 10 --spike-seconds 10
    python bench/spike.py --server-arg=--max-pending-bytes=67108864

Requests are pre-encoded with bench/workload.py (10% DEBUG, 70% INFO, 12% WARN, 7% ERROR,
1% FATAL; 80% of records in traces) and sent over OTLP/gRPC by `--clients` threads on an
open-loop schedule (request i leaves at i x batch / rate). Clients behave: a request
refused with RESOURCE_EXHAUSTED is sent again after the server's RetryInfo delay, up to six
attempts, like the OTel SDKs. Open loop means every scheduled request is sent however late:
when the server (or the clients, on the same machine) cannot keep up, a phase lasts longer
than its seconds, and acked/s is over the real elapsed time.

1. Ramp: `--ramp` rates, `--ramp-seconds` each. Per step: records/s acknowledged, records
   sampled and requests refused (from /metrics), the highest `otelog_ingest_pressure`
   seen. Shedding starts at the first step that samples anything.
2. Spike: `--base-seconds` at `--base-rate`, `--spike-seconds` at `--factor` times that,
   then `--base-seconds` again. Per phase: peak RSS of the server process (VmHWM, reset
   to the current RSS at the start of each phase through /proc/<pid>/clear_refs; Python
   seldom hands freed memory back, so a phase starts from where the last one left it),
   and per level the records accepted and sampled (from /metrics), so the share kept.

The default server bounds are small (16 MiB queue, 32 MiB unsealed) so that one machine
running both the clients and the server reaches them; pass --server-arg to change them.
Progress goes to stderr, the figures to stdout (and one JSON line with --json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.rpc import error_details_pb2
from ingest_query import LOGS_EXPORT, MAX_MESSAGE, Server, log
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from prometheus_client.parser import text_string_to_metric_families
from workload import Workload

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
MAX_ATTEMPTS = 6  # as the OTel SDK exporters


@dataclass
class Phase:
    name: str
    rate: float  # records/s offered
    seconds: float
    acked_records: int = 0
    sent_requests: int = 0
    refusals: int = 0  # RESOURCE_EXHAUSTED answers, retried
    given_up: int = 0  # requests refused MAX_ATTEMPTS times
    rejected: int = 0  # partial success: sampled records
    elapsed: float = 0.0
    peak_rss_mib: float = 0.0
    max_pressure: float = 0.0
    accepted: Counter[str] = field(default_factory=Counter)
    sampled: Counter[str] = field(default_factory=Counter)
    refused_requests: float = 0.0

    def figures(self) -> dict[str, Any]:
        kept = {
            lv: round(self.accepted[lv] / (self.accepted[lv] + self.sampled[lv]), 3)
            for lv in LEVELS
            if self.accepted[lv] + self.sampled[lv]
        }
        return {
            "phase": self.name,
            "offered_records_per_s": round(self.rate),
            "acked_records_per_s": round(self.acked_records / self.elapsed) if self.elapsed else 0,
            "requests": self.sent_requests,
            "refusals_retried": self.refusals,
            "given_up": self.given_up,
            "refused_requests_metric": int(self.refused_requests),
            "sampled": sum(self.sampled.values()),
            "kept_share": kept,
            "max_pressure": round(self.max_pressure, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
        }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: str) -> Samples:
    text = httpx.get(api + "/metrics", timeout=10, trust_env=False).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def by_level(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> Counter[str]:
    out: Counter[str] = Counter()
    for (n, labels), v in samples.items():
        if n == name:
            out[dict(labels)["level"]] += int(v)
    return out


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def vm_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> None:
    """VmHWM back to the current RSS (Linux: "5" to clear_refs); best effort."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


class Sender:
    """Open-loop OTLP/gRPC sender: `clients` threads, one channel each."""

    def __init__(self, target: str, requests: list[bytes], batch: int, clients: int) -> None:
        self.requests = requests
        self.batch = batch
        self.clients = clients
        self.channels = [
            grpc.insecure_channel(
                target,
                options=[
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                ],
            )
            for _ in range(clients)
        ]
        self.next_request = 0

    def run(self, phase: Phase) -> None:
        lock = threading.Lock()
        counter = iter(range(1 << 62))
        t0 = time.monotonic()
        end = t0 + phase.seconds
        interval = self.batch / phase.rate

        def worker(ch: grpc.Channel) -> None:
            export = ch.unary_unary(LOGS_EXPORT)
            while True:
                with lock:
                    i = next(counter)
                    raw = self.requests[self.next_request % len(self.requests)]
                    self.next_request += 1
                due = t0 + i * interval
                if due >= end:
                    return
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                for _attempt in range(MAX_ATTEMPTS):
                    try:
                        resp = ExportLogsServiceResponse.FromString(export(raw, timeout=60))
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        md = dict(e.trailing_metadata() or ())
                        delay = 1.0
                        if "google.rpc.retryinfo-bin" in md:
                            info = error_details_pb2.RetryInfo.FromString(
                                md["google.rpc.retryinfo-bin"]
                            )
                            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
                        with lock:
                            phase.refusals += 1
                        time.sleep(delay)
                        continue
                    with lock:
                        phase.sent_requests += 1
                        phase.acked_records += self.batch
                        phase.rejected += resp.partial_success.rejected_log_records
                    break
                else:
                    with lock:
                        phase.given_up += 1

        threads = [threading.Thread(target=worker, args=(ch,)) for ch in self.channels]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        phase.elapsed = time.monotonic() - t0

    def close(self) -> None:
        for ch in self.channels:
            ch.close()


def run_phase(server: Server, sender: Sender, phase: Phase) -> Phase:
    assert server.pid is not None
    before = scrape(server.api_url)
    reset_peak(server.pid)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            try:
                s = scrape(server.api_url)
            except httpx.HTTPError:
                continue
            phase.max_pressure = max(phase.max_pressure, total(s, "otelog_ingest_pressure"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sender.run(phase)
    finally:
        done.set()
        watcher.join()
    after = scrape(server.api_url)
    phase.peak_rss_mib = vm_mib(server.pid, "VmHWM")
    phase.accepted = by_level(after, "otelog_log_records_accepted_total") - by_level(
        before, "otelog_log_records_accepted_total"
    )
    phase.sampled = by_level(after, "otelog_log_records_sampled_total") - by_level(
        before, "otelog_log_records_sampled_total"
    )
    phase.refused_requests = total(after, "otelog_requests_refused_total") - total(
        before, "otelog_requests_refused_total"
    )
    f = phase.figures()
    log(
        f"{phase.name}: offered {f['offered_records_per_s']}/s, acked "
        f"{f['acked_records_per_s']}/s, sampled {f['sampled']}, refusals {phase.refusals}, "
        f"pressure max {f['max_pressure']}, peak RSS {f['peak_rss_mib']} MiB"
    )
    return phase


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512, help="records per request")
    ap.add_argument("--distinct-requests", type=int, default=200, help="pre-encoded, cycled")
    ap.add_argument("--ramp", default="5000,10000,20000,40000,80000", help="records/s steps")
    ap.add_argument("--ramp-seconds", type=float, default=4.0)
    ap.add_argument(
        "--base-rate", type=float, default=0.0, help="0: a fifth of where shedding started"
    )
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--base-seconds", type=float, default=4.0)
    ap.add_argument("--spike-seconds", type=float, default=8.0)
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `otelog serve` argument (repeat)",
    )
    ap.add_argument("--json", action="store_true", help="print only one JSON line")
    args = ap.parse_args()

    t = time.perf_counter()
    wl = Workload(args.distinct_requests * args.batch, batch_size=args.batch, seed=1)
    requests = list(wl.log_requests())
    log(
        f"pre-encoded {len(requests)} requests of {args.batch} records "
        f"({sum(map(len, requests)) / len(requests) / args.batch:.0f} B/record) "
        f"in {time.perf_counter() - t:.1f} s"
    )
    server_args = [
        "--max-pending-bytes", str(16 << 20),
        "--max-unsealed-bytes", str(32 << 20),
        *args.server_arg,
    ]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="otelog-spike-"))
    server = Server.start(
        ["python", "-m", "otelog.cli"], tmp / "data", tmp / "otelog.log", server_args, 60
    )
    assert server.pid is not None
    idle_rss = vm_mib(server.pid, "VmRSS")
    sender = Sender(server.grpc_target, requests, args.batch, args.clients)
    results: dict[str, Any] = {"server_args": server_args, "idle_rss_mib": round(idle_rss, 1)}
    try:
        ramp = []
        shed_start: float | None = None
        for rate in (float(r) for r in args.ramp.split(",")):
            p = run_phase(server, sender, Phase(f"ramp {rate:.0f}/s", rate, args.ramp_seconds))
            ramp.append(p.figures())
            if p.sampled and shed_start is None:
                shed_start = min(rate, p.acked_records / p.elapsed)
                break
            time.sleep(2)  # let the backlog drain between steps
        results["ramp"] = ramp
        results["shedding_starts_at_records_per_s"] = shed_start
        base = args.base_rate or (shed_start or float(args.ramp.split(",")[-1])) / 5
        time.sleep(3)
        spike = []
        for name, rate, secs in (
            ("base", base, args.base_seconds),
            (f"spike x{args.factor:g}", base * args.factor, args.spike_seconds),
            ("after", base, args.base_seconds),
        ):
            spike.append(run_phase(server, sender, Phase(name, rate, secs)).figures())
        results["spike"] = spike
    finally:
        sender.close()
        results["exit_code"] = server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(results))
        return 0
    print(f"server args: {' '.join(server_args)}; idle RSS {idle_rss:.0f} MiB")
    print(f"ingest rate at which shedding starts: {shed_start or 'not reached'} records/s")
    head = f"{'phase':<14}{'offered/s':>10}{'acked/s':>10}{'refused':>9}{'sampled':>9}"
    head += f"{'pressure':>9}{'peak MiB':>9}  kept share per level"
    print(head)
    for f in [*results["ramp"], *results["spike"]]:
        kept = " ".join(f"{lv}={v:.0%}" for lv, v in f["kept_share"].items())
        print(
            f"{f['phase']:<14}{f['offered_records_per_s']:>10}{f['acked_records_per_s']:>10}"
            f"{f['refusals_retried']:>9}{f['sampled']:>9}{f['max_pressure']:>9}"
            f"{f['peak_rss_mib']:>9}  {kept}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
