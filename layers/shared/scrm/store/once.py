"""Exactly-once effects.

An effect (a coupon, a welcome record, a fact added to the daily figures) is written in one
DynamoDB transaction together with a marker item keyed by what caused it. The marker's
condition (`attribute_not_exists`) fails on every later attempt, which cancels the whole
transaction: however often the cause arrives, the effect lands once.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from scrm.store import keys
from scrm.store.models import Once

ONCE_TTL_SECONDS = 400 * 24 * 3600
_FAILED = "ConditionalCheckFailed"

Write = Callable[[TransactWrite], None]

_connection: Connection | None = None


def connection() -> Connection:
    global _connection
    if _connection is None:
        _connection = Connection(region=Once.Meta.region)
    return _connection


def forget_connection() -> None:
    """For the local stack and tests, when the DynamoDB endpoint changes."""
    global _connection
    _connection = None


def run_once(corp_id: str, effect: str, key: str, writes: list[Write], cause: str | None = None,
             now: float | None = None) -> bool:
    """Apply `writes` and the marker atomically; False (and nothing written) if done before."""
    now = time.time() if now is None else now
    pk, sk = keys.once(corp_id, effect, key)
    marker = Once(pk, sk, effect=effect, done_at=int(now), cause=cause,
                  expires_at=int(now) + ONCE_TTL_SECONDS)
    try:
        with TransactWrite(connection=connection()) as tx:
            tx.save(marker, condition=Once.PK.does_not_exist())
            for write in writes:
                write(tx)
    except TransactWriteError as err:
        reasons = err.cancellation_reasons or []
        if reasons and reasons[0] is not None and reasons[0].code == _FAILED:
            return False
        raise
    return True


def run_each_once(causes: Sequence[tuple[str, str, str]], updates: Sequence[Write], *, ttl_seconds: int,
                  now: float | None = None) -> list[int]:
    """Several causes' markers, each (corp_id, effect, key), and `updates` in one transaction.

    Returns [] once everything is written. If some markers exist already nothing is written
    and their positions in `causes` are returned: the caller drops those causes and tries
    again with the rest. `updates` must be updates (PynamoDB sends puts first, so the
    markers' cancellation reasons come first, in order); any other failure is raised."""
    now = time.time() if now is None else now
    try:
        with TransactWrite(connection=connection()) as tx:
            for corp_id, effect, key in causes:
                pk, sk = keys.once(corp_id, effect, key)
                tx.save(Once(pk, sk, effect=effect, done_at=int(now), expires_at=int(now) + ttl_seconds),
                        condition=Once.PK.does_not_exist())
            for update in updates:
                update(tx)
    except TransactWriteError as err:
        reasons = (err.cancellation_reasons or [])[:len(causes)]
        done = [i for i, reason in enumerate(reasons) if reason is not None and reason.code == _FAILED]
        if done:
            return done
        raise
    return []
