"""Issue 3 figures (see bench/run.py): welcome latency, requests per new customer, coupon claims."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench.run import CUSTOMERS, line, pct

# Customers arrive at this rate: latency is measured at a steady pace, not as the backlog
# of a burst that one local process (moto, gateway, pollers, simulator) has to work off.
ARRIVALS_PER_SECOND = float(os.environ.get("BENCH_ARRIVALS_PER_SECOND", "2"))
COUPON_CLAIMS = 200
COUPON_STOCK = 100


class AwsCallCounter:
    """Counts every AWS request made in this process, whichever client makes it."""

    def __init__(self):
        import botocore.client

        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._client_class = botocore.client.BaseClient
        self._original = self._client_class._make_api_call
        counter = self

        def counted(client, operation, params):
            service = client.meta.service_model.service_name
            if threading.current_thread().name.startswith("stream-"):  # infra.local.streams' threads
                service += " (stats projector)"  # it works off the stream, not on a customer's path
            with counter._lock:
                counter.counts[(service, operation)] += 1
            return counter._original(client, operation, params)

        self._client_class._make_api_call = counted

    def close(self) -> None:
        self._client_class._make_api_call = self._original

    def total(self, service: str, exclude: tuple[str, ...] = ()) -> int:
        return sum(n for (s, op), n in self.counts.items() if s == service and op not in exclude)


def run(stack, corp) -> None:
    from infra.local.demo import Demo

    demo = Demo(stack)
    quiet = _silence(demo)
    demo.org()
    demo.offer()
    demo.codes()
    quiet()
    stack.drain(timeout=60)
    _welcomes(stack, demo)
    _coupon_claims(corp.corp_id, demo)


def _welcomes(stack, demo) -> None:
    sim = stack.sim
    before_calls = Counter(sim.stats()["calls"])
    before_tokens = sum(sim.stats()["gettoken"].values())
    counter = AwsCallCounter()
    try:
        staff = sorted(demo.state_of)
        started = time.monotonic()
        for i in range(CUSTOMERS):
            time.sleep(max(0.0, started + i / ARRIVALS_PER_SECOND - time.monotonic()))
            userid = staff[i % len(staff)]
            sim.add_customer(demo.corp_id, userid=userid, state=demo.state_of[userid], name=f"bench{i}")
        stack.drain(timeout=120)
    finally:
        counter.close()
    welcomes = sim.welcomes(demo.corp_id)[-CUSTOMERS:]
    elapsed = [w["elapsed"] for w in welcomes]
    line("welcomes sent / new customers", f"{len(welcomes)}/{CUSTOMERS}",
         f"(arriving {ARRIVALS_PER_SECOND:g}/s)")
    line("callback-to-welcome latency p50 (local stack)", f"{pct(elapsed, 50) * 1000:.0f} ms")
    line("callback-to-welcome latency p99 (local stack)", f"{pct(elapsed, 99) * 1000:.0f} ms", "goal: < 2 s")
    calls = Counter(sim.stats()["calls"])
    calls.subtract(before_calls)
    tokens = sum(sim.stats()["gettoken"].values()) - before_tokens
    wecom = sum(n for path, n in calls.items() if "gettoken" not in path)
    line("WeCom calls per new customer (besides token refreshes)", f"{wecom / CUSTOMERS:.2f}",
         "goal: ≤ 2  (" + ", ".join(f"{p.rsplit('/', 1)[-1]} {n / CUSTOMERS:.2f}" for p, n in sorted(calls.items())
                           if n and "gettoken" not in p) + f"; gettoken {tokens})")
    dynamodb = counter.total("dynamodb")
    line("DynamoDB requests per new customer (callback + worker)", f"{dynamodb / CUSTOMERS:.1f}",
         "(" + ", ".join(f"{op} {n / CUSTOMERS:.1f}" for (s, op), n in sorted(counter.counts.items())
                         if s == "dynamodb") + ")")
    line("SQS sends per new customer", f"{counter.counts[('sqs', 'SendMessage')] / CUSTOMERS:.2f}")
    projector = "dynamodb (stats projector)"
    line("stats projector's DynamoDB requests per new customer (off the path)",
         f"{counter.total(projector) / CUSTOMERS:.1f}",
         "(" + ", ".join(f"{op} {n / CUSTOMERS:.1f}" for (s, op), n in sorted(counter.counts.items())
                         if s == projector) + ")")


def _coupon_claims(corp_id: str, demo) -> None:
    from scrm.domain import coupons

    template = coupons.create_template(corp_id, name="bench", kind="amount", amount=500, valid_days=7,
                                       total_stock=COUPON_STOCK)
    outcomes: Counter = Counter()

    def claim(i: int) -> None:
        result = coupons.issue(corp_id, template.template_id, f"wmbench{i:04d}", occasion="bench")
        outcomes[result.status] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=COUPON_CLAIMS) as pool:
        list(pool.map(claim, range(COUPON_CLAIMS)))
    seconds = time.perf_counter() - started
    stock = coupons.stock(corp_id, template.template_id)
    line(f"{COUPON_CLAIMS} concurrent claims, stock {COUPON_STOCK}: issued / out of stock",
         f"{outcomes['issued']} / {outcomes['out_of_stock']}")
    line("coupon claims per second (all outcomes; moto, one process)", f"{COUPON_CLAIMS / seconds:.0f}/s")
    line("oversold coupons", f"{max(0, outcomes['issued'] - COUPON_STOCK)}", "goal: 0"
         + (f"  (stock left {stock['remaining']})" if "remaining" in stock else ""))


def _silence(demo):
    """The demo's setup steps print; the benchmark only wants its figures."""
    import infra.local.demo as module

    original = module.say
    module.say = lambda text="": None
    return lambda: setattr(module, "say", original)
