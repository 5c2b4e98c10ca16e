"""Acquisition figures (see bench/run.py): welcome latency, the cost of a new customer in WeCom
calls and DynamoDB requests and write units, coupon claims."""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench.run import CUSTOMERS, line, pct

# Customers arrive at this rate: latency is measured at a steady pace, not as the backlog
# of a burst that one local process (moto, gateway, pollers, simulator) has to work off.
ARRIVALS_PER_SECOND = float(os.environ.get("BENCH_ARRIVALS_PER_SECOND", "2"))
COUPON_CLAIMS = 200
COUPON_STOCK = 100


PROJECTOR = "StatsFunction"


class AwsCallCounter:
    """The AWS requests every process made meanwhile, as the moto server counted them."""

    def __init__(self, stack):
        self._stack = stack
        self._before = stack.aws_requests()
        self._before_projector = stack.aws_requests(PROJECTOR)
        self.counts: Counter = Counter()
        self.projector: Counter = Counter()  # the stats projector's own, off the customer's path

    def close(self) -> None:
        after = self._stack.aws_requests()
        after.subtract(self._before)
        projector = self._stack.aws_requests(PROJECTOR)
        projector.subtract(self._before_projector)
        after.subtract(projector)
        self.projector = Counter({name: n for name, n in projector.items() if n})
        self.counts = Counter({tuple(name.split(":", 1)): n for name, n in after.items() if n})


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
    from infra.local import meter

    sim = stack.sim
    before_calls = Counter(sim.stats()["calls"])
    before_tokens = sum(sim.stats()["gettoken"].values())
    before_meter = meter.read(stack.endpoint)
    counter = AwsCallCounter(stack)
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
    line("SQS sends per new customer", f"{counter.counts[('sqs', 'SendMessage')] / CUSTOMERS:.2f}")
    _dynamodb_cost(meter.read(stack.endpoint), before_meter)
    projector = counter.projector
    line("stats projector's AWS requests per new customer (off the path, from the stream)",
         f"{sum(projector.values()) / CUSTOMERS:.1f}",
         "(" + ", ".join(f"{name} {n / CUSTOMERS:.1f}" for name, n in sorted(projector.items())) + ")")


def _dynamodb_cost(after: dict, before: dict) -> None:
    """Section 6: DynamoDB requests and write units per new customer, as the moto server
    metered them, from the callback's PutItem to the worker marking the event processed."""
    requests = Counter(after["requests"])
    requests.subtract(before["requests"])
    total = sum(requests.values())
    line("DynamoDB requests per new customer", f"{total / CUSTOMERS:.2f}", "goal: ≤ 12 (≤ 10 before the rate governor)")
    for name, n in sorted(requests.items(), key=lambda item: (-item[1], item[0])):
        if n:
            print(f"      {n / CUSTOMERS:5.2f}  {name}")
    table = after["write_units"] - before["write_units"]
    index = after["index_write_units"] - before["index_write_units"]
    line("DynamoDB write units per new customer (table + indexes)", f"{(table + index) / CUSTOMERS:.1f}",
         f"({table / CUSTOMERS:.1f} + {index / CUSTOMERS:.1f}, from item sizes)")


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
    line("coupon claims per second (all outcomes; 200 threads of one process)", f"{COUPON_CLAIMS / seconds:.0f}/s")
    line("oversold coupons", f"{max(0, outcomes['issued'] - COUPON_STOCK)}", "goal: 0"
         + (f"  (stock left {stock['remaining']})" if "remaining" in stock else ""))


def _silence(demo):
    """The demo's setup steps print; the benchmark only wants its figures."""
    import infra.local.demo as module

    original = module.say
    module.say = lambda text="": None
    return lambda: setattr(module, "say", original)
