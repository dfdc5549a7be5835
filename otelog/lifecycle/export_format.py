"""Export encodings: pages of log rows in, chunks of bytes out (CSV, JSON lines, Parquet).

Pure: no I/O. Each encoder is a generator of chunks of bytes, so a target pulls them as
it can store them; memory holds one page (CSV, JSON lines) or one row group (Parquet) of
records at a time.

JSON lines carry the REST record (`otelog.query.shape.log_json`). CSV and Parquet carry one
flat table with the resource too; their `attributes` and `resource` are JSON text, so any
attribute shape fits one column.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from otelog.model import log_id_str
from otelog.query.rows import LogRow
from otelog.query.shape import json_safe, log_json, rfc3339

__all__ = ["COLUMNS", "PARQUET_SCHEMA", "ExportFormat", "encode"]

COLUMNS = (
    "log_id",
    "timestamp",
    "service",
    "level",
    "host",
    "trace_id",
    "span_id",
    "message",
    "attributes",
    "resource",
)
PARQUET_SCHEMA = pa.schema(
    [
        pa.field("log_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("service", pa.string(), nullable=False),
        pa.field("level", pa.string(), nullable=False),
        pa.field("host", pa.string()),
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("message", pa.string(), nullable=False),
        pa.field("attributes", pa.string(), nullable=False),
        pa.field("resource", pa.string(), nullable=False),
    ]
)
ROW_GROUP_ROWS = 65_536


class ExportFormat(enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"

    @property
    def extension(self) -> str:
        return self.value

    @staticmethod
    def parse(text: str) -> ExportFormat:
        try:
            return ExportFormat[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown format {text[:40]!r}; use CSV, JSONL or PARQUET") from None


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _json(v: Any) -> str:
    # compact and UTF-8 as is: exports are for machines, and \u escapes only add bytes
    try:
        return _dumps(v)
    except ValueError:  # NaN or an infinity: as strings, as the JSON records have them
        return _dumps(json_safe(v))


class _Flat:
    """Rows as the flat tuple of COLUMNS (timestamp in ns). A resource is shared by many
    rows: its JSON is made once."""

    def __init__(self) -> None:
        self._resources: dict[bytes, str] = {}

    def __call__(self, r: LogRow) -> tuple[str, int, str, str, str, str, str, str, str, str]:
        res = self._resources.get(r.resource_pb)
        if res is None:
            if len(self._resources) > 10_000:
                self._resources.clear()
            res = self._resources[r.resource_pb] = _json(r.resource())
        return (
            log_id_str(r.log_id),
            r.ts,
            r.service,
            r.level_name,
            r.host,
            r.trace_id,
            r.span_id,
            r.body,
            _json(r.attributes()),
            res,
        )


def _csv(pages: Iterable[list[LogRow]]) -> Iterator[bytes]:
    buf = io.StringIO()
    # RFC 4180 line ends; a message with newlines stays one quoted field
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(COLUMNS)
    flat = _Flat()
    for page in pages:
        for r in page:
            f = flat(r)
            out.writerow((f[0], rfc3339(f[1]), *f[2:]))
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def _json_line(r: LogRow) -> str:
    try:
        return _dumps(log_json(r, strict=False)) + "\n"
    except ValueError:  # NaN or an infinity among the attributes
        return _dumps(log_json(r)) + "\n"


def _jsonl(pages: Iterable[list[LogRow]]) -> Iterator[bytes]:
    for page in pages:
        text = "".join(_json_line(r) for r in page)
        yield text.encode()


class _Drain:
    """The file ParquetWriter writes to: bytes accumulate until the generator takes them."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.closed = False

    def write(self, b: bytes) -> int:
        self.buf += b
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _record_batch(page: list[LogRow], flat: _Flat) -> pa.RecordBatch:
    cols = list(zip(*(flat(r) for r in page), strict=True))
    return pa.record_batch(
        [
            pa.array(cols[0], pa.string()),
            pa.array(cols[1], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            pa.array(cols[2], pa.string()),
            pa.array(cols[3], pa.string()),
            # absent host and ids are nulls, as in the JSON shape
            pa.array([v or None for v in cols[4]], pa.string()),
            pa.array([v or None for v in cols[5]], pa.string()),
            pa.array([v or None for v in cols[6]], pa.string()),
            pa.array(cols[7], pa.string()),
            pa.array(cols[8], pa.string()),
            pa.array(cols[9], pa.string()),
        ],
        schema=PARQUET_SCHEMA,
    )


def _parquet(
    pages: Iterable[list[LogRow]], row_group_rows: int = ROW_GROUP_ROWS
) -> Iterator[bytes]:
    sink = _Drain()
    writer = pq.ParquetWriter(sink, PARQUET_SCHEMA, compression="zstd")
    held = pa.Table.from_batches([], schema=PARQUET_SCHEMA)
    flat = _Flat()
    try:
        for page in pages:
            if not page:
                continue
            held = pa.concat_tables([held, pa.Table.from_batches([_record_batch(page, flat)])])
            # row groups of exactly row_group_rows (the last one excepted): readers size
            # their buffers by them
            while held.num_rows >= row_group_rows:
                writer.write_table(held.slice(0, row_group_rows), row_group_size=row_group_rows)
                held = held.slice(row_group_rows)
                yield sink.take()
        if held.num_rows:
            writer.write_table(held, row_group_size=held.num_rows)
            yield sink.take()
    finally:
        # the footer; on an abandoned export it is written to a buffer nobody reads
        writer.close()
    yield sink.take()


def encode(
    fmt: ExportFormat, pages: Iterable[list[LogRow]], row_group_rows: int = ROW_GROUP_ROWS
) -> Iterator[bytes]:
    """Chunks of bytes that, concatenated, are the file."""
    if fmt is ExportFormat.CSV:
        return _csv(pages)
    if fmt is ExportFormat.JSONL:
        return _jsonl(pages)
    return _parquet(pages, row_group_rows)
