"""A store's morning through the whole local stack, with WeCom misbehaving.

WeCom re-sends every callback four times and fails a third of its API calls with -1,
45033 or HTTP 502: every customer must still be welcomed exactly once, inside the
20-second window, with exactly one coupon. The queues keep the template's visibility
timeout: a welcome that only a redelivery could send (minutes later) is a missed one.
"""
from __future__ import annotations

import secrets

import pytest
from scrm.domain import coupons
from scrm.platform.config import business_day
from scrm.store import keys
from scrm.store.models import Welcome

from infra.local.demo import Demo
from infra.local.stack import TEMPLATE_VISIBILITY, LocalStack, demo_corp

CUSTOMERS = 8


def settle(stack, timeout: float) -> None:
    """Everything processed; else a first attempt failed and waits minutes for its redelivery."""
    try:
        stack.drain(timeout=timeout)
    except TimeoutError as err:
        pytest.fail(f"a first attempt failed: its message waits out the visibility timeout ({err})")


@pytest.fixture
def store(capsys, tmp_path):
    """A fresh stack with the demo's store set up: org, coupon, campaign, one code per staff."""
    corp = demo_corp(f"wwacq{secrets.token_hex(3)}")
    with LocalStack(moto_port=0, http_port=0, sim_port=0, visibility=TEMPLATE_VISIBILITY, corps=[corp],
                    logs=tmp_path / "logs") as stack:
        demo = Demo(stack)
        demo.org()
        demo.offer()
        demo.codes()
        assert not demo.problems
        yield demo


def test_resent_four_times_and_a_third_of_api_calls_failing_every_customer_is_welcomed_once_with_one_coupon(store):
    sim = store.sim
    sim.set_faults(1 / 3, ["-1", "45033", "http502"], seed=11)
    staff = sorted(store.state_of)
    customers = []
    for i in range(CUSTOMERS):
        userid = staff[i % len(staff)]
        added = sim.add_customer(store.corp_id, userid=userid, state=store.state_of[userid], name=f"c{i}", repeat=4)
        assert added["callback_status"] == [200] * 4
        customers.append((added["external_userid"], userid))
    settle(store.stack, 120)
    sim.set_faults(0, [])

    welcomes = sim.welcomes(store.corp_id)
    assert sorted(w["external_userid"] for w in welcomes) == sorted(c for c, _ in customers)
    assert all(w["elapsed"] < 20 for w in welcomes)
    for external_userid, userid in customers:
        held = coupons.customer_coupons(store.corp_id, external_userid)
        assert len(held) == 1, external_userid
        assert held[0].staff_userid == userid
        [welcome] = [w for w in welcomes if w["external_userid"] == external_userid]
        assert held[0].code in str(welcome)  # the welcome carried that customer's own code
    assert coupons.stock(store.corp_id, store.template_id)["issued"] == CUSTOMERS
    recorded = [w for c, u in customers for w in Welcome.query(keys.customer_pk(store.corp_id, c),
                                                               Welcome.SK.startswith(keys.WELCOME_PREFIX))]
    assert sorted((w.external_userid, w.status) for w in recorded) == sorted((c, "sent") for c, _ in customers)
    assert {w.coupon_code for w in recorded} == {coupons.customer_coupons(store.corp_id, c)[0].code
                                                 for c, _ in customers}
    day = business_day(welcomes[0]["sent_at"])
    [total] = store.api("GET", "/stats/daily", params={"scope": "corp", "from": day, "to": day}).json()["items"]
    assert (total["new_customers"], total["welcomes_sent"], total["coupons_issued"]) == (CUSTOMERS,) * 3


def test_a_customer_deleting_the_staff_member_and_a_lost_callback_healed_at_night(store):
    sim = store.sim
    userid = sorted(store.state_of)[0]
    kept = sim.add_customer(store.corp_id, userid=userid, state=store.state_of[userid])
    lost = sim.add_customer(store.corp_id, userid=userid, state=store.state_of[userid], deliver=False)
    sim.delete_follow(store.corp_id, userid=userid, external_userid=kept["external_userid"])
    settle(store.stack, 60)
    view = store.api("GET", f"/customers/{kept['external_userid']}").json()
    assert [f["status"] for f in view["follows"]] == ["deleted_by_customer"]
    assert store.api("GET", f"/customers/{lost['external_userid']}").status_code == 404

    store.stack.fire_schedule("ReconcileFunction")  # starts the corp's reconciliation job
    store.stack.drain(timeout=60)  # which the jobs function runs
    healed = store.api("GET", f"/customers/{lost['external_userid']}").json()
    assert [f["status"] for f in healed["follows"]] == ["active"]
    assert any(entry["what"].startswith("reconciled:") for entry in healed["timeline"])
