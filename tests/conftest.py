"""Fixtures that start real otelog servers (subprocesses) and always stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OtelogProcess:
    """A running `otelog serve` on loopback ports, with helpers to talk to it."""

    data_dir: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 30.0) -> OtelogProcess:
        self.log_path = self.data_dir.parent / f"otelog-{self.api_port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otelog.cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--grpc-listen",
                self.grpc_endpoint,
                "--http-listen",
                f"127.0.0.1:{self.http_port}",
                "--api-listen",
                f"127.0.0.1:{self.api_port}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"otelog exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.api_url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"otelog did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        r = httpx.post(
            self.api_url + "/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.graphql(query, variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
def otelog_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[OtelogProcess] = []

    def make(data_dir: Path | None = None, extra_args: list[str] | None = None) -> OtelogProcess:
        p = OtelogProcess(data_dir or tmp_path / "data", extra_args=extra_args or [])
        started.append(p)
        return p.start()

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def otelog(otelog_factory: Any) -> OtelogProcess:
    """A fresh server with its own data dir."""
    server: OtelogProcess = otelog_factory()
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real S3 server (seaweedfs `weed mini`) for the whole session."""
    from s3server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield server
    finally:
        server.stop()
