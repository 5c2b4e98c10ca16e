"""The burst figure (see bench/run.py): new customers arriving at once, each callback re-sent.

BURST_CUSTOMERS new customers (default 50) add their staff member within BURST_SECONDS
(default 1 s), through the staff's campaign codes, and WeCom delivers each add event
BURST_DELIVERIES times (default 4). Printed: how many were welcomed exactly once and with
their own coupon; the welcome's latency after the event (WeCom's 20-second window starts
then) at p50/p99; and the callback's own answer time at p50/p99, as WeCom measures it,
while the workers are busy with the burst.

The stack runs with the template's visibility timeout, so a first attempt that fails
shows as a missed welcome instead of being retried a few seconds later.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

from bench.run import line, pct

CUSTOMERS = int(os.environ.get("BURST_CUSTOMERS", "50"))
SECONDS = float(os.environ.get("BURST_SECONDS", "1"))
DELIVERIES = int(os.environ.get("BURST_DELIVERIES", "4"))


def store(stack):
    """The demo's store set up quietly (org, coupon template, campaign, one code per staff
    member), and as many instances of the functions the burst reaches as they may have,
    started beforehand as provisioned concurrency would be: the figure is the stack's
    steady state, not its cold starts."""
    import infra.local.demo as module

    say, module.say = module.say, lambda text="": None
    try:
        demo = module.Demo(stack)
        demo.org()
        demo.offer()
        demo.codes()
    finally:
        module.say = say
    stack.drain(timeout=60)
    stack.warm({name: stack.functions[name].max_instances
                for name in ("CallbackFunction", "WelcomeFunction", "WorkerFunction")})
    return demo


def run(stack, demo) -> None:
    """`demo` has set up the store (see `store`)."""
    sim = stack.sim
    staff = sorted(demo.state_of)
    seen_deliveries = len(sim.deliveries(demo.corp_id))
    added: list[dict] = []
    errors: list[BaseException] = []
    start = time.monotonic() + 0.2

    def customer(i: int) -> None:
        time.sleep(max(0.0, start + i * SECONDS / CUSTOMERS - time.monotonic()))
        userid = staff[i % len(staff)]
        try:
            added.append(sim.add_customer(demo.corp_id, userid=userid, state=demo.state_of[userid],
                                          name=f"burst{i}", repeat=DELIVERIES))
        except Exception as exc:  # noqa: BLE001 - counted below as a customer never added
            errors.append(exc)

    threads = [threading.Thread(target=customer, args=(i,), name=f"customer-{i}") for i in range(CUSTOMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    arrived = time.monotonic() - start
    drained = True
    try:
        stack.drain(timeout=120)
    except TimeoutError:
        drained = False

    ours = {a["external_userid"] for a in added}
    welcomes = [w for w in sim.welcomes(demo.corp_id) if w["external_userid"] in ours]
    times_welcomed = Counter(w["external_userid"] for w in welcomes)
    with_coupon = sum(1 for w in welcomes if times_welcomed[w["external_userid"]] == 1
                      and _own_coupon(demo, w))
    elapsed = [w["elapsed"] for w in welcomes]
    deliveries = sim.deliveries(demo.corp_id)[seen_deliveries:]
    answers = [d["seconds"] for d in deliveries]
    statuses = Counter(d["status"] for d in deliveries)

    line(f"burst: {CUSTOMERS} new customers within {SECONDS:g} s, each delivered {DELIVERIES}x",
         f"arrived in {arrived:.2f} s", "" if drained else "(not drained after 120 s)")
    line("customers welcomed exactly once", f"{sum(1 for n in times_welcomed.values() if n == 1)}/{CUSTOMERS}",
         f"(welcomed twice: {sum(1 for n in times_welcomed.values() if n > 1)}; not added: {len(errors)})")
    line("... each with their own coupon in the welcome", f"{with_coupon}/{CUSTOMERS}")
    if elapsed:
        line("welcome after the event p50", f"{pct(elapsed, 50) * 1000:.0f} ms")
        line("welcome after the event p99", f"{pct(elapsed, 99) * 1000:.0f} ms", "goal: < 5 s")
    line("callback answer p50 (while the workers are busy)", f"{pct(answers, 50) * 1000:.1f} ms")
    line("callback answer p99 (while the workers are busy)", f"{pct(answers, 99) * 1000:.1f} ms", "goal: < 100 ms")
    line("callbacks answered 200", f"{statuses[200]}/{CUSTOMERS * DELIVERIES}",
         ", ".join(f"{status}: {n}" for status, n in statuses.items() if status != 200))


def _own_coupon(demo, welcome: dict) -> bool:
    """The customer holds exactly one coupon, and its code is in the welcome that was sent."""
    from scrm.domain import coupons

    held = coupons.customer_coupons(demo.corp_id, welcome["external_userid"])
    return len(held) == 1 and held[0].code in str(welcome)
