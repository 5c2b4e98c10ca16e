"""The rate governor: every worker of a corp together within WeCom's quota of an API, slowed
together by 45033, stopped together by 45009, bulk callers leaving room for interactive ones.

A worker is a WeComClient with a Governor of its own (as each Lambda process has), so the
only thing workers share is the table: threads here, processes (through a moto server)
where it matters. The simulator enforces a quota over a sliding window and answers 45009
past it, as WeCom does; so "within the quota" is WeCom's verdict, not ours. Budgets are
scaled down (windows of 1 or 10 s) so that a test takes seconds.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Iterator

import boto3
import pytest
from scrm.platform.credentials import CorpCredentials
from scrm.store import keys
from scrm.store.models import RateWindow
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import OverBudget, RateLimited
from scrm.wecom.apis.governor import BULK, INTERACTIVE, Budget, Governor, window_limit
from scrm.wecom.apis.tokens import TokenStore

from infra.local.wecom_sim import WeComSimulator

CORP = "wwgovernor0001"
CREDS = CorpCredentials(corp_id=CORP, token="tok", encoding_aes_key="k" * 43, secret="sim-secret",
                        agent_id="1000002")
API = "user/get"
QUOTA = (60, 6.0)  # the simulator's WeCom: 60 calls of an API in any 6 seconds
MARGIN = 0.8
SMALL = Budget(window=1, limit=window_limit(MARGIN, 1, (QUOTA,)))  # 6 calls a second, all workers together


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0  # the start of a 10 s window

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def start_sim() -> WeComSimulator:
    sim = WeComSimulator()
    sim.start("127.0.0.1", 0)
    sim.add_corp(CORP, CREDS.secret, CREDS.token, CREDS.encoding_aes_key, int(CREDS.agent_id))
    sim.add_staff(CORP, "zhangsan")
    return sim


@pytest.fixture
def sim(ddb) -> Iterator[WeComSimulator]:
    simulator = start_sim()
    yield simulator
    simulator.stop()


def worker(sim: WeComSimulator, governor: Governor, clock=time.time, sleep=time.sleep,
           priority: str = INTERACTIVE) -> WeComClient:
    return WeComClient(CREDS, base_url=f"{sim.base_url}/cgi-bin", token_store=TokenStore(clock, sleep),
                       clock=clock, sleep=sleep, governor=governor, priority=priority)


def outcomes(sim: WeComSimulator) -> dict[str, int]:
    return sim.stats()["outcomes"].get(API, {})


# --- the arithmetic ------------------------------------------------------------------------------
def test_the_default_budget_holds_both_of_wecoms_quotas_over_any_minute_and_hour():
    budget = Budget.from_settings()
    assert (budget.window, budget.limit) == (10, 332)
    assert (60 // 10 + 1) * budget.limit <= 0.8 * 10_000  # a sliding minute spans at most 7 windows
    assert (3600 // 10 + 1) * budget.limit <= 0.8 * 150_000  # a sliding hour at most 361
    assert budget.cap(BULK, 1.0) == 265 and budget.cap(INTERACTIVE, 1.0) == 332
    assert budget.cap(INTERACTIVE, 0.5) == 166


# --- many workers, one budget ---------------------------------------------------------------------
def hammer(clients: list[WeComClient], seconds: float) -> tuple[list[int], float]:
    """Every client calls the API as fast as its governor lets it, all at once; (calls of
    each, seconds from the first call to the last)."""
    counts = [0] * len(clients)
    begin = time.time()
    end = begin + seconds

    def run(n: int) -> None:
        while time.time() < end:
            try:
                clients[n].get_user("zhangsan")
                counts[n] += 1
            except RateLimited:
                time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts, time.time() - begin


def test_concurrent_workers_together_stay_within_the_quota(sim):
    clients = [worker(sim, Governor(budget=SMALL)) for _ in range(8)]
    for client in clients:  # each has its token and has read the corp's blocks: what follows is the race
        client.get_user("zhangsan")
    sim.set_quota(*QUOTA, apis=[API])

    counts, seconds = hammer(clients, 7)

    assert "45009" not in outcomes(sim), outcomes(sim)  # WeCom never had to refuse one
    assert sum(counts) + len(clients) == outcomes(sim)["0"]
    assert sum(counts) <= SMALL.limit * (int(seconds) + 2)  # a window's 6 for every second it ran, at most
    assert sum(counts) >= SMALL.limit * 2  # the workers got the budget, not one call each
    assert sum(1 for n in counts if n) >= 3  # and it went round them


def test_without_the_budget_the_same_workers_hit_the_quota(sim):
    sim.set_quota(*QUOTA, apis=[API])
    unlimited = Budget(window=1, limit=10 ** 6)
    clients = [worker(sim, Governor(budget=unlimited)) for _ in range(8)]

    hammer(clients, 4)

    assert outcomes(sim).get("45009", 0) > 0  # the quota is real: this is what the governor prevents


def _calls_from_another_process(base_url: str, seconds: float) -> dict:
    """One Lambda-like process: its own governor, token cache and boto3 clients."""
    governor = Governor(budget=SMALL)
    client = WeComClient(CREDS, base_url=base_url, token_store=TokenStore(), governor=governor)
    calls = refused = 0
    end = time.time() + seconds
    while time.time() < end:
        try:
            client.get_user("zhangsan")
            calls += 1
        except RateLimited:
            refused += 1
            time.sleep(0.05)
    return {"calls": calls, "refused": refused, "leases": governor.counters.leases}


@pytest.fixture
def moto_server(monkeypatch) -> Iterator[str]:
    """DynamoDB in a moto server that other processes reach too (no in-process mock here)."""
    from infra.local import stack
    from infra.local.moto_server import MotoProcess
    from tests.integration.conftest import create_scrm_table

    server = MotoProcess(port=0)
    endpoint = server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    stack._forget_scrm_state()
    create_scrm_table()
    yield endpoint
    server.stop()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    stack._forget_scrm_state()


def test_workers_in_separate_processes_together_stay_within_the_quota(moto_server):
    sim = start_sim()
    try:
        sim.set_quota(*QUOTA, apis=[API])
        with multiprocessing.get_context("spawn").Pool(3) as pool:
            results = pool.starmap(_calls_from_another_process, [(f"{sim.base_url}/cgi-bin", 6.0)] * 3)
        assert "45009" not in outcomes(sim), outcomes(sim)
        calls = sum(r["calls"] for r in results)
        assert calls == outcomes(sim)["0"] and calls <= SMALL.limit * 8
        assert all(r["calls"] for r in results)  # each process had its share
        # the budget lives in the table: the processes' leases were written there, not kept apart
        windows = boto3.client("dynamodb").scan(TableName=RateWindow.Meta.table_name, FilterExpression="entity = :e",
                                                ExpressionAttributeValues={":e": {"S": "RateWindow"}})["Items"]
        assert windows and max(int(w["used"]["N"]) for w in windows) <= SMALL.limit
    finally:
        sim.stop()


# --- 45033 and 45009 heard by one worker ------------------------------------------------------------
def leased_in_one_window(governor: Governor, clock: FakeClock) -> int:
    """How many calls `governor` gets before it has to wait for the next window."""
    start, taken = clock.now, 0
    while True:
        governor.acquire(CORP, API)
        if clock.now != start:  # it slept for the next window
            return taken
        taken += 1


def used(window_start: float) -> int:
    """Calls all workers leased in one window, as the table counts them."""
    pk, sk = keys.rate_window(CORP, API, int(window_start))
    item = boto3.client("dynamodb").get_item(TableName=RateWindow.Meta.table_name,
                                             Key={"PK": {"S": pk}, "SK": {"S": sk}}).get("Item", {})
    return int(item.get("used", {}).get("N", "0"))


def test_45033_heard_by_one_worker_slows_every_worker(sim):
    clock = FakeClock()
    budget = Budget(window=10, limit=20)
    one, other = Governor(clock, clock.sleep, budget), Governor(clock, clock.sleep, budget)
    window = clock.now
    sim.fail_next(API, 45033)

    worker(sim, one, clock, clock.sleep).get_user("zhangsan")  # retried after the 45033, answered

    assert outcomes(sim) == {"45033": 1, "0": 1}
    leased_in_one_window(other, clock)  # the other worker takes what it may of this window
    assert used(window) == 10  # half of the window's 20, for both together
    leased_in_one_window(Governor(clock, clock.sleep, budget), clock)  # a worker started since learns it too
    assert used(window + 10) == 10
    clock.now = window + 10 * 10  # the slowdown lasts a minute
    assert leased_in_one_window(Governor(clock, clock.sleep, budget), clock) == 20


def test_concurrent_45033s_halve_the_budget_once(ddb):
    clock = FakeClock()
    budget = Budget(window=10, limit=20)
    workers = [Governor(clock, clock.sleep, budget) for _ in range(4)]
    for governor in workers:  # four workers' calls refused at the same moment
        governor.observe(CORP, API, 45033)
    assert leased_in_one_window(Governor(clock, clock.sleep, budget), clock) == 10


def test_45009_heard_by_one_worker_stops_every_worker_without_a_call(sim):
    clock = FakeClock()
    one, other = Governor(clock, clock.sleep), Governor(clock, clock.sleep)
    other.check(CORP, API)  # the other worker has just read the corp's blocks: none
    sim.fail_next(API, 45009)

    with pytest.raises(RateLimited) as first:
        worker(sim, one, clock, clock.sleep).get_user("zhangsan")
    assert first.value.blocked_until == clock.now + 60

    calls = sim.stats()["calls"][API]
    with pytest.raises(RateLimited):  # learnt at its next lease, from this window's item
        worker(sim, other, clock, clock.sleep).get_user("zhangsan")
    clock.now += 15
    with pytest.raises(RateLimited):  # a worker starting later learns it from the block row
        worker(sim, Governor(clock, clock.sleep), clock, clock.sleep).get_user("zhangsan")
    assert sim.stats()["calls"][API] == calls  # nobody called WeCom meanwhile

    clock.now += 46
    worker(sim, Governor(clock, clock.sleep), clock, clock.sleep).get_user("zhangsan")  # the minute is over


# --- priorities ---------------------------------------------------------------------------------
def test_bulk_callers_leave_a_fifth_of_every_window_to_interactive_ones(ddb):
    clock = FakeClock()
    budget = Budget(window=10, limit=20)
    bulk, interactive = Governor(clock, clock.sleep, budget), Governor(clock, clock.sleep, budget)

    start, bulk_calls = clock.now, 0
    while clock.now == start:
        bulk.acquire(CORP, API, BULK)
        bulk_calls += int(clock.now == start)
    clock.now = start + 5  # back inside the window the bulk caller filled

    for _ in range(4):
        interactive.acquire(CORP, API, INTERACTIVE, deadline=clock.now + 1)  # no wait: the reserve
    assert clock.now == start + 5
    assert bulk_calls == 16
    with pytest.raises(OverBudget) as spent:  # the window is spent and the deadline comes first
        interactive.acquire(CORP, API, INTERACTIVE, deadline=clock.now + 1)
    assert clock.now == start + 5 and spent.value.blocked_until >= start + 10


def test_an_interactive_call_waits_for_the_next_window_when_its_deadline_allows(ddb):
    clock = FakeClock()
    governor = Governor(clock, clock.sleep, Budget(window=10, limit=2))
    for _ in range(2):
        governor.acquire(CORP, API)
    governor.acquire(CORP, API, deadline=clock.now + 15)
    assert clock.now >= 1_900_000_010 and governor.counters.waits == 1


# --- what it costs --------------------------------------------------------------------------------
def test_a_busy_worker_writes_once_per_lease_of_many_calls(ddb):
    clock = FakeClock()
    governor = Governor(clock, clock.sleep, Budget(window=10, limit=332))
    for _ in range(200):
        governor.acquire(CORP, API)
    assert governor.counters.leases <= 12  # 1, 2, 4, ... 32, 32, ...: under 0.06 writes a call
    assert governor.counters.refreshes == 1  # the corp's blocks, read once


def test_an_idle_worker_writes_once_per_call_and_leases_less_after_waste(ddb):
    clock = FakeClock()
    governor = Governor(clock, clock.sleep, Budget(window=10, limit=332))
    for _ in range(40):  # a lease grows to 32
        governor.acquire(CORP, API)
    leases = governor.counters.leases
    for _ in range(5):  # then one call every window: most of each lease would expire unused
        clock.now += 10
        governor.acquire(CORP, API)
    assert governor.counters.leases - leases == 5
    lease = governor._leases[(CORP, API)]
    assert lease.size < 32  # it asks for fewer once calls were left over
