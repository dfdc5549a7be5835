"""Export jobs: a query's records streamed as CSV, JSON lines or Parquet to S3 or a file.

    job = exports.start(ExportRequest("level>=ERROR", ExportFormat.CSV, "s3://b/errors/"))
    exports.job(job.id)     # state, total, written, bytes; RUNNING -> SUCCEEDED | FAILED |
    exports.cancel(job.id)  #   CANCELLED

`start` checks everything a caller can get wrong (the query, the window, the format, the
destination) before answering, so a bad request fails at once and a job only fails for
reasons of the world (S3 down, a full disk). Each job then runs in its own thread over one
snapshot of the store: the total is known before the first byte (`Searcher.matches`),
rows are decoded a page at a time oldest first (otelog/query/ordered.py), encoded
(export_format.py) and pulled by the target (export_target.py), so memory is bounded
whatever the size of the result.

Job records live in the `meta` column family (`exp/` keys, storage/FORMAT.md): written
synced when a job starts and ends, and about once a second while it runs. A job found
RUNNING when the server starts was cut short by a crash: it becomes FAILED.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from otelog.errors import OtelogError, Overloaded
from otelog.lifecycle.export_format import ExportFormat, encode
from otelog.lifecycle.export_target import PART_SIZE, ExportTarget, target_for
from otelog.lifecycle.objstore import ObjectStore
from otelog.model import DEFAULT_TENANT
from otelog.query.ast import Node
from otelog.query.ordered import match_count, ordered_rows
from otelog.query.plan import TimeWindow
from otelog.query.rows import LogRow
from otelog.query.service import QueryService
from otelog.store import format as fmt
from otelog.store.store import Store

__all__ = [
    "ExportFormat",
    "ExportJob",
    "ExportManager",
    "ExportNotFound",
    "ExportRequest",
    "ExportState",
]

log = logging.getLogger("otelog.export")

RESTARTED = "interrupted by a restart"
SHUT_DOWN = "interrupted by a server shutdown"


class ExportState(enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ExportNotFound(OtelogError):
    pass


@dataclass(frozen=True)
class ExportRequest:
    query: str
    format: ExportFormat
    destination: str
    since: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None


@dataclass
class ExportJob:
    id: str
    tenant: str
    query: str
    format: ExportFormat
    destination: str
    state: ExportState
    started_at: int  # ns
    since: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    total: int | None = None  # None until the matches are counted
    written: int = 0  # records encoded and handed to the target
    nbytes: int = 0  # bytes encoded; once SUCCEEDED, the bytes stored
    finished_at: int | None = None
    error: str | None = None
    location: str | None = None  # where the result is (while RUNNING: where it goes)

    @property
    def progress(self) -> float | None:
        if self.state is ExportState.SUCCEEDED:
            return 1.0
        if self.total is None:
            return None
        return min(1.0, self.written / self.total) if self.total else 1.0

    def encode(self) -> bytes:
        d = dataclasses.asdict(self)
        d["format"], d["state"] = self.format.name, self.state.value
        d["v"] = 1
        return json.dumps(d, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> ExportJob:
        d = json.loads(data)
        d.pop("v", None)
        d["format"] = ExportFormat[d["format"]]
        d["state"] = ExportState(d["state"])
        return ExportJob(**d)


class _Stop(Exception):
    """Raised between chunks when a job is cancelled or the server stops."""


@dataclass
class _Run:
    job: ExportJob
    stop: threading.Event
    thread: threading.Thread | None = None
    reason: ExportState = ExportState.CANCELLED  # what a stop means: CANCELLED or FAILED
    error: str | None = None


class ExportManager:
    def __init__(
        self,
        store: Store,
        queries: QueryService,
        objects: ObjectStore | None = None,
        *,
        max_running: int = 4,
        max_kept: int = 1000,
        page_rows: int = 4096,
        part_size: int = PART_SIZE,
        persist_interval_s: float = 1.0,
        clock: Callable[[], int] = time.time_ns,
        on_progress: Callable[[ExportJob], None] | None = None,
        export_root: str | None = None,
    ) -> None:
        self.store = store
        self.queries = queries
        self.objects = objects
        self.max_running = max_running
        self.max_kept = max_kept
        self.page_rows = page_rows
        self.part_size = part_size
        self.persist_interval_s = persist_interval_s
        self.clock = clock
        # called in the job's thread after every chunk (and may block it: tests use that)
        self.on_progress = on_progress
        # local destinations must lie inside it (None: any absolute path; library use)
        self.export_root = export_root
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], ExportJob] = {}
        self._runs: dict[tuple[str, str], _Run] = {}
        self._closed = False
        self._load()

    # ---- records

    def _load(self) -> None:
        db = self.store.db
        interrupted: list[ExportJob] = []
        for key, value in db.scan_prefix(fmt.CF_META, fmt.export_prefix()):
            tenant, job_id = fmt.parse_export_key(key)
            try:
                job = ExportJob.decode(value)
            except (ValueError, KeyError, TypeError) as e:
                log.error("export job %s of tenant %s not loaded: %s", job_id, tenant, e)
                continue
            if job.state is ExportState.RUNNING:
                job.state, job.error = ExportState.FAILED, RESTARTED
                job.finished_at, job.location = self.clock(), None
                interrupted.append(job)
            self._jobs[(tenant, job_id)] = job
        for job in interrupted:
            self._remove_partial(job)
            self._persist(job, sync=True)
        self._prune()

    def _prune(self) -> None:
        """Forgets the oldest finished jobs past `max_kept`: records are not kept forever."""
        with self._lock:
            finished = sorted((k for k in self._jobs if k not in self._runs), key=lambda k: k[1])
            drop = finished[: max(0, len(self._jobs) - self.max_kept)]
            for k in drop:
                del self._jobs[k]
        if drop:
            db = self.store.db
            wb = db.batch()
            for tenant, job_id in drop:
                db.delete(wb, fmt.CF_META, fmt.export_key(tenant, job_id))
            db.write(wb, sync=False)

    def _remove_partial(self, job: ExportJob) -> None:
        """The `.partial` file a crash left. (A multipart upload a crash cut short is no
        object; its parts stay on the server until its own clean-up of stale uploads.)"""
        if job.destination.startswith("s3://"):
            return
        final = Path(job.location or job.destination)
        if job.location is None and final.is_dir():  # a record from before `location`
            final = final / f"{job.id}.{job.format.extension}"
        path = final.with_name(final.name + ".partial")
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot remove %s: %s", path, e)

    def _persist(self, job: ExportJob, sync: bool) -> None:
        db = self.store.db
        wb = db.batch()
        with self._lock:
            value = job.encode()
        db.put(wb, fmt.CF_META, fmt.export_key(job.tenant, job.id), value)
        db.write(wb, sync=sync)

    # ---- the API

    def start(self, req: ExportRequest, tenant: str = DEFAULT_TENANT) -> ExportJob:
        """Checks the request and starts the job. Raises QuerySyntaxError,
        InvalidArgument or Overloaded (too many exports running)."""
        node = self.queries.compile(req.query)
        now = self.clock()
        window = self.queries.window(req.since, req.start_ns, req.end_ns, now)
        job_id = f"{now // 1_000_000:012x}{secrets.randbits(16):04x}"  # sorts by start time
        target = target_for(
            req.destination,
            f"{job_id}.{req.format.extension}",
            self.objects,
            self.part_size,
            self.export_root,
        )
        job = ExportJob(
            id=job_id,
            tenant=tenant,
            query=req.query,
            format=req.format,
            destination=req.destination,
            state=ExportState.RUNNING,
            started_at=now,
            since=req.since,
            start_ns=req.start_ns,
            end_ns=req.end_ns,
            location=target.location,
        )
        run = _Run(job, threading.Event())
        with self._lock:
            if self._closed:
                raise Overloaded(5.0, "the server is shutting down")
            running = len(self._runs)
            if running >= self.max_running:
                raise Overloaded(
                    5.0, f"{running} exports are running; wait for one to end or cancel one"
                )
            self._jobs[(tenant, job_id)] = job
            self._runs[(tenant, job_id)] = run
        self._persist(job, sync=True)
        self._prune()
        run.thread = threading.Thread(
            target=self._run,
            args=(run, node, now, window, target),
            name=f"export-{job_id}",
            daemon=True,
        )
        run.thread.start()
        return self._copy(job)

    def job(self, job_id: str, tenant: str = DEFAULT_TENANT) -> ExportJob | None:
        with self._lock:
            job = self._jobs.get((tenant, job_id))
            return dataclasses.replace(job) if job is not None else None

    def jobs(
        self, tenant: str = DEFAULT_TENANT, state: ExportState | None = None
    ) -> list[ExportJob]:
        """Newest first."""
        with self._lock:
            out = [
                dataclasses.replace(j)
                for (t, _), j in self._jobs.items()
                if t == tenant and (state is None or j.state is state)
            ]
        return sorted(out, key=lambda j: j.id, reverse=True)

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT, wait_s: float = 10.0) -> ExportJob:
        """Stops a running job and removes what it wrote; waits up to `wait_s` for it to
        end. A finished job is returned as it is."""
        with self._lock:
            if (tenant, job_id) not in self._jobs:
                raise ExportNotFound(f"no export job with id {job_id!r}")
            run = self._runs.get((tenant, job_id))
        if run is not None:
            run.stop.set()
            if run.thread is not None and wait_s > 0:
                run.thread.join(wait_s)
        found = self.job(job_id, tenant)
        assert found is not None
        return found

    def close(self, timeout_s: float = 10.0) -> None:
        """Stops every running job (each ends FAILED, partial output removed)."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
        for run in runs:
            run.reason, run.error = ExportState.FAILED, SHUT_DOWN
            run.stop.set()
        deadline = time.monotonic() + timeout_s
        for run in runs:
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.monotonic()))

    # ---- the job

    def _copy(self, job: ExportJob) -> ExportJob:
        with self._lock:
            return dataclasses.replace(job)

    def _pages(self, run: _Run, pages: Iterator[list[LogRow]]) -> Iterator[list[LogRow]]:
        job = run.job
        for page in pages:
            if run.stop.is_set():
                raise _Stop
            with self._lock:
                job.written += len(page)
            yield page

    def _counted(self, run: _Run, chunks: Iterator[bytes]) -> Iterator[bytes]:
        job = run.job
        last = time.monotonic()
        for data in chunks:
            with self._lock:
                job.nbytes += len(data)
            if self.on_progress is not None:
                self.on_progress(self._copy(job))
            if run.stop.is_set():
                raise _Stop
            now = time.monotonic()
            if now - last >= self.persist_interval_s:
                last = now
                self._persist(job, sync=False)
            if data:
                yield data

    def _run(
        self, run: _Run, node: Node, now_ns: int, window: TimeWindow, target: ExportTarget
    ) -> None:
        job = run.job
        state, error, stored = ExportState.FAILED, None, None
        try:
            searcher = self.queries.searcher(job.tenant)
            matches = searcher.matches(node, now_ns, window)
            with self._lock:
                job.total = match_count(matches)
            self._persist(job, sync=False)
            if run.stop.is_set():
                raise _Stop
            pages = self._pages(run, ordered_rows(searcher, matches, self.page_rows))
            stored = target.write(self._counted(run, encode(job.format, pages)))
            if run.stop.is_set():
                raise _Stop
            state = ExportState.SUCCEEDED
        except _Stop:
            state, error = run.reason, run.error
        except (OtelogError, OSError) as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - a job's bug must not kill the server
            log.exception("export %s failed", job.id)
            error = f"internal error: {type(e).__name__}: {e}"
        if state is not ExportState.SUCCEEDED and run.stop.is_set():
            # cancelled, even if the target's clean-up raised its own error meanwhile
            state, error = run.reason, run.error
        if state is not ExportState.SUCCEEDED:
            target.discard()
        with self._lock:
            job.state, job.error = state, error
            job.finished_at = self.clock()
            if stored is not None:
                job.nbytes = stored
            if state is not ExportState.SUCCEEDED:
                job.location = None
            self._runs.pop((job.tenant, job.id), None)
        try:
            self._persist(job, sync=True)
        except Exception:  # noqa: BLE001 - the store is closing; the state is in memory
            log.exception("export %s: cannot store its final state", job.id)
        log.info(
            "export %s %s: %d of %s records, %d bytes%s",
            job.id,
            state.value,
            job.written,
            job.total,
            job.nbytes,
            f" ({error})" if error else "",
        )
