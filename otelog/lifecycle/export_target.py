"""Where an export's bytes go: one object in S3, or one file on the server's disk.

Both take the encoded chunks as an iterator and pull them as they can store them, so the
export is never whole in memory. Neither leaves a partial result behind: a local file is
written as `<name>.partial` and renamed once complete; an object is a multipart upload
that the minio client aborts when the chunks stop with an error (a cancel is one), and
`discard` removes whatever was stored.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, cast

from otelog.errors import InvalidArgument, OtelogError
from otelog.lifecycle.objstore import Destination, ObjectStore, ObjectStoreUnavailable

__all__ = ["ChunkReader", "ExportTarget", "LocalTarget", "S3Target", "target_for"]

log = logging.getLogger("otelog.export")

# minio's smallest part is 5 MiB; at 8 MiB an object may reach 80 GB (10,000 parts) while
# the client holds a few parts (it uploads three in parallel)
PART_SIZE = 8 << 20
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ExportTarget(Protocol):
    @property
    def location(self) -> str: ...

    def write(self, chunks: Iterator[bytes]) -> int:
        """Stores every chunk; returns the bytes stored. Raises what the chunks raise."""
        ...

    def discard(self) -> None:
        """Removes what `write` stored or began to store (best effort)."""
        ...


class ChunkReader:
    """A read()-able file over an iterator of chunks: what a multipart upload pulls from."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        # fill up to n: the client concatenates short reads with `+=`, copying each time
        while not self._eof and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._eof = True
        if n < 0 or n > len(self._buf):
            n = len(self._buf)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class LocalTarget:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._created = False

    @property
    def location(self) -> str:
        return str(self.path)

    @staticmethod
    def resolve(destination: str, name: str, root: str | None = None) -> LocalTarget:
        """A directory (the file is `name` in it) or a file path that does not exist yet.

        With `root` (the server's --export-dir) the path must lie inside it, symbolic links
        and `..` resolved, and a relative one is taken from it: an API caller must not be
        able to make the server write wherever its user can."""
        p = Path(destination)
        if root is not None:
            base = Path(root).resolve()
            p = (base / p).resolve() if not p.is_absolute() else p.resolve()
            if p != base and base not in p.parents:
                raise InvalidArgument(
                    f"destination: {destination!r} is outside the export directory {str(base)!r} "
                    "(--export-dir); use a path inside it or s3://bucket/prefix"
                )
        elif not p.is_absolute():
            raise InvalidArgument(
                f"destination: {destination!r} is neither s3://bucket/prefix nor an absolute path"
            )
        if p.is_dir():
            p = p / name
        elif destination.endswith("/"):
            raise InvalidArgument(f"destination: no such directory {destination!r}")
        if not p.parent.is_dir():
            raise InvalidArgument(f"destination: no such directory {str(p.parent)!r}")
        if p.exists():
            raise InvalidArgument(f"destination: {str(p)!r} already exists")
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise InvalidArgument(f"destination: the server cannot write to {str(p.parent)!r}")
        return LocalTarget(p)

    def write(self, chunks: Iterator[bytes]) -> int:
        n = 0
        # exclusive: a second export to the same file fails instead of interleaving
        with open(self.partial, "xb") as f:
            self._created = True
            for chunk in chunks:
                f.write(chunk)
                n += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if self.path.exists():
            raise FileExistsError(f"{self.path} appeared while the export ran")
        os.replace(self.partial, self.path)
        self._created = False
        return n

    def discard(self) -> None:
        if self._created:
            try:
                self.partial.unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot remove %s: %s", self.partial, e)


class S3Target:
    def __init__(self, objects: ObjectStore, bucket: str, key: str, part_size: int) -> None:
        self.objects = objects
        self.bucket = bucket
        self.key = key
        self.part_size = part_size

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def write(self, chunks: Iterator[bytes]) -> int:
        stream = cast(IO[bytes], ChunkReader(chunks))  # the client only calls read()
        try:
            return self.objects.put_stream(self.bucket, self.key, stream, self.part_size)
        except ObjectStoreUnavailable as e:
            raise ObjectStoreUnavailable(
                f"object storage unavailable, {self.location} not written: {e}"
            ) from e

    def discard(self) -> None:
        # an aborted multipart upload left nothing; a finished one (cancelled after its
        # last part) did
        try:
            self.objects.delete(self.bucket, [self.key])
        except OtelogError as e:
            log.warning("cannot remove %s: %s", self.location, e)


def target_for(
    destination: str,
    name: str,
    objects: ObjectStore | None,
    part_size: int = PART_SIZE,
    root: str | None = None,
) -> ExportTarget:
    """The target of a destination text, checked now so a bad one fails the request.
    `name` is the file or object name to use under a directory or prefix."""
    if destination.startswith("s3://"):
        dest = Destination.parse(destination)
        if not _BUCKET.fullmatch(dest.bucket):
            raise InvalidArgument(
                f"destination: {dest.bucket[:70]!r} is not a bucket name (3-63 of a-z 0-9 . -)"
            )
        if objects is None:
            raise InvalidArgument(
                "destination: s3:// exports need object storage; start the server with "
                "--s3-endpoint (and --s3-access-key, --s3-secret-key)"
            )
        return S3Target(objects, dest.bucket, dest.key(name), part_size)
    if "://" in destination:
        raise InvalidArgument(
            f"destination: {destination[:60]!r}: use s3://bucket/prefix or an absolute path"
        )
    return LocalTarget.resolve(destination, name, root)
