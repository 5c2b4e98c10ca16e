"""The welcome message: once, inside the window, with the coupon only when it fits."""
from __future__ import annotations

import time

import pytest
from scrm.domain import coupons
from scrm.domain.contact_ways import campaigns, ways
from scrm.domain.org import tree as org
from scrm.domain.welcome import lane as welcome
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps, keys
from scrm.store.models import Welcome
from scrm.wecom.apis.client import for_corp
from scrm.wecom.callback.events import normalize

from tests.support.callbacks import VECTOR_A

CORP = VECTOR_A["corp_id"]


@pytest.fixture
def store(aws, simulated_wecom):
    """A store with one staff member, a coupon, a campaign with a welcome, and their code."""
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    simulated_wecom.add_department(CORP, 2, "门店", parentid=1)
    simulated_wecom.add_staff(CORP, "zhangsan", "张三", department=(2,))
    org.set_rule(CORP, {"mode": "depth", "store": 2})
    org.full_sync(for_corp(CORP), CORP)
    template = coupons.create_template(CORP, name="新客券", kind="amount", amount=1000, valid_days=7, total_stock=1)
    campaign = campaigns.create_campaign(CORP, name="开业", coupon_template_id=template.template_id,
                                            welcome={"text": "欢迎！券码 {coupon_code}",
                                                     "link": {"title": "我的券", "url": "https://x.example/c"}})
    way = ways.create_contact_way(for_corp(CORP), CORP, owner_kind="staff", users=["zhangsan"],
                                          campaign_id=campaign.campaign_id)
    return simulated_wecom, way, template


def add_event(sim, way, create_time=None):
    added = sim.add_customer(CORP, userid="zhangsan", state=way.state, deliver=False)
    fields = {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(int(create_time or time.time())),
              "MsgType": "event", "Event": "change_external_contact", "ChangeType": "add_external_contact",
              "UserID": "zhangsan", "ExternalUserID": added["external_userid"], "State": way.state,
              "WelcomeCode": added["welcome_code"]}
    return normalize(CORP, fields), added["external_userid"]


def welcome_row(event) -> Welcome:
    f = event.fields
    return Welcome.get(*keys.welcome(CORP, f["ExternalUserID"], f["UserID"], f["WelcomeCode"]))


def test_the_welcome_carries_the_customers_coupon_in_text_and_link(store):
    sim, way, template = store
    event, customer = add_event(sim, way)
    assert welcome.send_for(event, for_corp(CORP)) == "welcome_sent"
    [sent] = sim.welcomes(CORP)
    [coupon] = coupons.customer_coupons(CORP, customer)
    assert coupon.code in sent["text"] and "{coupon_code}" not in sent["text"]
    assert sent["attachments"][0]["link"]["url"].endswith(f"?coupon={coupon.code}")
    assert welcome_row(event).coupon_reason == "issued"


def test_the_same_event_twice_sends_one_welcome(store):
    sim, way, _ = store
    event, _ = add_event(sim, way)
    assert welcome.send_for(event, for_corp(CORP)) == "welcome_sent"
    assert welcome.send_for(event, for_corp(CORP)) == "welcome_already_handled"
    assert len(sim.welcomes(CORP)) == 1


def test_out_of_stock_the_welcome_goes_without_a_coupon_and_says_why(store):
    sim, way, _ = store
    first, _ = add_event(sim, way)
    second, _ = add_event(sim, way)
    welcome.send_for(first, for_corp(CORP))
    assert welcome.send_for(second, for_corp(CORP)) == "welcome_sent"
    assert len(sim.welcomes(CORP)) == 2
    assert welcome_row(second).coupon_reason == "out_of_stock"
    assert welcome_row(second).coupon_code is None


def test_with_too_little_of_the_window_left_the_coupon_is_skipped(store):
    sim, way, template = store
    event, customer = add_event(sim, way, create_time=time.time() - 14)  # 6 s of 20 left, minus safety
    assert welcome.send_for(event, for_corp(CORP)) == "welcome_sent"
    assert welcome_row(event).coupon_reason == "no_time"
    assert coupons.customer_coupons(CORP, customer) == []


def test_after_the_window_nothing_is_sent(store):
    sim, way, _ = store
    event, _ = add_event(sim, way, create_time=time.time() - 25)
    assert welcome.send_for(event, for_corp(CORP)) == "welcome_failed:window_closed"
    assert sim.welcomes(CORP) == []


def test_a_worker_that_died_mid_send_is_taken_over_and_41051_counts_as_delivered(store, monkeypatch):
    sim, way, _ = store
    event, _ = add_event(sim, way)
    client = for_corp(CORP)
    f = event.fields
    client.send_welcome_msg(f["WelcomeCode"], "sent by the worker that then died")
    Welcome(*keys.welcome(CORP, f["ExternalUserID"], f["UserID"], f["WelcomeCode"]),
            external_userid=f["ExternalUserID"], userid="zhangsan", status="sending",
            claimed_at=int(time.time()) - 30, lease_until=int(time.time()) - 20, attempts=1).save()
    assert welcome.send_for(event, client) == "welcome_sent:already_delivered"
    assert welcome_row(event).attempts == 2


def test_an_active_claim_of_another_worker_is_left_alone(store):
    sim, way, _ = store
    event, _ = add_event(sim, way)
    f = event.fields
    Welcome(*keys.welcome(CORP, f["ExternalUserID"], f["UserID"], f["WelcomeCode"]),
            external_userid=f["ExternalUserID"], userid="zhangsan", status="sending",
            claimed_at=int(time.time()), lease_until=int(time.time()) + 10, attempts=1).save()
    assert welcome.send_for(event, for_corp(CORP)) == "welcome_already_handled"
    assert sim.welcomes(CORP) == []
