"""`GET /logs/stream`: the live tail as a plain WebSocket of JSON records.

    ws://host:8080/logs/stream?service=checkout&level=WARN&query=timeout&after=<logId>

One JSON object per message: `{log_id, timestamp, service, level, message, trace_id,
span_id, host, attributes}`, `timestamp` in RFC 3339 with nanoseconds. Every parameter is
optional and they are ANDed: `service` (repeatable: any of them), `level` (a minimum, as
in `/logs/search`: WARN means WARN, ERROR and FATAL), `query` (the query language),
`after` (a log_id: first every stored record after it, then live; see
otelog/api/tail.py). The server ends a stream with one last message `{"error": ...,
"code": ...}` and a close code: 1008 for a bad parameter, 1013 for a client too slow to
keep up (reconnect with `after` = the last log_id received), 1001 when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import QueryParams
from starlette.websockets import WebSocket, WebSocketDisconnect

from otelog.api.tail import (
    SubscriberTooSlow,
    TailClosed,
    TailError,
    TailHub,
    parse_cursor,
    parse_filter,
    tail_rows,
)
from otelog.errors import InvalidArgument, QuerySyntaxError
from otelog.model import log_id_str
from otelog.query.ast import And, Compare, MatchAll, Node, Or
from otelog.query.parser import parse
from otelog.query.shape import log_json
from otelog.store.cold import ColdUnavailable

CLOSE_BAD_REQUEST = 1008  # policy violation: the request can never succeed as sent
CLOSE_TOO_SLOW = 1013  # try again later
CLOSE_TRY_AGAIN_LATER = CLOSE_TOO_SLOW
CLOSE_GOING_AWAY = 1001


def _finite(v: Any) -> Any:
    """NaN and infinities (legal OTLP doubles) as strings: JSON has no literal for them."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def dumps(doc: dict[str, Any]) -> str:
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(doc), separators=(",", ":"))


def _level(value: str, op: str) -> Compare:
    # the query language's own level names and synonyms; anything but a word is refused
    # so that a parameter cannot smuggle in more query
    if not value.isalnum():
        raise InvalidArgument(f"unknown level {value!r}")
    node = parse(f"level{op}{value}")
    assert isinstance(node, Compare)
    return node


def stream_filter(params: QueryParams) -> Node:
    """The tail filter of the request's parameters. Raises QuerySyntaxError/InvalidArgument."""
    parts: list[Node] = []
    services = params.getlist("service")
    if services:
        cmp: list[Node] = [Compare("service", "=", s) for s in services]
        parts.append(cmp[0] if len(cmp) == 1 else Or(tuple(cmp)))
    if params.get("level"):
        parts.append(_level(params["level"], ">="))
    query = parse_filter(params.get("query", ""))
    if not isinstance(query, MatchAll):
        parts.append(query)
    if not parts:
        return MatchAll()
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def error_json(e: Exception) -> dict[str, Any]:
    if isinstance(e, QuerySyntaxError):
        return {"error": str(e), "code": "QUERY_SYNTAX", "position": e.position}
    if isinstance(e, SubscriberTooSlow):
        doc: dict[str, Any] = {"error": str(e), "code": "TAIL_TOO_SLOW", "dropped": e.dropped}
        if e.last_log_id is not None:
            doc["resume_after"] = log_id_str(e.last_log_id)
        return doc
    if isinstance(e, TailClosed):
        return {"error": str(e), "code": "SHUTTING_DOWN"}
    if isinstance(e, ColdUnavailable):
        return {
            "error": f"cold storage unavailable, retry later: {e}",
            "code": "COLD_STORAGE_UNAVAILABLE",
        }
    return {"error": str(e), "code": "BAD_ARGUMENT"}


def stream_endpoint(hub: TailHub) -> Callable[[WebSocket], Awaitable[None]]:
    async def logs_stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            node = stream_filter(ws.query_params)
            after = parse_cursor(ws.query_params.get("after"))
        except (QuerySyntaxError, InvalidArgument) as e:
            # after accept, not instead of it: a browser sees the reason only this way
            await _end(ws, e, CLOSE_BAD_REQUEST)
            return
        sender = asyncio.create_task(_send_records(ws, hub, node, after))
        # nothing is expected from the client, but reading is how its leaving is noticed:
        # without it a stream with a rare filter would hold its subscription forever
        watcher = asyncio.create_task(_until_disconnect(ws))
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sender, watcher):
                t.cancel()
            for t in (sender, watcher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    return logs_stream


async def _send_records(ws: WebSocket, hub: TailHub, node: Node, after: int | None) -> None:
    try:
        async with contextlib.aclosing(tail_rows(hub, node, after)) as rows:
            async for row in rows:
                await ws.send_text(dumps(log_json(row)))
    except TailError as e:
        code = CLOSE_GOING_AWAY if isinstance(e, TailClosed) else CLOSE_TOO_SLOW
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await _end(ws, e, code)
    except ColdUnavailable as e:
        # resuming from far back reads object storage, which is down: retry later
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await _end(ws, e, CLOSE_TRY_AGAIN_LATER)
    except (WebSocketDisconnect, OSError):
        pass  # the client left; uvicorn raises its ClientDisconnected, an OSError


async def _end(ws: WebSocket, e: Exception, code: int) -> None:
    await ws.send_text(dumps(error_json(e)))
    # the close reason is capped at 123 bytes by the protocol; the message has it all
    await ws.close(code, reason=str(e).encode()[:120].decode(errors="ignore"))


async def _until_disconnect(ws: WebSocket) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
