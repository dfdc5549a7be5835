"""Cold segments: one self-contained object per segment in object storage.

Layout (all integers little-endian):

    b"OTLGSEG1" | u32 header length | header | data

The header is zstd-compressed JSON: the segment's meta, a table of its columns
(name -> [offset, length] into data) and a sparse index of its postings. Postings are
sorted by term and listed in pages of `PAGE_TERMS` entries; each page (zstd, in data)
holds `u16 term length | term | u32 offset | u32 length` per posting, and the header
keeps each page's first term. So a cold query fetches the header once, then one index
page and one posting value per term it needs, then only the blocks holding its rows:
a segment of a million rows with as many trace ids keeps a header of a few tens of KiB.
Columns are stored as they are in RocksDB (already zstd); posting values longer than
`COMPRESS_MIN` bytes are zstd-compressed (flag in the length's top bit).

A `ColdSource` answers the `get`/`get_many` a `SegmentReader` makes, from the object's
byte ranges through a bounded on-disk cache, so query code reads hot and cold alike.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from otelog.errors import OtelogError
from otelog.store import format as fmt
from otelog.store.segment import SegmentMeta, SegmentReader

MAGIC = b"OTLGSEG1"
PAGE_TERMS = 512
COMPRESS_MIN = 64
HEAD_BYTES = 1 << 16  # the first read: magic, header, and all of a small object
_ZFLAG = 1 << 31
_U32 = struct.Struct("<I")
_ENTRY = struct.Struct("<II")


class ColdUnavailable(OtelogError):
    """Cold data cannot be read now (no object storage configured, or it is down)."""


class Fetcher(Protocol):
    """What a cold source needs of object storage (otelog/lifecycle/objstore.py)."""

    def get(self, bucket: str, key: str, offset: int = 0, length: int = 0) -> bytes: ...


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// object: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


# ---- encoding


def encode_object(
    meta: SegmentMeta, columns: dict[bytes, bytes], postings: dict[bytes, bytes]
) -> bytes:
    """The object of a segment: `columns` by column name (+ block), `postings` by term."""
    data = bytearray()
    col_table: dict[str, list[int]] = {}
    for name, value in columns.items():
        col_table[name.hex()] = [len(data), len(value)]
        data += value
    entries: list[tuple[bytes, int, int]] = []
    for term in sorted(postings):
        v = postings[term]
        flag = 0
        if len(v) > COMPRESS_MIN and v[:1] != fmt.POSTING_SAME_AS:
            v = fmt.compress(v)
            flag = _ZFLAG
        entries.append((term, len(data), len(v) | flag))
        data += v
    pages: list[list[object]] = []
    for i in range(0, len(entries), PAGE_TERMS):
        chunk = entries[i : i + PAGE_TERMS]
        page = b"".join(
            struct.pack("<H", len(t)) + t + _ENTRY.pack(off, ln) for t, off, ln in chunk
        )
        packed = fmt.compress(page)
        pages.append([chunk[0][0].hex(), len(data), len(packed)])
        data += packed
    m = asdict(meta)
    m["cold"] = ""
    header = fmt.compress(json.dumps({"meta": m, "columns": col_table, "pages": pages}).encode(), 9)
    return MAGIC + _U32.pack(len(header)) + header + bytes(data)


def _parse_page(page: bytes) -> tuple[list[bytes], list[tuple[int, int]]]:
    terms: list[bytes] = []
    locs: list[tuple[int, int]] = []
    o = 0
    while o < len(page):
        n = struct.unpack_from("<H", page, o)[0]
        o += 2
        terms.append(page[o : o + n])
        o += n
        locs.append(_ENTRY.unpack_from(page, o))
        o += _ENTRY.size
    return terms, locs


# ---- the local cache of fetched ranges


class DiskCache:
    """Byte ranges of cold objects on local disk, least recently used out first."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        for p in sorted(self.dir.iterdir(), key=lambda p: p.stat().st_atime):
            if p.suffix == ".tmp":
                p.unlink(missing_ok=True)
                continue
            size = p.stat().st_size
            self._files[p.name] = size
            self.bytes += size

    @staticmethod
    def _name(uri: str, offset: int, length: int) -> str:
        return f"{hashlib.sha1(uri.encode()).hexdigest()}-{offset}-{length}"

    def get(self, uri: str, offset: int, length: int) -> bytes | None:
        name = self._name(uri, offset, length)
        with self._lock:
            if name not in self._files:
                self.misses += 1
                return None
            self._files.move_to_end(name)
            self.hits += 1
        try:
            return (self.dir / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, uri: str, offset: int, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        name = self._name(uri, offset, len(data))
        tmp = self.dir / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / name)
        with self._lock:
            if name not in self._files:
                self._files[name] = len(data)
                self.bytes += len(data)
            evict = []
            while self.bytes > self.max_bytes and self._files:
                old, size = self._files.popitem(last=False)
                self.bytes -= size
                evict.append(old)
        for old in evict:
            (self.dir / old).unlink(missing_ok=True)

    def forget(self, uri: str) -> int:
        """Drop every cached range of `uri` (its object was rewritten or deleted)."""
        stem = hashlib.sha1(uri.encode()).hexdigest() + "-"
        with self._lock:
            names = [n for n in self._files if n.startswith(stem)]
            for n in names:
                self.bytes -= self._files.pop(n)
        for n in names:
            (self.dir / n).unlink(missing_ok=True)
        return len(names)


# ---- reading


class ColdAccess:
    """How cold sources reach object storage; set once the lifecycle has a client, so
    segments opened before it (at start) share it. Counts what it fetched."""

    def __init__(self, fetcher: Fetcher | None = None, cache: DiskCache | None = None) -> None:
        self.fetcher = fetcher
        self.cache = cache
        self.fetches = 0
        self.fetched_bytes = 0


class ColdSource:
    """Quacks like `Database` for one segment's keys, reading its object's ranges."""

    def __init__(self, uri: str, size: int, access: ColdAccess) -> None:
        self.uri = uri
        self.size = size
        self.access = access
        self._whole: bytes | None = None
        self._head: bytes | None = None  # the first HEAD_BYTES of the object
        self._lock = threading.Lock()
        self._loaded = False  # header parsed: columns and page index below are set
        self._data_base = 0
        self._columns: dict[bytes, tuple[int, int]] = {}
        self._page_first: list[bytes] = []
        self._page_loc: list[tuple[int, int]] = []
        self._pages: OrderedDict[int, tuple[list[bytes], list[tuple[int, int]]]] = OrderedDict()

    @staticmethod
    def of_bytes(uri: str, data: bytes) -> ColdSource:
        """A source over an object already in memory (a rewrite downloads it whole)."""
        src = ColdSource(uri, len(data), ColdAccess())
        src._whole = data
        return src

    def _fetch(self, offset: int, length: int) -> bytes:
        if self._whole is not None:
            return self._whole[offset : offset + length]
        head = self._head
        if head is not None and offset + length <= len(head):
            # inside the first read (all of a small object): no second request
            return head[offset : offset + length]
        cache, fetcher = self.access.cache, self.access.fetcher
        if cache is not None:
            hit = cache.get(self.uri, offset, length)
            if hit is not None:
                return hit
        if fetcher is None:
            raise ColdUnavailable(f"{self.uri}: no object storage is configured")
        bucket, key = split_uri(self.uri)
        data = fetcher.get(bucket, key, offset, length)
        self.access.fetches += 1
        self.access.fetched_bytes += len(data)
        if cache is not None:
            cache.put(self.uri, offset, data)
        return data

    def _load_header(self) -> None:
        with self._lock:
            if self._loaded:
                return
            head = self._fetch(0, min(self.size, HEAD_BYTES))
            self._head = head
            if head[:8] != MAGIC:
                raise ValueError(f"{self.uri}: not an otelog segment object")
            hlen = _U32.unpack_from(head, 8)[0]
            if 12 + hlen > len(head):
                head = self._fetch(0, 12 + hlen)
            header = json.loads(fmt.decompress(head[12 : 12 + hlen]))
            self._data_base = 12 + hlen
            self._columns = {
                bytes.fromhex(k): (int(v[0]), int(v[1])) for k, v in header["columns"].items()
            }
            self._page_first = [bytes.fromhex(p[0]) for p in header["pages"]]
            self._page_loc = [(int(p[1]), int(p[2])) for p in header["pages"]]
            self._loaded = True

    def forget(self) -> None:
        """Drop what is held in memory (header, first bytes, index pages): the next read
        goes to the disk cache or object storage again."""
        with self._lock:
            self._loaded = False
            self._head = None
            self._pages.clear()

    def _page(self, i: int) -> tuple[list[bytes], list[tuple[int, int]]]:
        with self._lock:
            page = self._pages.get(i)
            if page is not None:
                self._pages.move_to_end(i)
                return page
        off, ln = self._page_loc[i]
        page = _parse_page(fmt.decompress(self._fetch(self._data_base + off, ln)))
        with self._lock:
            self._pages[i] = page
            while len(self._pages) > 64:
                self._pages.popitem(last=False)
        return page

    def _posting(self, term: bytes) -> bytes | None:
        self._load_header()
        i = bisect.bisect_right(self._page_first, term) - 1
        if i < 0:
            return None
        terms, locs = self._page(i)
        j = bisect.bisect_left(terms, term)
        if j == len(terms) or terms[j] != term:
            return None
        off, ln = locs[j]
        raw = self._fetch(self._data_base + off, ln & ~_ZFLAG)
        return fmt.decompress(raw) if ln & _ZFLAG else raw

    def _column(self, name: bytes) -> bytes | None:
        self._load_header()
        loc = self._columns.get(name)
        if loc is None:
            return None
        return self._fetch(self._data_base + loc[0], loc[1])

    def terms(self) -> Iterator[bytes]:
        self._load_header()
        for i in range(len(self._page_loc)):
            yield from self._page(i)[0]

    # the Database surface a SegmentReader uses; keys are the hot keys of the segment

    def get(self, cf: str, key: bytes) -> bytes | None:
        if cf == fmt.CF_COLS:
            # tenant prefix | u64 segment id | column name [| u32 block]
            return self._column(key[1 + key[0] + 8 :])
        if cf == fmt.CF_POST:
            # tenant prefix | u16 term length | term | u64 segment id
            o = 1 + key[0]
            n = struct.unpack_from(">H", key, o)[0]
            return self._posting(key[o + 2 : o + 2 + n])
        return None

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(cf, k) for k in keys]


class ColdSegmentReader(SegmentReader):
    """A sealed segment whose bytes are in object storage."""

    def __init__(self, source: ColdSource, meta: SegmentMeta) -> None:
        super().__init__(source, meta)
        self.source = source

    def terms(self) -> list[bytes]:
        return list(self.source.terms())


def object_of_segment(
    seg: SegmentReader, as_meta: SegmentMeta | None = None, terms: list[bytes] | None = None
) -> bytes:
    """Every column and posting of a segment (hot or cold) as one cold object, described
    by `as_meta` (the id the copy will have) when given; `terms`: the segment's, when the
    caller has them already."""
    m = seg.meta
    prefix = fmt.segment_columns_prefix(m.tenant, m.id)
    columns: dict[bytes, bytes] = {}
    names = [fmt.COL_TS, fmt.COL_LID, fmt.COL_LEVEL, fmt.COL_RES, fmt.COL_RESOURCES]
    keys = [fmt.column_key(m.tenant, m.id, n) for n in names]
    keys += [fmt.column_key(m.tenant, m.id, fmt.COL_RECS, b) for b in range(m.blocks)]
    for key, value in zip(keys, seg.db.get_many(fmt.CF_COLS, keys), strict=True):
        if value is None:
            raise KeyError(f"segment {m.id:x} lost column {key[len(prefix) :]!r}")
        columns[key[len(prefix) :]] = value
    terms = seg.terms() if terms is None else terms
    pkeys = [fmt.posting_key(m.tenant, t, m.id) for t in terms]
    postings: dict[bytes, bytes] = {}
    for t, v in zip(terms, seg.db.get_many(fmt.CF_POST, pkeys), strict=True):
        if v is not None:
            postings[t] = v
    return encode_object(as_meta or m, columns, postings)
