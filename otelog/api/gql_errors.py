"""otelog's errors as GraphQL errors, one table for every resolver.

A caller's mistake or a passing condition becomes an error with an `extensions.code`
(and the position of a query syntax error); anything else is a bug and is left to raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from graphql import GraphQLError

from otelog.errors import InvalidArgument, QuerySyntaxError
from otelog.store.cold import ColdUnavailable

_T = TypeVar("_T")
Translate = Callable[[Exception], GraphQLError | None]


def graphql_error(e: Exception) -> GraphQLError | None:
    if isinstance(e, QuerySyntaxError):
        return GraphQLError(str(e), extensions={"code": "QUERY_SYNTAX", "position": e.position})
    if isinstance(e, InvalidArgument):
        return GraphQLError(str(e), extensions={"code": "BAD_ARGUMENT"})
    if isinstance(e, ColdUnavailable):
        return GraphQLError(
            f"cold storage unavailable, retry later: {e}",
            extensions={"code": "COLD_STORAGE_UNAVAILABLE"},
        )
    return None


async def in_thread(
    fn: Callable[..., _T],
    *args: Any,
    timeout: float | None = None,
    translate: Translate | None = None,
) -> _T:
    """Blocking store work off the event loop; otelog's errors become GraphQL errors
    (`translate` first, for a module's own ones)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
    except TimeoutError:
        raise GraphQLError(
            f"query timed out after {timeout:g} s; narrow the time range",
            extensions={"code": "TIMEOUT"},
        ) from None
    except Exception as e:
        err = (translate(e) if translate else None) or graphql_error(e)
        if err is None:
            raise
        raise err from None
