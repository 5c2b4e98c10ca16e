"""Exactly-once effects.

An effect (a counter bump, a coupon, a welcome record) is written in one DynamoDB
transaction together with a marker item keyed by what caused it. The marker's condition
(`attribute_not_exists`) fails on every later attempt, which cancels the whole
transaction: however often the cause arrives, the effect lands once.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from scrm.platform.config import business_day
from scrm.store import keys
from scrm.store.models import DailyCounter, Once

ONCE_TTL_SECONDS = 400 * 24 * 3600
COUNTER_METRICS = ("new_customers", "lost_customers", "deleted_customers", "welcomes_sent",
                   "coupons_issued", "coupons_redeemed")

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
        if reasons and reasons[0] is not None and reasons[0].code == "ConditionalCheckFailed":
            return False
        raise
    return True


def bump(corp_id: str, scope: str, scope_id: str, day: str, metric: str, by: int = 1) -> Write:
    """A daily counter increment, to be applied inside run_once."""
    if metric not in COUNTER_METRICS:
        raise ValueError(f"unknown counter metric {metric!r}")
    pk, sk = keys.daily_counter(corp_id, scope, scope_id, day)

    def write(tx: TransactWrite) -> None:
        tx.update(
            DailyCounter(pk, sk),
            actions=[
                getattr(DailyCounter, metric).add(by),
                DailyCounter.entity.set(DailyCounter),
                DailyCounter.scope.set(scope),
                DailyCounter.scope_id.set(scope_id),
                DailyCounter.day.set(day),
                DailyCounter.GSI1PK.set(keys.daily_ranking(corp_id, scope, day)),
                DailyCounter.GSI1SK.set(scope_id),
            ],
        )

    return write


def count_once(corp_id: str, cause_key: str, metric: str, scopes: dict[str, str], at: float) -> bool:
    """Bump `metric` for each (scope -> id) on the business day of `at`, once per cause."""
    day = business_day(at)
    writes = [bump(corp_id, scope, scope_id, day, metric) for scope, scope_id in scopes.items() if scope_id]
    return run_once(corp_id, f"count:{metric}", cause_key, writes, cause=cause_key)


def counters(corp_id: str, scope: str, scope_id: str, day: str) -> dict[str, int]:
    pk, sk = keys.daily_counter(corp_id, scope, scope_id, day)
    try:
        row = DailyCounter.get(pk, sk, consistent_read=True)
    except DailyCounter.DoesNotExist:
        return {m: 0 for m in COUNTER_METRICS}
    return {m: int(getattr(row, m) or 0) for m in COUNTER_METRICS}
