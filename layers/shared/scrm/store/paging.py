"""Opaque cursors for listings: a page of one DynamoDB query and where the next one starts.

A cursor is the query's LastEvaluatedKey as URL-safe base64 JSON. It is checked before use:
it must continue the same query (same partition), so a cursor taken from another corp's
listing cannot steer a query anywhere else, and it must have exactly the key attributes of
the table or index queried, each a non-empty string. A cursor made by hand that passes all
that and still does not fit the query (DynamoDB: "the provided starting key is invalid" or
"outside query boundaries") is refused the same way: every bad cursor is a 400, never a 500.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, TypeVar

from pynamodb.exceptions import QueryError
from pynamodb.pagination import ResultIterator

from scrm.platform.errors import Malformed

T = TypeVar("T")
MAX_LIMIT = 100
KEY_MAX = 1024  # bytes: DynamoDB's limit for a sort key (and far above any key this table writes)
_NOT_A_CURSOR = "not a cursor of this listing"


def page(query: Callable[..., ResultIterator[T]], hash_key: str, *, hash_attr: str = "PK", limit: int = 50,
         cursor: str | None = None, **query_args: Any) -> tuple[list[T], str | None]:
    """Run `query(hash_key, ...)` for at most `limit` items; (items, cursor of the rest or None).

    `hash_attr` names the partition attribute of the table or index queried (PK, GSI1PK...).
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Malformed(f"must be 1..{MAX_LIMIT}", "limit")
    start = _start_key(cursor, hash_attr, hash_key)
    results = query(hash_key, limit=limit, last_evaluated_key=start, **query_args)
    try:
        items = list(results)
    except QueryError as err:
        if start is not None and getattr(err, "cause_response_code", None) == "ValidationException":
            raise Malformed(_NOT_A_CURSOR, "cursor") from None
        raise
    last = results.last_evaluated_key
    return items, (_encode(last) if last else None)


def _encode(key: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _key_attributes(hash_attr: str) -> set[str]:
    """The attributes of a LastEvaluatedKey: the table's keys, plus the index's (GSI1PK -> GSI1SK)."""
    return {"PK", "SK", hash_attr, hash_attr.removesuffix("PK") + "SK"}


def _start_key(cursor: str | None, hash_attr: str, hash_key: str) -> dict | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise Malformed(_NOT_A_CURSOR, "cursor") from None
    well_formed = isinstance(key, dict) and set(key) == _key_attributes(hash_attr) and all(
        isinstance(v, dict) and list(v) == ["S"] and isinstance(v["S"], str) and 0 < len(v["S"].encode()) <= KEY_MAX
        for v in key.values())
    if not well_formed or key.get(hash_attr) != {"S": hash_key}:
        raise Malformed(_NOT_A_CURSOR, "cursor")
    return key
