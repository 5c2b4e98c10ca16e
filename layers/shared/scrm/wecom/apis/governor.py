"""The rate governor: one budget per corp and WeCom API, shared by every worker of the fleet.

WeCom allows a corp at most 10,000 calls a minute and 150,000 an hour of each API; past
that it answers 45009 and refuses the API for the whole window, and it answers 45033 when
too many calls of one API run at once (FACTS §5.2, §5.8). The client asks `acquire` before
every HTTP request (retries included) and tells `observe` every answer.

Budget. Time is cut into WINDOW-second windows; in one window all workers together lease at
most `limit` calls of one API, counted on one item per (corp, API, window)
(keys.rate_window) with an ADD conditional on the sum staying within the limit. A sliding
minute overlaps at most 60/W + 1 windows and a sliding hour 3600/W + 1, so

    limit = min(per_minute · margin / (60/W + 1), per_hour · margin / (3600/W + 1))

keeps both quotas over any minute and any hour, whatever windows WeCom counts in: with
W = 10 s and the default margin 0.8, 332 calls per window (33 a second; at most 2,324 in
any minute and 119,852 in any hour). The margin is a setting (WECOM_RATE_MARGIN).

Priorities. A bulk caller (a job's chunk) may fill a window only up to (1 - RESERVE) of the
limit; an interactive caller (the welcome lane, the worker, the ops API) up to all of it. So
however busy the jobs are, a fifth of every window stays for latency-critical calls, and an
interactive call waits for the next window only if interactive calls alone spent this one,
and never past its deadline (it raises OverBudget instead).

Amortized. A process leases several calls per write and spends them without touching the
table: the lease size per (corp, API) doubles when a lease runs out inside its window and
halves when a window ends with leased calls unused (1..LEASE_MAX). Leased calls expire with
their window. A busy worker pays one UpdateItem per lease (1/k of a write per call), an idle
one one per call; on top, one Query per corp and process every BLOCK_REFRESH seconds reads
the blocks and slowdowns below.

45033 slows everyone: the API's limit is halved (down to MIN_FACTOR) for SLOW_SECONDS,
recorded on its ApiBlock row and on the current window's item, so every worker's next lease
and next refresh learn it; several workers hearing 45033 at once halve it once.

45009 stops everyone: the ApiBlock row (keys.api_block) holds `blocked_until`, the window's
item too; until then `acquire` raises RateLimited without calling WeCom. 45009 does not say
which quota ran out, and a block lasts its window: the minute's (60 s) is assumed, and a
45009 within a minute of the previous block's end means the hour's (60 min).

gettoken is outside the budget: the token store makes one call per corp and token life.
"""
from __future__ import annotations

import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import boto3
from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from scrm.platform.config import settings
from scrm.platform.observability import log
from scrm.store import keys
from scrm.store.models import ApiBlock, RateWindow, condition_failed
from scrm.wecom.apis.errors import (
    CONCURRENCY_LIMITED,
    RATE_LIMITED,
    OverBudget,
    RateLimited,
)

BULK, INTERACTIVE = "bulk", "interactive"
PRIORITIES = (BULK, INTERACTIVE)
PER_MINUTE, PER_HOUR = 10_000, 150_000  # WeCom's quotas per corp and API (FACTS §5.2)
WINDOW = 10  # seconds
RESERVE = 0.2  # share of every window bulk callers leave to interactive ones
LEASE_MAX = 32
BLOCK_REFRESH = 10.0
MINUTE_BLOCK, HOUR_BLOCK = 60.0, 3600.0
SLOW_SECONDS = 60.0
SLOW_STEP = 5.0  # 45033s heard within this many seconds of a halving are the same congestion
MIN_FACTOR = 0.125
EXEMPT = frozenset({"gettoken"})
WINDOW_TTL = 3600  # window items are kept an hour, then DynamoDB's TTL removes them


QUOTAS = ((PER_MINUTE, 60.0), (PER_HOUR, 3600.0))  # (calls, seconds)


def window_limit(margin: float, window: float = WINDOW, quotas: tuple[tuple[int, float], ...] = QUOTAS) -> int:
    """Calls of one API all workers may lease per window: a sliding span of `seconds`
    overlaps at most ceil(seconds / window) + 1 windows (module docstring)."""
    return max(1, math.floor(min(calls * margin / (math.ceil(seconds / window) + 1) for calls, seconds in quotas)))


@dataclass(frozen=True)
class Budget:
    window: float
    limit: int  # calls per window and API
    reserve: float = RESERVE

    @classmethod
    def from_settings(cls) -> Budget:
        return cls(WINDOW, window_limit(settings().wecom_rate_margin))

    def cap(self, priority: str, factor: float) -> int:
        share = 1.0 if priority == INTERACTIVE else 1.0 - self.reserve
        return max(1, math.floor(self.limit * factor * share))


@dataclass
class Counters:
    leases: int = 0  # UpdateItems on window items
    refreshes: int = 0  # Queries of the ApiBlock rows
    waits: int = 0  # times a caller slept for the next window
    refused: int = 0  # OverBudget raised


totals = Counters()  # every governor of this process, for benchmarks
_count_lock = threading.Lock()


@dataclass
class _Lease:
    """This process's leased calls of one (corp, API)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    window: float = -1.0
    left: int = 0
    size: int = 1
    took: bool = False  # leased in `window` already


@dataclass
class _Corp:
    """What this process knows of one corp's blocks and slowdowns."""

    loaded_at: float = -math.inf
    blocked: dict[str, float] = field(default_factory=dict)  # api -> blocked_until (ended ones kept)
    slow: dict[str, tuple[float, float]] = field(default_factory=dict)  # api -> (slow_until, factor)


@lru_cache(maxsize=4)
def _dynamodb(endpoint: str | None, region: str):
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=region)


def _client():
    return _dynamodb(os.environ.get("AWS_ENDPOINT_URL") or None, RateWindow.Meta.region)


class Governor:
    """Thread-safe; one per process (default_governor) unless a test runs its own clock."""

    def __init__(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 budget: Budget | None = None):
        self._clock = clock
        self._sleep = sleep
        self._budget = budget
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._corps: dict[str, _Corp] = {}
        self._guard = threading.Lock()
        self.counters = Counters()

    @property
    def budget(self) -> Budget:
        if self._budget is None:
            self._budget = Budget.from_settings()
        return self._budget

    def forget(self) -> None:
        """Drop what this process knows (tests, local stack resets)."""
        with self._guard:
            self._leases.clear()
            self._corps.clear()
        _dynamodb.cache_clear()

    # --- asking ---------------------------------------------------------------------------
    def check(self, corp_id: str, api: str) -> None:
        """RateLimited if `api` is blocked for the corp; reads the table at most every BLOCK_REFRESH s."""
        until = self._known(corp_id).blocked.get(api)
        if until is not None and until > self._clock():
            raise RateLimited(RATE_LIMITED, f"blocked until {until:.0f} after 45009", api, blocked_until=until)

    def acquire(self, corp_id: str, api: str, priority: str = INTERACTIVE, deadline: float | None = None) -> None:
        """Return once this process may make one call of `api`; sleeps for the next window
        when the budget is spent, never past `deadline` (OverBudget instead)."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        self.check(corp_id, api)
        if api in EXEMPT:
            return
        lease = self._lease(corp_id, api)
        while True:
            with lease.lock:
                now = self._clock()
                start = now - now % self.budget.window
                if lease.window != start:
                    if lease.left > 0:  # leased more than this process used: ask for less
                        lease.size = max(1, lease.size // 2)
                    lease.window, lease.left, lease.took = start, 0, False
                if lease.left > 0:
                    lease.left -= 1
                    return
                if lease.took:  # the last lease ran out inside its window: ask for more
                    lease.size = min(LEASE_MAX, lease.size * 2)
                cap = self.budget.cap(priority, self._factor(corp_id, api, now))
                taken = self._take(corp_id, api, start, min(lease.size, cap), cap)
                self.check(corp_id, api)  # the window's item may have told of a 45009
                if taken:
                    lease.left, lease.took = taken - 1, True
                    return
            wake = start + self.budget.window + random.uniform(0, self.budget.window / 10)
            if deadline is not None and wake >= deadline:
                self._count("refused")
                raise OverBudget(RATE_LIMITED, f"rate budget of {api} spent until {wake:.0f}", api,
                                 blocked_until=wake)
            self._count("waits")
            self._sleep(max(0.0, wake - self._clock()))

    def blocked_until(self, corp_id: str, api: str) -> float:
        return self._known(corp_id).blocked.get(api, 0.0)

    # --- hearing ----------------------------------------------------------------------------
    def observe(self, corp_id: str, api: str, errcode: int) -> None:
        """Every answer of `api`: 45009 blocks it for every worker, 45033 slows it for every worker."""
        if errcode == RATE_LIMITED:
            self._block(corp_id, api, errcode)
        elif errcode == CONCURRENCY_LIMITED and api not in EXEMPT:
            self._slow_down(corp_id, api)

    def _block(self, corp_id: str, api: str, errcode: int) -> None:
        now = self._clock()
        known = self._known(corp_id)
        previous = known.blocked.get(api)
        escalate = previous is not None and 0 <= now - previous < MINUTE_BLOCK
        until = now + (HOUR_BLOCK if escalate else MINUTE_BLOCK)
        row = ApiBlock(*keys.api_block(corp_id, api))
        try:
            # kept an hour after it ends, so that the escalation above can still see it
            row.update(actions=[ApiBlock.entity.set(ApiBlock), ApiBlock.api.set(api), ApiBlock.errcode.set(errcode),
                                ApiBlock.blocked_until.set(until), ApiBlock.expires_at.set(int(until + HOUR_BLOCK))],
                       condition=ApiBlock.blocked_until.does_not_exist() | (ApiBlock.blocked_until < until))
        except UpdateError as err:
            if not condition_failed(err):
                raise
            # another worker stored a longer block; the next refresh reads it
        self._mark_window(corp_id, api, "SET blocked_until = :until", {":until": {"N": repr(until)}})
        known.blocked[api] = max(until, previous or 0.0)
        log.warning("wecom api blocked after 45009", corp_id=corp_id, api=api, blocked_until=until)

    def _slow_down(self, corp_id: str, api: str) -> None:
        now = self._clock()
        known = self._known(corp_id)
        until, factor = known.slow.get(api, (0.0, 1.0))
        if until - SLOW_SECONDS + SLOW_STEP > now:
            return  # this process halved it moments ago
        factor = max(MIN_FACTOR, (factor if until > now else 1.0) / 2)
        until = now + SLOW_SECONDS
        row = ApiBlock(*keys.api_block(corp_id, api))
        try:
            row.update(actions=[ApiBlock.entity.set(ApiBlock), ApiBlock.api.set(api),
                                ApiBlock.slow_until.set(until), ApiBlock.slow_factor.set(factor),
                                ApiBlock.expires_at.set(int(until + HOUR_BLOCK))],
                       condition=ApiBlock.slow_until.does_not_exist()
                       | (ApiBlock.slow_until < until - SLOW_SECONDS + SLOW_STEP))
        except UpdateError as err:
            if not condition_failed(err):
                raise
            stored = ApiBlock.get(*keys.api_block(corp_id, api), consistent_read=True)  # another worker halved it
            until, factor = stored.slow_until or until, stored.slow_factor or factor
        self._mark_window(corp_id, api, "SET slow_until = :until, slow_factor = :factor",
                          {":until": {"N": repr(until)}, ":factor": {"N": repr(factor)}})
        known.slow[api] = (until, factor)
        log.warning("wecom api slowed after 45033", corp_id=corp_id, api=api, factor=factor, slow_until=until)

    # --- internals --------------------------------------------------------------------------
    def _lease(self, corp_id: str, api: str) -> _Lease:
        with self._guard:
            return self._leases.setdefault((corp_id, api), _Lease())

    def _known(self, corp_id: str) -> _Corp:
        now = self._clock()
        with self._guard:
            known = self._corps.get(corp_id)
        if known is not None and 0 <= now - known.loaded_at < BLOCK_REFRESH:
            return known
        rows = ApiBlock.query(keys.api_block(corp_id, "")[0], ApiBlock.SK.startswith(keys.API_BLOCK_PREFIX))
        fresh = _Corp(loaded_at=now)
        for row in rows:
            fresh.blocked[row.api] = float(row.blocked_until or 0)
            if row.slow_until:
                fresh.slow[row.api] = (float(row.slow_until), float(row.slow_factor or 1.0))
        if known is not None:  # what this process heard itself may be newer than the table's copy
            for api, until in known.blocked.items():
                fresh.blocked[api] = max(until, fresh.blocked.get(api, 0.0))
            for api, slow in known.slow.items():
                if slow[0] > fresh.slow.get(api, (0.0, 1.0))[0]:
                    fresh.slow[api] = slow
        self._count("refreshes")
        with self._guard:
            self._corps[corp_id] = fresh
        return fresh

    def _factor(self, corp_id: str, api: str, now: float) -> float:
        until, factor = self._known(corp_id).slow.get(api, (0.0, 1.0))
        return factor if until > now else 1.0

    def _take(self, corp_id: str, api: str, start: float, want: int, cap: int) -> int:
        """Lease up to `want` calls of the window starting at `start`; how many were had (0: spent)."""
        pk, sk = keys.rate_window(corp_id, api, int(start))
        for _ in range(2):  # the whole want, else what is left of the window
            if want < 1:
                return 0
            self._count("leases")
            try:
                answer = _client().update_item(
                    TableName=RateWindow.Meta.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}},
                    UpdateExpression="ADD used :want SET entity = :entity, expires_at = :ttl",
                    ConditionExpression="attribute_not_exists(used) OR used <= :room",
                    ExpressionAttributeValues={":want": {"N": str(want)}, ":room": {"N": str(cap - want)},
                                               ":entity": {"S": "RateWindow"},
                                               ":ttl": {"N": str(int(start) + WINDOW_TTL)}},
                    ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                item = err.response.get("Item") or {}
                self._learn(corp_id, api, item)
                want = cap - int(item.get("used", {}).get("N", "0"))
                continue
            self._learn(corp_id, api, answer.get("Attributes") or {})
            return want
        return 0

    def _learn(self, corp_id: str, api: str, item: dict) -> None:
        """Blocks and slowdowns other workers marked on a window item."""
        known = self._known(corp_id)
        if "blocked_until" in item:
            until = float(item["blocked_until"]["N"])
            known.blocked[api] = max(until, known.blocked.get(api, 0.0))
        if "slow_until" in item:
            until, factor = float(item["slow_until"]["N"]), float(item.get("slow_factor", {}).get("N", "1"))
            if until > known.slow.get(api, (0.0, 1.0))[0]:
                known.slow[api] = (until, factor)

    def _mark_window(self, corp_id: str, api: str, expression: str, values: dict) -> None:
        now = self._clock()
        start = int(now - now % self.budget.window)
        pk, sk = keys.rate_window(corp_id, api, start)
        _client().update_item(
            TableName=RateWindow.Meta.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}},
            UpdateExpression=f"{expression}, entity = :entity, expires_at = :ttl",
            ExpressionAttributeValues={**values, ":entity": {"S": "RateWindow"},
                                       ":ttl": {"N": str(start + WINDOW_TTL)}})

    def _count(self, name: str) -> None:
        with _count_lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)
            setattr(totals, name, getattr(totals, name) + 1)


@lru_cache(maxsize=1)
def default_governor() -> Governor:
    """The governor shared by every client of this process (real clock)."""
    return Governor()
