"""Opaque cursors for listings: a page of one DynamoDB query and where the next one starts.

A cursor is the query's LastEvaluatedKey as URL-safe base64 JSON. It is checked before use:
it must continue the same query (same partition), so a cursor taken from another corp's
listing cannot steer a query anywhere else.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, TypeVar

from pynamodb.pagination import ResultIterator

from scrm.platform.errors import Invalid

T = TypeVar("T")
MAX_LIMIT = 100


def page(query: Callable[..., ResultIterator[T]], hash_key: str, *, hash_attr: str = "PK", limit: int = 50,
         cursor: str | None = None, **query_args: Any) -> tuple[list[T], str | None]:
    """Run `query(hash_key, ...)` for at most `limit` items; (items, cursor of the rest or None).

    `hash_attr` names the partition attribute of the table or index queried (PK, GSI1PK...).
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"must be 1..{MAX_LIMIT}", "limit")
    results = query(hash_key, limit=limit, last_evaluated_key=_start_key(cursor, hash_attr, hash_key),
                    **query_args)
    items = list(results)
    last = results.last_evaluated_key
    return items, (_encode(last) if last else None)


def _encode(key: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _start_key(cursor: str | None, hash_attr: str, hash_key: str) -> dict | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise Invalid("not a cursor of this listing", "cursor") from None
    well_formed = isinstance(key, dict) and all(
        isinstance(v, dict) and list(v) == ["S"] and isinstance(v["S"], str) for v in key.values())
    if not well_formed or key.get(hash_attr) != {"S": hash_key}:
        raise Invalid("not a cursor of this listing", "cursor")
    return key
