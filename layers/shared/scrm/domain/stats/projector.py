"""The stats projector: stream records in, daily counters and rankings out, each fact once.

For one batch of records, in stream order:

1. Each record's facts (scrm.domain.stats.facts) and where each is credited; a staff
   member's store, region and branch come from scrm.domain.org.tree.scopes_of, read once
   per batch (so a move between stores applies from the next batch on).
2. Consecutive records form chunks; a chunk is ONE TransactWriteItems of at most 100 items:
   a marker per fact, keyed by the fact's identity (scrm.store.once.run_each_once), and one
   ADD per counter item (scope, id, day) summing the chunk's facts. A marker that exists
   already (the same record again: a redelivery, a retry after a crash between our writes,
   a replay after a bisect) cancels the transaction and names itself; that fact is dropped
   and the rest is written again. So a fact lands once whatever arrives twice, and a batch
   of many facts costs a marker each plus one write per counter it touches, not five.
3. Once per batch, the rankings of every counter its chunks touched (those of facts found
   counted before as well: a crash may have come between a counter and its ranking), so a
   counter's entry is written once however many chunks touched it: the counter is read back
   consistently and its value written into its parent's ranking where the entry holds less,
   only ever upwards. Counters only grow, so writers racing on one ranking entry (two shards,
   a retry) end on the counter's final value whatever their order, with no transaction and
   no conflict on hot items.

A chunk that fails (DynamoDB throttled, say) is reported with the sequence number of its
first record: Lambda checkpoints what came before and retries from there (a batch whose
rankings could not be raised is reported from its first record). A record that can
never be read raises BadRecord once the records before it are applied: a function error, so
Lambda bisects the batch until that record is alone and, after MaximumRetryAttempts, sets
only it aside in the failure queue; the records around it still count.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from scrm.domain.org import tree
from scrm.domain.stats.facts import BadRecord, Fact, facts_of
from scrm.platform.observability import log
from scrm.store import keys, once
from scrm.store.models import DailyCounter, RankEntry, update_if

EFFECT = "stats"
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit for TransactWriteItems
# A stream record lives 24 hours; its marker outlives every possible redelivery of it.
MARKER_TTL_SECONDS = 7 * 24 * 3600
MIN_SECONDS_LEFT = 10  # no chunk is started with less time than this before the function's timeout
CONFLICT_ATTEMPTS = 6
_RETRYABLE = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
LEVELS = ("store", "region", "branch")  # a staff member's placement, nearest first


class CounterKey(NamedTuple):
    corp_id: str
    scope: str
    scope_id: str
    day: str


@dataclass
class Outcome:
    records: int = 0
    facts: int = 0  # facts in the records
    counted: int = 0  # facts counted now
    repeated: int = 0  # facts found counted before (redelivered records)
    failed: str | None = None  # SequenceNumber of the first record not applied


class Org:
    """Where figures roll up, read once per batch."""

    def __init__(self) -> None:
        self._staff: dict[tuple[str, str], dict[str, str]] = {}
        self._departments: dict[tuple[str, str], tree.Placement | None] = {}

    def staff(self, corp_id: str, userid: str) -> dict[str, str]:
        if (corp_id, userid) not in self._staff:
            self._staff[(corp_id, userid)] = tree.scopes_of(corp_id, userid)
        return self._staff[(corp_id, userid)]

    def department(self, corp_id: str, dept_id: str) -> tree.Placement | None:
        if (corp_id, dept_id) not in self._departments:
            self._departments[(corp_id, dept_id)] = (
                tree.department_placement(corp_id, int(dept_id)) if dept_id.isdigit() else None)
        return self._departments[(corp_id, dept_id)]

    def credited(self, fact: Fact) -> dict[str, str]:
        scopes = {"corp": fact.corp_id}
        if fact.staff:
            scopes["staff"] = fact.staff
            if fact.placed:
                placement = self.staff(fact.corp_id, fact.staff)
                scopes.update({level: placement[level] for level in LEVELS if placement.get(level)})
        if fact.store:
            scopes["store"] = fact.store
        return scopes

    def parent(self, corp_id: str, scope: str, scope_id: str) -> tuple[str, str] | None:
        """The scope a scope is ranked in: the nearest level above it that exists (a store of a
        company without regions ranks in its branch, or in the corp); None for the corp."""
        if scope == "corp":
            return None
        above: dict[str, str | None] = {}
        if scope == "staff":
            above = dict(self.staff(corp_id, scope_id))
        elif scope in ("store", "region"):
            placement = self.department(corp_id, scope_id)
            above = placement.as_dict() if placement else {}
            above = {"region": above.get("region_id"), "branch": above.get("branch_id")}
        for level in LEVELS[LEVELS.index(scope) + 1 if scope in LEVELS else 0:]:
            if above.get(level):
                return level, str(above[level])
        return "corp", corp_id


@dataclass
class _Chunk:
    records: list[dict] = field(default_factory=list)
    facts: dict[tuple[str, str, str], tuple[Fact, dict[str, str]]] = field(default_factory=dict)
    counters: set[CounterKey] = field(default_factory=set)

    def items_with(self, credits: list[tuple[Fact, dict[str, str]]]) -> int:
        new_facts = {_identity(f) for f, _ in credits} - set(self.facts)
        new_counters = {k for f, scopes in credits for k in _counter_keys(f, scopes)} - self.counters
        return len(self.facts) + len(new_facts) + len(self.counters) + len(new_counters)

    def touched(self) -> dict[CounterKey, set[str]]:
        """Each counter the chunk's facts touch, with the metrics they touch."""
        found: dict[CounterKey, set[str]] = defaultdict(set)
        for fact, scopes in self.facts.values():
            for key in _counter_keys(fact, scopes):
                found[key].add(fact.metric)
        return found

    def add(self, record: dict, credits: list[tuple[Fact, dict[str, str]]]) -> None:
        self.records.append(record)
        for fact, scopes in credits:
            self.facts.setdefault(_identity(fact), (fact, scopes))
            self.counters.update(_counter_keys(fact, scopes))


def _identity(fact: Fact) -> tuple[str, str, str]:
    return fact.corp_id, fact.metric, fact.key


def _counter_keys(fact: Fact, scopes: dict[str, str]) -> list[CounterKey]:
    return [CounterKey(fact.corp_id, scope, scope_id, fact.day) for scope, scope_id in scopes.items()]


def sequence_number(record: dict) -> str:
    return str((record.get("dynamodb") or {}).get("SequenceNumber") or record.get("eventID") or "")


def project(records: Iterable[dict], *, time_left: Callable[[], float] = lambda: math.inf,
            now: Callable[[], float] = time.time) -> Outcome:
    """Apply the facts of `records` (a stream batch, in order); see the module docstring.

    Returns what was done and the first record not applied (`failed`); raises BadRecord for a
    record that can never be applied, after applying the ones before it. The rankings of all
    the counters the batch touched are raised once, at the end."""
    records = list(records)
    outcome, org, touched = Outcome(), Org(), defaultdict(set)
    unreadable = None
    try:
        _count(records, outcome, org, touched, time_left, now)
    except BadRecord as err:
        unreadable = err
    try:
        _rank(touched, org)
    except Exception:  # noqa: BLE001 - the counters are right; the batch again finds them counted
        log.exception("stats rankings not raised", extra={"records": len(records)})
        outcome.failed = sequence_number(records[0])
        return outcome
    if unreadable is not None:
        raise unreadable
    return outcome


def _count(records: list[dict], outcome: Outcome, org: Org, touched: dict[CounterKey, set[str]],
           time_left: Callable[[], float], now: Callable[[], float]) -> None:
    """Count the records' facts chunk by chunk; `touched` gathers the counters of applied chunks."""
    chunk = _Chunk()

    def flush() -> bool:
        nonlocal chunk
        if not chunk.records:
            return True
        first = sequence_number(chunk.records[0])
        if time_left() < MIN_SECONDS_LEFT:
            outcome.failed = first
            return False
        try:
            counted, repeated = _apply(chunk, now)
        except Exception:  # noqa: BLE001 - reported to Lambda, which retries from this record
            log.exception("stats chunk not applied", extra={"from_sequence_number": first,
                                                            "records": len(chunk.records)})
            outcome.failed = first
            return False
        outcome.counted += counted
        outcome.repeated += repeated
        for key, metrics in chunk.touched().items():
            touched[key] |= metrics
        chunk = _Chunk()
        return True

    for record in records:
        outcome.records += 1
        try:
            facts = facts_of(record)
        except BadRecord as err:
            if flush():
                log.error("stats record cannot be read", extra={"sequence_number": sequence_number(record),
                                                                "error": str(err)})
                raise
            return
        try:
            credits = [(fact, org.credited(fact)) for fact in facts]
        except Exception:  # noqa: BLE001 - reported to Lambda, which retries from this record
            if flush():
                log.exception("stats record not placed", extra={"sequence_number": sequence_number(record)})
                outcome.failed = sequence_number(record)
            return
        outcome.facts += len(facts)
        if chunk.records and chunk.items_with(credits) > MAX_TRANSACTION_ITEMS:
            if not flush():
                return
        chunk.add(record, credits)
    flush()


def _apply(chunk: _Chunk, now: Callable[[], float]) -> tuple[int, int]:
    """The chunk's facts counted, those not counted before: (counted, found counted before)."""
    pending = list(chunk.facts.values())
    repeated, conflicts = 0, 0
    while pending:
        increments: dict[CounterKey, Counter] = defaultdict(Counter)
        for fact, scopes in pending:
            for key in _counter_keys(fact, scopes):
                increments[key][fact.metric] += 1
        causes = [(fact.corp_id, EFFECT, f"{fact.metric}{keys.SEP}{fact.key}") for fact, _ in pending]
        try:
            done = once.run_each_once(causes, [_add(key, counts) for key, counts in increments.items()],
                                      ttl_seconds=MARKER_TTL_SECONDS, now=now())
        except TransactWriteError as err:
            reasons = err.cancellation_reasons or []
            conflicts += 1
            if conflicts >= CONFLICT_ATTEMPTS or not any(r is not None and r.code in _RETRYABLE for r in reasons):
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** conflicts))
            continue
        if not done:
            break
        repeated += len(done)
        skip = set(done)
        pending = [entry for i, entry in enumerate(pending) if i not in skip]
    return len(pending), repeated


def _add(key: CounterKey, counts: Counter) -> once.Write:
    pk, sk = keys.daily_counter(key.corp_id, key.scope, key.scope_id, key.day)

    def write(tx: TransactWrite) -> None:
        tx.update(DailyCounter(pk, sk), actions=[
            *(getattr(DailyCounter, metric).add(n) for metric, n in sorted(counts.items())),
            DailyCounter.entity.set(DailyCounter),
            DailyCounter.scope.set(key.scope),
            DailyCounter.scope_id.set(key.scope_id),
            DailyCounter.day.set(key.day),
        ])

    return write


def _rank(touched: dict[CounterKey, set[str]], org: Org) -> None:
    """Copy each touched counter's value into its parent's ranking (only upwards).

    The entries are read first (cheaper than a write whose condition fails), so a redelivered
    batch, whose counters are already ranked, writes nothing."""
    touched = {key: metrics for key, metrics in touched.items() if key.scope != "corp"}
    if not touched:
        return
    rows = {(row.PK, row.SK): row for row in DailyCounter.batch_get(
        [keys.daily_counter(*key) for key in touched], consistent_read=True)}
    wanted: dict[tuple[str, str], tuple[int, CounterKey, tuple[str, str], str]] = {}
    for key, metrics in touched.items():
        row = rows.get(keys.daily_counter(*key))
        parent = org.parent(key.corp_id, key.scope, key.scope_id)
        if row is None or parent is None:
            continue
        for metric in metrics:
            pk = keys.ranking(key.corp_id, parent[0], parent[1], key.scope, key.day, metric)
            wanted[(pk, key.scope_id)] = (int(getattr(row, metric) or 0), key, parent, metric)
    held = {(entry.PK, entry.SK): int(entry.value) for entry in RankEntry.batch_get(list(wanted))}
    for (pk, scope_id), (value, key, parent, metric) in sorted(wanted.items()):
        if held.get((pk, scope_id), 0) >= value:
            continue
        update_if(RankEntry(pk, scope_id), [
            RankEntry.value.set(value),
            RankEntry.GSI1PK.set(pk),
            RankEntry.GSI1SK.set(keys.rank_sk(value, scope_id)),
            RankEntry.entity.set(RankEntry),
            RankEntry.scope.set(key.scope),
            RankEntry.scope_id.set(scope_id),
            RankEntry.parent_scope.set(parent[0]),
            RankEntry.parent_id.set(parent[1]),
            RankEntry.day.set(key.day),
            RankEntry.metric.set(metric),
        ], RankEntry.value.does_not_exist() | (RankEntry.value < value))
