"""Raw OTLP/gRPC ingest rate against a running server: 8 threads, pre-encoded requests.

python bench/raw_ingest.py 127.0.0.1:4317 500000
"""

from __future__ import annotations

import sys
import threading
import time

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

sys.path.insert(0, "bench")
import workload  # noqa: E402

METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def main() -> None:
    target, n = sys.argv[1], int(sys.argv[2])
    reqs = list(workload.generate_requests(n, 512, seed=2))
    print(f"encoded {len(reqs)} requests", flush=True)
    idx = [0]
    lock = threading.Lock()

    def worker() -> None:
        ch = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        call = ch.unary_unary(
            METHOD,
            request_serializer=None,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        while True:
            with lock:
                if idx[0] >= len(reqs):
                    return
                r = reqs[idx[0]]
                idx[0] += 1
            call(r, timeout=60)

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    el = time.time() - t0
    print(f"{n / el:,.0f} records/s in {el:.1f} s", flush=True)


if __name__ == "__main__":
    main()
