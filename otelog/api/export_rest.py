"""REST for export jobs: start one, follow it, cancel it.

    POST   /logs/export  {"query": "level>=ERROR", "format": "csv",
                          "destination": "s3://bucket/prefix" | "/abs/path",
                          "since": "2h", "from": RFC 3339, "to": RFC 3339}
           -> 202 {"job_id": "...", "status": "RUNNING", ...}  | 400 | 429
    GET    /logs/export          -> {"exports": [job, ...]}   (newest first)
    GET    /logs/export/{id}     -> job                        | 404
    DELETE /logs/export/{id}     -> job, once stopped          | 404

A job: `job_id`, `status` (RUNNING, SUCCEEDED, FAILED, CANCELLED), `query`, `format`,
`destination`, `total` (null until counted), `written`, `bytes`, `progress` (0..1),
`started_at`, `finished_at`, `error`, `location` (the object or file of the result).
The fields and their meaning are GraphQL's `ExportJob` (otelog/api/export_schema.py).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otelog.api.rest import parse_rfc3339_ns
from otelog.errors import InvalidArgument, Overloaded, QuerySyntaxError
from otelog.lifecycle.export import (
    ExportFormat,
    ExportJob,
    ExportManager,
    ExportNotFound,
    ExportRequest,
)
from otelog.query.shape import rfc3339

__all__ = ["job_json", "routes"]

MAX_BODY = 1 << 20
_FIELDS = frozenset(("query", "format", "destination", "since", "from", "to"))


def job_json(j: ExportJob) -> dict[str, Any]:
    return {
        "job_id": j.id,
        "status": j.state.value,
        "query": j.query,
        "format": j.format.name,
        "destination": j.destination,
        "total": j.total,
        "written": j.written,
        "bytes": j.nbytes,
        "progress": j.progress,
        "started_at": rfc3339(j.started_at),
        "finished_at": rfc3339(j.finished_at) if j.finished_at is not None else None,
        "error": j.error,
        "location": j.location,
    }


def _error(status: int, message: str, **extra: Any) -> Response:
    headers = extra.pop("headers", None)
    return JSONResponse({"error": message, **extra}, status, headers=headers)


def _text(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = body.get(key)
    if v is None:
        if required:
            raise InvalidArgument(f"{key}: required, a string")
        return None
    if not isinstance(v, str):
        raise InvalidArgument(f"{key}: expected a string")
    return v


def _time(body: dict[str, Any], key: str) -> int | None:
    v = _text(body, key)
    if v is None:
        return None
    try:
        return parse_rfc3339_ns(v)
    except (ValueError, OverflowError) as e:
        raise InvalidArgument(f"{key}: {e}") from None


def request_from_json(body: object) -> ExportRequest:
    if not isinstance(body, dict):
        raise InvalidArgument("body: expected a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidArgument(f"{unknown[0]}: unknown field; expected {', '.join(sorted(_FIELDS))}")
    fmt_text = _text(body, "format", required=True)
    assert fmt_text is not None
    try:
        fmt = ExportFormat.parse(fmt_text)
    except ValueError as e:
        raise InvalidArgument(f"format: {e}") from None
    destination = _text(body, "destination", required=True)
    assert destination is not None
    return ExportRequest(
        query=_text(body, "query") or "",
        format=fmt,
        destination=destination,
        since=_text(body, "since"),
        start_ns=_time(body, "from"),
        end_ns=_time(body, "to"),
    )


def routes(manager: ExportManager) -> list[Route]:
    async def start(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, f"request body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, bad UTF-8, nested too deep
            return _error(400, "body: not valid JSON")
        try:
            req = request_from_json(body)
            job = await asyncio.to_thread(manager.start, req)
        except QuerySyntaxError as e:
            return _error(400, f"query: {e}", position=e.position)
        except InvalidArgument as e:
            return _error(400, str(e))
        except Overloaded as e:
            retry = str(max(1, math.ceil(e.retry_after_s)))
            return _error(429, str(e), headers={"Retry-After": retry})
        return JSONResponse(job_json(job), 202)

    async def list_jobs(request: Request) -> Response:
        return JSONResponse({"exports": [job_json(j) for j in manager.jobs()]})

    async def get_job(request: Request) -> Response:
        job = manager.job(request.path_params["job_id"])
        if job is None:
            return _error(404, f"no export job with id {request.path_params['job_id']!r}")
        return JSONResponse(job_json(job))

    async def cancel_job(request: Request) -> Response:
        try:
            job = await asyncio.to_thread(manager.cancel, request.path_params["job_id"])
        except ExportNotFound as e:
            return _error(404, str(e))
        return JSONResponse(job_json(job))

    return [
        Route("/logs/export", start, methods=["POST"]),
        Route("/logs/export", list_jobs, methods=["GET"]),
        Route("/logs/export/{job_id}", get_job, methods=["GET"]),
        Route("/logs/export/{job_id}", cancel_job, methods=["DELETE"]),
    ]
