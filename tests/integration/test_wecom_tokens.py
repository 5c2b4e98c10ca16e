"""The shared access token and API blocks across workers: moto table + the WeCom simulator.

Each "worker" is a WeComClient with its own TokenStore (its own process-local cache), so
the table is the only thing they share, as separate Lambda instances would.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import pytest
from scrm.platform.credentials import CorpCredentials
from scrm.store import keys
from scrm.store.models import AccessToken, ApiBlock
from scrm.wecom.apis.client import WeComClient, forget_caches
from scrm.wecom.apis.errors import ConfigurationError, RateLimited
from scrm.wecom.apis.tokens import LEASE_SECONDS, REFRESH_MARGIN, TokenStore

from infra.local.wecom_sim import TOKEN_TTL, WeComSimulator

CORP, AGENT, SECRET = "wwsim", "1000002", "sim-secret"
CREDS = CorpCredentials(corp_id=CORP, token="cbtoken", encoding_aes_key="a" * 43, secret=SECRET, agent_id=AGENT)
WORKERS = 20


@pytest.fixture
def sim(ddb: str) -> Iterator[WeComSimulator]:
    forget_caches()
    # PynamoDB starts one botocore client per model class on first use: start them now so
    # that the threads race on the lease, not on botocore's start-up.
    AccessToken.exists()
    ApiBlock.exists()
    simulator = WeComSimulator()
    simulator.start(host="127.0.0.1", port=0)
    simulator.add_corp(CORP, SECRET, CREDS.token, CREDS.encoding_aes_key, int(AGENT))
    yield simulator
    simulator.stop()
    forget_caches()


def worker(sim: WeComSimulator, creds: CorpCredentials = CREDS, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep) -> WeComClient:
    return WeComClient(creds, base_url=f"{sim.base_url}/cgi-bin", token_store=TokenStore(clock, sleep),
                       clock=clock, sleep=sleep)


def must_not_fetch() -> tuple[str, float]:
    raise AssertionError("gettoken was not expected here")


def stored_token() -> str | None:
    return AccessToken.get(*keys.access_token(CORP, AGENT), consistent_read=True).token


def run_together(tasks: list[Callable[[], object]]) -> list[object]:
    """Start every task at the same instant on its own thread; results or raised exceptions."""
    barrier = threading.Barrier(len(tasks))
    results: list[object] = [None] * len(tasks)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = tasks[i]()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_workers_share_one_token(sim: WeComSimulator) -> None:
    workers = [worker(sim) for _ in range(WORKERS)]
    results = run_together([w.get_follow_user_list for w in workers])
    assert all(isinstance(r, dict) and r["errcode"] == 0 for r in results), results
    assert sim.gettoken_counts[CORP] == 1
    token = stored_token()
    assert token and all(w.tokens.get(CORP, AGENT, must_not_fetch) == token for w in workers)
    assert sum(w.counters.token_refreshes for w in workers) == 1


def test_expiry_on_the_simulator_clock_refreshes_once(sim: WeComSimulator) -> None:
    workers = [worker(sim, clock=sim.now) for _ in range(5)]
    workers[0].get_follow_user_list()
    first = stored_token()
    sim.advance(TOKEN_TTL - REFRESH_MARGIN + 1)  # inside the refresh margin, not yet expired
    results = run_together([w.get_follow_user_list for w in workers])
    assert all(isinstance(r, dict) for r in results), results
    assert sim.gettoken_counts[CORP] == 2
    assert stored_token() not in (None, first)
    sim.advance(60)  # the new token is good for ~2 h: no further refresh
    for w in workers:
        w.get_follow_user_list()
    assert sim.gettoken_counts[CORP] == 2


def test_dead_lease_holder_is_taken_over_after_the_lease(sim: WeComSimulator) -> None:
    holder_started, kill = threading.Event(), threading.Event()

    def hang_in_gettoken() -> tuple[str, float]:
        holder_started.set()
        kill.wait(30)  # a Lambda frozen or killed mid-refresh: it never writes the token
        raise RuntimeError("killed")

    def holder() -> None:
        try:
            TokenStore(sim.now).get(CORP, AGENT, hang_in_gettoken)
        except RuntimeError:
            pass

    threading.Thread(target=holder, daemon=True).start()
    assert holder_started.wait(10)
    row = AccessToken.get(*keys.access_token(CORP, AGENT))
    assert row.lease_owner and row.lease_until > sim.now() and not row.token

    start = sim.now()
    survivor = worker(sim, clock=sim.now, sleep=sim.advance)  # its waiting moves the simulator clock
    assert survivor.get_follow_user_list()["errcode"] == 0
    waited = sim.now() - start
    assert LEASE_SECONDS <= waited < LEASE_SECONDS + 2
    assert sim.gettoken_counts[CORP] == 1
    row = AccessToken.get(*keys.access_token(CORP, AGENT))
    assert row.token and row.lease_until == 0 and row.lease_owner is None
    kill.set()


def test_invalidate_keeps_a_newer_token(sim: WeComSimulator) -> None:
    a, b = worker(sim), worker(sim)
    a.get_follow_user_list()
    old = stored_token()
    # B is told the token is invalid and refreshes; A hears the same about the old token later.
    b.tokens.invalidate(CORP, AGENT, old)
    b.get_follow_user_list()
    new = stored_token()
    assert new and new != old
    a.tokens.invalidate(CORP, AGENT, old)
    assert stored_token() == new
    a.get_follow_user_list()  # A drops its local copy and takes B's token from the table
    assert a.tokens.get(CORP, AGENT, must_not_fetch) == new
    assert sim.gettoken_counts[CORP] == 2


def test_a_token_wecom_refuses_is_replaced_once(sim: WeComSimulator) -> None:
    pk, sk = keys.access_token(CORP, AGENT)
    AccessToken(pk, sk, token="revoked-by-wecom", token_expires_at=time.time() + 3600).save()
    client = worker(sim)
    assert client.get_follow_user_list()["errcode"] == 0  # 40014 -> invalidate, refresh, retry
    assert sim.gettoken_counts[CORP] == 1
    assert sim.stats()["outcomes"]["externalcontact/get_follow_user_list"] == {"40014": 1, "0": 1}
    assert stored_token() not in (None, "revoked-by-wecom")


def test_wrong_secret_calls_gettoken_once_for_all_workers(sim: WeComSimulator) -> None:
    wrong = CorpCredentials(corp_id=CORP, token="t", encoding_aes_key="a" * 43, secret="wrong", agent_id=AGENT)
    workers = [worker(sim, creds=wrong) for _ in range(WORKERS)]
    results = run_together([w.get_follow_user_list for w in workers])
    assert all(isinstance(r, ConfigurationError) and r.errcode == 40001 for r in results), results
    assert sim.gettoken_counts[CORP] == 1
    with pytest.raises(ConfigurationError):  # still held: nobody calls gettoken again yet
        worker(sim, creds=wrong).get_follow_user_list()
    assert sim.gettoken_counts[CORP] == 1


def test_45009_block_row_stops_other_workers_without_calling(sim: WeComSimulator) -> None:
    sim.block_api("externalcontact/list", 45009)
    with pytest.raises(RateLimited) as raised:
        worker(sim).list_external_contacts("zhangsan")
    assert raised.value.blocked_until > time.time() + 55
    forget_caches()  # the next worker has never seen the block: it reads the table
    with pytest.raises(RateLimited):
        worker(sim).list_external_contacts("zhangsan")
    assert sim.call_counts["externalcontact/list"] == 1
