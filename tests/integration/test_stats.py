"""The daily figures, projected from the table's real DynamoDB stream (moto server), equal the
facts exactly: whatever arrives twice, in whatever order across items, with the projector
dying mid-batch or Lambda bisecting and replaying batches."""
from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterator

import boto3
import pytest
from scrm.domain import coupons
from scrm.domain.customers import profile
from scrm.domain.stats import facts as stats_facts
from scrm.domain.stats import figures, projector
from scrm.platform.config import business_day
from scrm.store import keys, once
from scrm.store.models import (
    DailyCounter,
    Department,
    Follow,
    Once,
    RankEntry,
    Staff,
    Welcome,
    apply_versioned,
)

from infra.scripts import replay_stats
from tests.support.functions import LambdaContext, load_function
from tests.support.streams import STATS_SOURCE, StreamTable, moto_server, stream_table

CORP = "wwstatscorp"
CHINA = dt.timezone(dt.timedelta(hours=8))
MIDNIGHT = int(dt.datetime(2026, 11, 26, tzinfo=CHINA).timestamp())  # 2026-11-26 00:00 in China
D1, D2 = "2026-11-25", "2026-11-26"
STORES = {"1001": ("南京西路店", "100"), "1002": ("淮海路店", "100"), "2001": ("西湖店", "200")}
STAFF = {"zhangsan": "1001", "lisi": "1001", "wangwu": "1002", "zhaoliu": "2001"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def table(endpoint: str) -> Iterator[StreamTable]:
    with stream_table(endpoint) as streamed:
        place_org()
        yield streamed


def place_org() -> None:
    """Branch 10 > regions 100, 200 > stores; staff placed in stores (as the org sync leaves them)."""
    Department(*keys.department(CORP, 10), dept_id=10, name="华东分公司", level="branch", branch_id="10").save()
    for region in ("100", "200"):
        Department(*keys.department(CORP, region), dept_id=int(region), name=f"区域{region}", level="region",
                   region_id=region, branch_id="10").save()
    for store, (name, region) in STORES.items():
        Department(*keys.department(CORP, store), dept_id=int(store), name=name, level="store", store_id=store,
                   region_id=region, branch_id="10").save()
    for userid, store in STAFF.items():
        Staff(*keys.staff(CORP, userid), userid=userid, name=userid.capitalize(), store_id=store,
              region_id=STORES[store][1], branch_id="10").save()


# --- facts, written the way the domain writes them ------------------------------------------
def _follow(customer: str, staff: str, version: int, *actions) -> bool:
    return apply_versioned(Follow(*keys.follow(CORP, customer, staff)), version,
                           [Follow.external_userid.set(customer), Follow.userid.set(staff), *actions])


def add(customer: str, staff: str, at: int, half: bool = False) -> bool:
    return _follow(customer, staff, at * 10 + 1, Follow.status.set("half" if half else "active"),
                   Follow.added_at.set(at), Follow.delete_source.remove())


def delete(customer: str, staff: str, at: int, by: str = "customer", source: str | None = None) -> bool:
    actions = [Follow.status.set(f"deleted_by_{by}")] + ([Follow.delete_source.set(source)] if source else [])
    return _follow(customer, staff, at * 10 + 2, *actions)


def edit(customer: str, staff: str, at: int) -> bool:
    return _follow(customer, staff, at * 10 + 1, Follow.status.set(Follow.status | "active"))


def welcome(customer: str, staff: str, at: int, code: str | None = None) -> None:
    row = Welcome(*keys.welcome(CORP, customer, staff, code or f"WC{customer}"), external_userid=customer,
                  userid=staff, status="sending", claimed_at=at, lease_until=at + 10, holder="test")
    row.save(condition=Welcome.PK.does_not_exist())
    row.update(actions=[Welcome.status.set("sent"), Welcome.sent_at.set(at + 2)])


def template(at: int, stock: int = 1000) -> str:
    return coupons.create_template(CORP, name="新客券", kind="amount", amount=2000, valid_days=30,
                                   total_stock=stock, now=at).template_id


def issue(template_id: str, customer: str, staff: str | None, store: str | None, at: int) -> str:
    result = coupons.issue(CORP, template_id, customer, occasion="welcome", staff_userid=staff, store_id=store,
                           now=at)
    assert result.code, result.status
    return result.code


# --- reading the figures ------------------------------------------------------------------------
def counted() -> dict[tuple[str, str, str], dict[str, int]]:
    """Every counter row: (scope, scope_id, day) -> its non-zero metrics."""
    rows = {}
    for row in DailyCounter.scan():
        values = {m: int(getattr(row, m)) for m in stats_facts.METRICS if getattr(row, m)}
        rows[(row.scope, row.scope_id, row.day)] = values
    return rows


def project(records: list[dict], **kwargs) -> projector.Outcome:
    outcome = projector.project(records, **kwargs)
    assert outcome.failed is None
    return outcome


class Expected:
    """The figures a workload must produce, counted from what the workload did."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def staff(self, metric: str, userid: str, at: int, n: int = 1) -> None:
        store = STAFF[userid]
        for scope, scope_id in (("staff", userid), ("store", store), ("region", STORES[store][1]),
                                ("branch", "10"), ("corp", CORP)):
            self.rows[(scope, scope_id, business_day(at))][metric] += n

    def coupon(self, metric: str, staff: str | None, store: str | None, at: int) -> None:
        for scope, scope_id in (("staff", staff), ("store", store), ("corp", CORP)):
            if scope_id:
                self.rows[(scope, scope_id, business_day(at))][metric] += 1

    def __eq__(self, other) -> bool:
        return {k: dict(v) for k, v in self.rows.items()} == other

    def __repr__(self) -> str:
        return repr({k: dict(v) for k, v in sorted(self.rows.items())})


# --- what counts, where, on which day -------------------------------------------------------------
def test_each_fact_counts_once_for_every_scope_on_the_china_day_it_happened(table):
    tpl = template(MIDNIGHT - 100)
    add("c1", "zhangsan", MIDNIGHT - 30)  # 23:59:30 in China: the 25th, wherever it is projected
    welcome("c1", "zhangsan", MIDNIGHT - 20)
    code = issue(tpl, "c1", "zhangsan", "1001", MIDNIGHT - 10)
    coupons.redeem(CORP, code, store_id="1002", staff_userid="wangwu", request_id="pos-1", now=MIDNIGHT + 60)
    add("c2", "lisi", MIDNIGHT + 5)  # 00:00:05: the 26th

    project(table.records())

    assert counted() == {
        ("staff", "zhangsan", D1): {"new_customers": 1, "welcomes_sent": 1, "coupons_issued": 1},
        ("store", "1001", D1): {"new_customers": 1, "welcomes_sent": 1, "coupons_issued": 1},
        ("region", "100", D1): {"new_customers": 1, "welcomes_sent": 1},
        ("branch", "10", D1): {"new_customers": 1, "welcomes_sent": 1},
        ("corp", CORP, D1): {"new_customers": 1, "welcomes_sent": 1, "coupons_issued": 1},
        # redeemed at store 1002, credited to the staff member who brought the customer
        ("staff", "zhangsan", D2): {"coupons_redeemed": 1},
        ("store", "1002", D2): {"coupons_redeemed": 1},
        ("corp", CORP, D2): {"new_customers": 1, "coupons_redeemed": 1},
        ("staff", "lisi", D2): {"new_customers": 1},
        ("store", "1001", D2): {"new_customers": 1},
        ("region", "100", D2): {"new_customers": 1},
        ("branch", "10", D2): {"new_customers": 1},
    }
    assert figures.daily(CORP, "store", "1001", dt.date(2026, 11, 24), dt.date(2026, 11, 27)) == [
        {"day": "2026-11-24", **dict.fromkeys(stats_facts.METRICS, 0)},
        {"day": D1, **dict.fromkeys(stats_facts.METRICS, 0), "new_customers": 1, "welcomes_sent": 1,
         "coupons_issued": 1},
        {"day": D2, **dict.fromkeys(stats_facts.METRICS, 0), "new_customers": 1},
        {"day": "2026-11-27", **dict.fromkeys(stats_facts.METRICS, 0)},
    ]


def test_follow_changes_count_as_the_transitions_they_are(table):
    t = MIDNIGHT - 3600
    long_ago = t - 400 * 86400
    add("half", "zhangsan", t, half=True)
    add("half", "zhangsan", t + 1)  # half -> active: the same new customer
    add("lost", "zhangsan", t)
    delete("lost", "zhangsan", t + 10)
    add("moved", "zhangsan", t)
    delete("moved", "zhangsan", t + 10, by="staff", source=stats_facts.TRANSFER_SOURCE)  # a handover is no deletion
    add("again", "zhangsan", t)
    delete("again", "zhangsan", t + 10, by="staff", source="staff")
    add("again", "zhangsan", t + 20)  # added once more: new again
    edit("before", "zhangsan", t)  # a customer from before this system ran: no add time, no new customer ...
    profile.store_follow(CORP, "before", profile.FollowFacts("zhangsan", long_ago, None, None, None, 1,
                                                             frozenset()), t + 1)  # ... until WeCom says when
    delete("gone", "zhangsan", t + 30)  # deleted by a customer we never saw added: lost, not new
    delete("early", "zhangsan", t + 40)
    assert not add("early", "zhangsan", t)  # WeCom delivered the add after the deletion: it is stale
    add("unlisted", "zhangsan", t)
    _follow("unlisted", "zhangsan", (t + 50) * 10 + 2, Follow.status.set("deleted_by_staff"),
            Follow.delete_source.set("reconcile"))  # what the nightly reconciliation marks

    project(table.records())

    assert counted()[("staff", "zhangsan", D1)] == {"new_customers": 6, "lost_customers": 3, "deleted_customers": 2}
    assert counted()[("staff", "zhangsan", business_day(long_ago))] == {"new_customers": 1}


def test_a_follow_first_seen_through_a_fetch_counts_on_the_day_wecom_says_it_was_added(table):
    """A lost add the night repairs, written at 02:00 from what WeCom lists, is yesterday's customer."""
    added_at = MIDNIGHT - 7200
    facts = profile.FollowFacts("lisi", added_at, None, None, None, 1, frozenset())
    assert profile.store_follow(CORP, "healed", facts, MIDNIGHT + 2 * 3600)  # written at 02:00 the next night
    project(table.records())
    assert counted()[("staff", "lisi", D1)] == {"new_customers": 1}


# --- exactly once -----------------------------------------------------------------------------
def workload(seed: int = 7, customers: int = 24) -> Expected:
    """Customers added to the four staff over two days; some lost, some welcomed, some with a
    coupon, some of those redeemed at another store. Returns what the figures must be."""
    rng, expected = random.Random(seed), Expected()
    tpl = template(MIDNIGHT - 86400)
    for n in range(customers):
        customer, staff = f"wm{n:04d}", rng.choice(sorted(STAFF))
        at = MIDNIGHT + rng.randint(-80000, 80000)
        add(customer, staff, at)
        expected.staff("new_customers", staff, at)
        if n % 3 == 0:
            delete(customer, staff, at + 90)
            expected.staff("lost_customers", staff, at + 90)
        if n % 2 == 0:
            welcome(customer, staff, at + 1)
            expected.staff("welcomes_sent", staff, at + 3)
        if n % 4 == 0:
            code = issue(tpl, customer, staff, STAFF[staff], at + 2)
            expected.coupon("coupons_issued", staff, STAFF[staff], at + 2)
            if n % 8 == 0:
                coupons.redeem(CORP, code, store_id="2001", staff_userid="zhaoliu", request_id=f"pos-{n}",
                               now=at + 600)
                expected.coupon("coupons_redeemed", staff, "2001", at + 600)
    return expected


def test_the_same_records_delivered_again_count_once(table):
    expected = workload()
    records = table.records()
    first = project(records)
    again = project(records)  # a redelivery
    doubled = project(records + records[::2])  # a batch holding records twice
    assert counted() == expected
    assert first.counted == first.facts and first.repeated == 0
    assert again.counted == 0 and again.repeated == again.facts
    assert doubled.counted == 0


def interleaved(records: list[dict], rng: random.Random) -> list[dict]:
    """Another order across items, each item's own records still in order (as shards may give them)."""
    queues: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        queues[str(record["dynamodb"]["Keys"])].append(record)
    out = []
    while queues:
        key = rng.choice(sorted(queues))
        out.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    return out


@pytest.mark.parametrize("order", ["interleaved", "reversed"])
def test_records_in_another_order_give_the_same_figures(table, order):
    expected = workload(seed=11)
    records = table.records()
    if order == "interleaved":
        records = interleaved(records, random.Random(3))
    else:  # each record says what changed: even an item's own order does not matter
        records = records[::-1]
    for start in range(0, len(records), 25):  # in several batches
        project(records[start:start + 25])
    assert counted() == expected


class Died(Exception):
    """The process died here (after or before the write it follows)."""


@pytest.fixture
def small_chunks(monkeypatch):
    """Transactions of 30 items, so that a small workload spans several chunks."""
    monkeypatch.setattr(projector, "MAX_TRANSACTION_ITEMS", 30)


def test_a_crash_after_a_chunk_was_written_is_retried_without_counting_twice(table, monkeypatch, small_chunks):
    expected = workload(seed=5)
    records = table.records()
    calls, real = [], once.run_each_once

    def dies_after_the_second_write(*args, **kwargs):
        done = real(*args, **kwargs)
        calls.append(len(args[0]))
        if len(calls) == 2:
            raise Died("after its transaction committed")
        return done

    monkeypatch.setattr(projector.once, "run_each_once", dies_after_the_second_write)
    outcome = projector.project(records)
    assert outcome.failed is not None and len(calls) == 2  # the first chunk, then the second died
    monkeypatch.setattr(projector.once, "run_each_once", real)

    rest = records[[projector.sequence_number(r) for r in records].index(outcome.failed):]
    retried = project(rest)  # what Lambda sends again: the records from the one reported
    assert retried.repeated == calls[1]  # the second chunk had been written: found, not counted again
    assert counted() == expected
    assert_rankings_match_counters()


def test_a_crash_before_a_write_and_one_between_counters_and_rankings_leave_nothing_behind(table, monkeypatch,
                                                                                          small_chunks):
    expected = workload(seed=6)
    records = table.records()
    real_once, real_update = once.run_each_once, projector.update_if
    state = {"writes": 0, "ranks": 0}

    def dies_before_the_second_write(*args, **kwargs):
        state["writes"] += 1
        if state["writes"] == 2:
            raise Died("before its transaction")
        return real_once(*args, **kwargs)

    def dies_while_ranking(*args, **kwargs):
        state["ranks"] += 1
        if state["ranks"] == 5:
            raise Died("between a counter and its ranking")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(projector.once, "run_each_once", dies_before_the_second_write)
    monkeypatch.setattr(projector, "update_if", dies_while_ranking)
    sequence = [projector.sequence_number(r) for r in records]
    pending = records
    for _ in range(5):  # Lambda's retries, each from the record reported
        outcome = projector.project(pending)
        if outcome.failed is None:
            break
        pending = records[sequence.index(outcome.failed):]
    assert outcome.failed is None and state["writes"] > 2 and state["ranks"] > 5  # both crashes happened
    assert counted() == expected
    assert_rankings_match_counters()


def assert_rankings_match_counters() -> None:
    """Every ranking entry holds its counter's value, and every ranked counter has its entry."""
    counters = {(r.scope, r.scope_id, r.day): r for r in DailyCounter.scan()}
    entries = {(e.scope, e.scope_id, e.day, e.metric): e for e in RankEntry.scan()}
    expected = {(scope, scope_id, day, metric): int(getattr(row, metric))
                for (scope, scope_id, day), row in counters.items() if scope != "corp"
                for metric in stats_facts.METRICS if getattr(row, metric)}
    assert {k: int(e.value) for k, e in entries.items()} == expected


def test_bisected_and_replayed_batches_through_the_stream_poller_count_once(table):
    expected = workload(seed=9)
    handler = load_function("stats").handler
    sizes: list[int] = []

    def invoke(_function: str, event: dict):
        sizes.append(len(event["Records"]))
        result = handler(event, LambdaContext(remaining_millis=60_000))
        if len(sizes) <= 3:
            raise Died("after the batch was applied")  # Lambda sees a function error and bisects
        return result

    table.poller(invoke, dataclasses.replace(STATS_SOURCE, batch_size=16), retry_pause=0).drain(timeout=300)

    assert sizes[:3] == [16, 8, 4]  # each error halved the batch before it was run again
    assert counted() == expected
    assert_rankings_match_counters()
    assert table.failures() == []


def test_a_record_that_can_never_be_read_is_set_aside_alone_and_the_rest_counts(table):
    tpl = template(MIDNIGHT - 100)
    expected = Expected()
    for n in range(6):
        add(f"c{n}", "lisi", MIDNIGHT - 50 + n)
        expected.staff("new_customers", "lisi", MIDNIGHT - 50 + n)
        if n == 3:  # an item no code of ours writes: a coupon without its issue time
            pk, sk = keys.coupon(CORP, "BROKEN0000000000")
            boto3.client("dynamodb").put_item(TableName=table.name, Item={
                "PK": {"S": pk}, "SK": {"S": sk}, "entity": {"S": "Coupon"}, "code": {"S": "BROKEN0000000000"}})
    issue(tpl, "c5", "lisi", "1001", MIDNIGHT - 10)
    expected.coupon("coupons_issued", "lisi", "1001", MIDNIGHT - 10)
    handler = load_function("stats").handler
    broken = [r for r in table.records() if r["dynamodb"]["Keys"]["PK"]["S"] == pk]

    table.poller(lambda _f, event: handler(event, LambdaContext()), retry_pause=0).drain(timeout=300)

    assert counted() == expected
    [failure] = table.failures()
    info = failure["DDBStreamBatchInfo"]
    sequence = broken[0]["dynamodb"]["SequenceNumber"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (sequence, sequence, 1)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 11  # the first try and 10 retries


def test_records_set_aside_during_an_outage_are_counted_by_the_replay_once(table):
    expected = Expected()
    for n in range(5):
        add(f"c{n}", "wangwu", MIDNIGHT - 50 + n)
        expected.staff("new_customers", "wangwu", MIDNIGHT - 50 + n)

    def outage(_function: str, event: dict):
        projector.project(event["Records"][:2])  # some counted before the function died
        raise Died("DynamoDB unreachable")

    no_bisect = dataclasses.replace(STATS_SOURCE, bisect_on_error=False, maximum_retry_attempts=1)
    table.poller(outage, no_bisect, retry_pause=0).drain(timeout=300)
    assert len(table.failures()) == 1 and counted() != expected  # set aside after its retries
    lines: list[str] = []

    report = replay_stats.replay(table.failures_url, out=lines.append)

    assert (report["batches"], report["counted"], report["repeated"], report["left"]) == (1, 3, 2, 0), lines
    assert counted() == expected
    assert table.failures() == []  # counted, so the message is gone


def test_no_chunk_is_started_without_time_to_finish_it(table):
    add("c1", "zhangsan", MIDNIGHT - 30)
    records = table.records()
    outcome = projector.project(records, time_left=lambda: 1.0)
    assert outcome.failed == projector.sequence_number(records[0])
    assert counted() == {}


def test_markers_outlive_every_redelivery_and_then_expire(table):
    add("c1", "zhangsan", MIDNIGHT - 30)
    project(table.records(), now=lambda: MIDNIGHT)
    [marker] = list(Once.scan(Once.effect == projector.EFFECT))
    assert marker.expires_at - marker.done_at == projector.MARKER_TTL_SECONDS > 24 * 3600  # a stream keeps 24 h


# --- rankings ---------------------------------------------------------------------------------
def test_a_ranking_is_one_query_of_one_page_highest_first_with_names(table):
    staff = [f"s{n:02d}" for n in range(14)]
    for n, userid in enumerate(staff):
        Staff(*keys.staff(CORP, userid), userid=userid, name=f"导购{n}", store_id="1001", region_id="100",
              branch_id="10").save()
    for n, userid in enumerate(staff):
        for c in range(n % 7):  # values 0..6, with ties
            add(f"{userid}-c{c}", userid, MIDNIGHT - 1000 + c)
    project(table.records())
    queries = []
    clients = {id(m._get_connection().connection.client): m._get_connection().connection.client
               for m in (RankEntry, Staff)}
    for client in clients.values():
        client.meta.events.register("before-parameter-build.dynamodb.Query",
                                    lambda params, **kw: queries.append(params["Limit"]))

    top = figures.ranking(CORP, "staff", "store", "1001", D1, "new_customers", limit=10)

    assert queries == [10]  # one Query, one page of at most `limit` items
    values = [item["value"] for item in top]
    assert values == [6, 6, 5, 5, 4, 4, 3, 3, 2, 2]
    assert [item["rank"] for item in top] == [1, 1, 3, 3, 5, 5, 7, 7, 9, 9]
    assert all(item["name"] == f"导购{int(item['scope_id'][1:])}" for item in top)


def test_each_scope_ranks_in_the_nearest_level_above_it(table):
    Staff(*keys.staff(CORP, "floater"), userid="floater", name="未分店").save()  # in no store
    Department(*keys.department(CORP, 3001), dept_id=3001, name="直营店", level="store", store_id="3001",
               branch_id="10").save()  # a store of a branch without regions
    add("c1", "zhangsan", MIDNIGHT - 30)
    add("c2", "wangwu", MIDNIGHT - 30)
    add("c3", "floater", MIDNIGHT - 30)
    tpl = template(MIDNIGHT - 100)
    issue(tpl, "c4", None, "3001", MIDNIGHT - 20)
    project(table.records())

    def ranked(scope: str, parent: str, parent_id: str, metric: str = "new_customers") -> list:
        return [(i["scope_id"], i["value"]) for i in figures.ranking(CORP, scope, parent, parent_id, D1, metric, 10)]

    assert ranked("staff", "store", "1001") == [("zhangsan", 1)]
    assert ranked("store", "region", "100") == [("1001", 1), ("1002", 1)]  # equal values by id
    assert ranked("region", "branch", "10") == [("100", 2)]
    assert ranked("branch", "corp", CORP) == [("10", 2)]
    assert ranked("staff", "corp", CORP) == [("floater", 1)]
    assert ranked("store", "branch", "10", "coupons_issued") == [("3001", 1)]
