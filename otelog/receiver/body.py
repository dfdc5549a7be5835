"""Reading an HTTP request body within limits, and decompressing it within limits.

Both caps are enforced while streaming, so neither a huge body nor a gzip bomb is ever
held in memory beyond the configured size.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable

import zstandard

from otelog.errors import InvalidArgument, PayloadTooLarge


async def read_capped(
    chunks: AsyncIterator[bytes],
    declared: str | None,
    cap: int,
    reserve: Callable[[int], None] | None = None,
) -> bytes:
    """The body, refused past `cap`; `reserve(bytes so far)` runs before each chunk is kept
    (it raises to refuse a body the ingest budget cannot hold, e.g. a chunked one)."""
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {cap} bytes")
    parts: list[bytes] = []
    n = 0
    async for chunk in chunks:
        n += len(chunk)
        if n > cap:
            raise PayloadTooLarge(f"request body exceeds the limit of {cap} bytes")
        if reserve is not None:
            reserve(n)
        parts.append(chunk)
    return b"".join(parts)


def decompress_capped(body: bytes, encoding: str, cap: int) -> bytes:
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, cap + 1)
        except zlib.error as e:
            raise InvalidArgument(f"invalid {enc} body: {e}") from None
        if len(out) > cap or d.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body exceeds the limit of {cap} bytes")
        if not d.eof:
            raise InvalidArgument(f"truncated {enc} body")
        if d.unused_data:
            raise InvalidArgument(f"unexpected bytes after the end of the {enc} stream")
        return out
    if enc == "zstd":
        return _zstd_capped(body, cap)
    raise InvalidArgument(f"unsupported Content-Encoding {encoding!r} (use gzip, zstd or none)")


def _zstd_capped(body: bytes, cap: int) -> bytes:
    """Every zstd frame of `body`, refusing output past `cap` and truncated frames.

    Input is fed in 1 KiB steps so one step cannot expand beyond ~45 MB (zstd's worst
    case ratio) before the cap is checked.
    """
    parts: list[bytes] = []
    n = 0
    data = memoryview(body)
    try:
        while len(data):
            d = zstandard.ZstdDecompressor().decompressobj()
            pos = 0
            while pos < len(data) and not d.eof:
                out = d.decompress(data[pos : pos + 1024])
                pos += 1024
                n += len(out)
                if n > cap:
                    raise PayloadTooLarge(f"decompressed body exceeds the limit of {cap} bytes")
                parts.append(out)
            if not d.eof:
                raise InvalidArgument("truncated zstd body")
            rest = d.unused_data + bytes(data[pos:]) if pos < len(data) else d.unused_data
            data = memoryview(rest)
    except zstandard.ZstdError as e:
        raise InvalidArgument(f"invalid zstd body: {e}") from None
    return b"".join(parts)
