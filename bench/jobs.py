"""Jobs and the rate budget (see bench/run.py): what the governor costs per WeCom call, and a
bulk job through the local stack."""
from __future__ import annotations

import threading
import time

import requests

from bench.run import line

BULK_STAFF = 60
BULK_STORE = 1900


def governor_cost() -> None:
    from scrm.wecom.apis.governor import BULK, Budget, Governor

    budget = Budget.from_settings()
    line("rate budget per corp and API, every 10 s window", f"{budget.limit} calls",
         f"(bulk callers {budget.cap(BULK, 1.0)}: a fifth stays for interactive ones)")

    busy = Governor()
    corp, calls, threads = f"wwbench{int(time.time())}", 100, 4

    def work() -> None:
        for _ in range(calls):
            busy.acquire(corp, "bench/busy")

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    line(f"DynamoDB writes per WeCom call, busy worker ({threads} threads)",
         f"{busy.counters.leases / (threads * calls):.3f}", f"({busy.counters.leases} leases, 1 block read)")

    now = [time.time() // 10 * 10]
    idle = Governor(lambda: now[0], lambda s: None)
    for _ in range(20):
        now[0] += 10  # one call a window: every lease but the first half-wasted, then sized to 1
        idle.acquire(corp, "bench/idle")
    line("DynamoDB writes per WeCom call, idle worker (one call a window)", f"{idle.counters.leases / 20:.2f}",
         "+ 1 Query of the corp's blocks per 10 s and process")


def bulk_job(stack, corp) -> None:
    """One code per staff member of a store of BULK_STAFF, as a job through the stack."""
    from scrm.domain.org import tree as org
    from scrm.wecom.apis.client import for_corp

    sim, corp_id = stack.sim, corp.corp_id
    sim.add_department(corp_id, BULK_STORE, "压测门店", parentid=100)
    for n in range(BULK_STAFF):
        sim.add_staff(corp_id, f"bench{n:03d}", department=(BULK_STORE,))
    org.full_sync(for_corp(corp_id), corp_id)
    ops = requests.Session()
    ops.headers["Authorization"] = f"Bearer {stack.ops_token(corp_id)}"
    before = dict(sim.stats()["calls"])
    started = time.monotonic()
    job_id = ops.post(f"{stack.gateway_url}/ops/contact-ways/bulk", json={"store_id": str(BULK_STORE)},
                      timeout=30).json()["job_id"]
    while True:
        job = ops.get(f"{stack.gateway_url}/ops/jobs/{job_id}", timeout=30).json()
        if job.get("finished_at") or time.monotonic() - started > 300:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    calls = {api: n - before.get(api, 0) for api, n in sim.stats()["calls"].items() if n != before.get(api, 0)}
    line(f"bulk codes for {BULK_STAFF} staff, as a job (local stack)", f"{elapsed:.1f} s",
         f"{job.get('state')}: {job.get('result', {}).get('created')} created")
    line("  WeCom calls by API", ", ".join(f"{api} {n}" for api, n in sorted(calls.items())))


def run(stack, corp) -> None:
    governor_cost()
    bulk_job(stack, corp)
