"""Error types shared by every layer; each edge maps them to its protocol's status."""

from __future__ import annotations


class OtelogError(Exception):
    """Base of every error otelog raises on purpose."""


class QuerySyntaxError(OtelogError):
    def __init__(self, position: int, message: str) -> None:
        self.position = position
        self.message = message
        super().__init__(f"query syntax error at position {position}: {message}")


class InvalidArgument(OtelogError):
    """A caller's input that can never succeed as given (HTTP 400, gRPC INVALID_ARGUMENT)."""


class PayloadTooLarge(InvalidArgument):
    """A request body (compressed or decompressed) past the configured cap."""


class Overloaded(OtelogError):
    """Retryable refusal: the server sheds load; the client should retry after a delay."""

    def __init__(self, retry_after_s: float, message: str = "server overloaded") -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class StoreFormatError(OtelogError):
    """The data directory holds a format this build cannot open."""
