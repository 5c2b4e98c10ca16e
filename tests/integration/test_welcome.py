"""The welcome message: once, inside the window, with the coupon only when it fits, never a raw
placeholder, and never lost to another customer's transaction or to a failing table."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from moto.dynamodb.exceptions import TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend
from scrm.domain import coupons
from scrm.domain.contact_ways import campaigns, ways
from scrm.domain.org import tree as org
from scrm.domain.welcome import claim, defaults, lane
from scrm.entry import welcome as entry
from scrm.platform.config import settings
from scrm.platform.credentials import CorpCredentials
from scrm.platform.errors import Invalid
from scrm.store import corps, keys, read_cache
from scrm.store.models import Campaign, CouponStock, Follow, TimelineEntry, Welcome
from scrm.wecom.apis.client import for_corp
from scrm.wecom.callback.events import normalize

from tests.support.callbacks import VECTOR_A

CORP = VECTOR_A["corp_id"]
STORE = "2"
WITH_CODE = {"text": "欢迎！券码 {coupon_code}", "link": {"title": "我的券", "url": "https://x.example/c"},
             "without_coupon": {"text": "欢迎光临！", "link": {"title": "门店", "url": "https://x.example/s"}}}


@pytest.fixture
def store(aws, simulated_wecom):
    """A store with two staff members, a coupon, a running campaign with a welcome, and codes."""
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    simulated_wecom.add_department(CORP, int(STORE), "门店", parentid=1)
    simulated_wecom.add_staff(CORP, "zhangsan", "张三", department=(int(STORE),))
    simulated_wecom.add_staff(CORP, "lisi", "李四", department=(int(STORE),))
    org.set_rule(CORP, {"mode": "depth", "store": 2})
    org.full_sync(for_corp(CORP), CORP)
    template = coupons.create_template(CORP, name="新客券", kind="amount", amount=1000, valid_days=7, total_stock=1)
    campaign = campaigns.create_campaign(CORP, name="开业", coupon_template_id=template.template_id,
                                         welcome=WITH_CODE)
    way = ways.create_contact_way(for_corp(CORP), CORP, owner_kind="staff", users=["zhangsan"],
                                  campaign_id=campaign.campaign_id)
    return simulated_wecom, way, template, campaign


def add_event(sim, way=None, create_time=None, userid="zhangsan"):
    """A customer adds `userid` (through `way`, or by phone search when None); the event, undelivered."""
    added = sim.add_customer(CORP, userid=userid, state=way.state if way else None, deliver=False)
    fields = {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(int(create_time or time.time())),
              "MsgType": "event", "Event": "change_external_contact", "ChangeType": "add_external_contact",
              "UserID": userid, "ExternalUserID": added["external_userid"], "WelcomeCode": added["welcome_code"]}
    if way is not None:
        fields["State"] = way.state
    return normalize(CORP, fields), added["external_userid"]


def welcome_row(event) -> Welcome:
    f = event.fields
    return Welcome.get(*keys.welcome(CORP, f["ExternalUserID"], f["UserID"], f["WelcomeCode"]), consistent_read=True)


def handle(event) -> str:
    """What WelcomeFunction does with one record (scrm.entry.worker.process_message opens the scope)."""
    with read_cache.scope():
        return entry.handle(event)


def sent_to(sim, customer: str) -> dict:
    [sent] = [w for w in sim.welcomes(CORP) if w["external_userid"] == customer]
    return sent


# --- what the welcome says -------------------------------------------------------------------
def test_the_welcome_carries_the_customers_coupon_in_text_and_link(store):
    sim, way, template, _ = store
    event, customer = add_event(sim, way)
    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"
    [coupon] = coupons.customer_coupons(CORP, customer)
    sent = sent_to(sim, customer)
    assert sent["text"] == f"欢迎！券码 {coupon.code}"
    assert sent["attachments"][0]["link"]["url"] == f"https://x.example/c?coupon={coupon.code}"
    row = welcome_row(event)
    assert (row.status, row.coupon_code, row.coupon_reason, row.source) == ("sent", coupon.code, "issued", "campaign")


def test_the_same_event_twice_sends_one_welcome(store):
    sim, way, _, _ = store
    event, _ = add_event(sim, way)
    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"
    assert lane.send_for(event, for_corp(CORP)) == "welcome_already_handled"
    assert len(sim.welcomes(CORP)) == 1


def test_out_of_stock_the_welcome_goes_without_a_coupon_in_its_own_words(store):
    sim, way, _, _ = store
    first, _ = add_event(sim, way)
    second, customer = add_event(sim, way)
    lane.send_for(first, for_corp(CORP))
    assert lane.send_for(second, for_corp(CORP)) == "welcome_sent"
    sent = sent_to(sim, customer)
    assert sent["text"] == "欢迎光临！" and sent["attachments"][0]["link"]["url"] == "https://x.example/s"
    assert "{coupon_code}" not in str(sent)
    assert (welcome_row(second).coupon_reason, welcome_row(second).coupon_code) == ("out_of_stock", None)


def test_with_too_little_of_the_window_left_the_coupon_is_skipped_and_the_variant_sent(store):
    sim, way, _, _ = store
    event, customer = add_event(sim, way, create_time=time.time() - 14)  # 6 s of 20 left, minus safety
    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"
    assert welcome_row(event).coupon_reason == "no_time"
    assert coupons.customer_coupons(CORP, customer) == []
    assert sent_to(sim, customer)["text"] == "欢迎光临！"


def test_a_coupon_that_cannot_be_issued_leaves_the_welcome_without_a_placeholder(store, monkeypatch):
    sim, way, _, _ = store

    def broken(*args, **kwargs):
        raise RuntimeError("coupon service down")

    monkeypatch.setattr(coupons, "issue", broken)
    event, customer = add_event(sim, way)
    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"
    assert "{coupon_code}" not in str(sent_to(sim, customer))
    assert welcome_row(event).coupon_reason == "error:RuntimeError"


def test_a_welcome_stored_without_its_variant_never_shows_the_placeholder(store):
    sim, way, template, campaign = store
    campaign.update(actions=[Campaign.welcome.set(
        {"text": "券码 {coupon_code}", "link": {"title": "我的券", "url": "https://x.example/c"}})])
    coupons.issue(CORP, template.template_id, "wmSomeoneElse", occasion="o")  # the only coupon is gone
    event, customer = add_event(sim, way)
    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"
    sent = sent_to(sim, customer)
    assert (sent["text"], [a["link"]["url"] for a in sent["attachments"]]) == ("", ["https://x.example/c"])


@pytest.mark.parametrize(("welcome", "field"), [
    ({"text": "券码 {coupon_code}"}, "welcome.without_coupon"),
    ({"link": {"title": "券", "url": "https://x.example/?c={coupon_code}"}}, "welcome.without_coupon"),
    ({"text": "hi", "link": {"title": "券 {coupon_code}", "url": "https://x.example/"}}, "welcome.link.title"),
    ({"text": "券码 {coupon_code}", "without_coupon": {"text": "也是 {coupon_code}"}}, "welcome.without_coupon.text"),
    ({"text": "券码 {coupon_code}", "without_coupon": {}}, "welcome.without_coupon"),
    ({"text": "x" * 3990 + "{coupon_code}", "without_coupon": {"text": "hi"}}, "welcome.text"),
])
def test_a_welcome_that_would_not_read_well_without_its_coupon_is_refused_when_configured(store, welcome, field):
    with pytest.raises(Invalid) as raised:
        campaigns.create_campaign(CORP, name="x", welcome=welcome)
    assert raised.value.field == field
    _, way, _, _ = store
    with pytest.raises(Invalid) as raised:
        ways.update_contact_way(for_corp(CORP), CORP, way.config_id, welcome=welcome)
    assert raised.value.field == field


# --- campaign dates ------------------------------------------------------------------------------
@pytest.mark.parametrize("dates", [{"ends_at": -60}, {"starts_at": 3600}])
def test_a_campaign_outside_its_dates_issues_nothing_and_its_welcome_gives_way(store, dates):
    sim, way, template, campaign = store
    now = int(time.time())
    campaigns.update_campaign(CORP, campaign.campaign_id, **{k: now + v for k, v in dates.items()},
                              **({"starts_at": now - 7200} if "ends_at" in dates else {}))
    defaults.set_defaults(CORP, corp={"text": "欢迎关注我们的门店"})
    event, customer = add_event(sim, way)

    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"

    assert coupons.customer_coupons(CORP, customer) == []
    assert coupons.stock(CORP, template.template_id)["issued"] == 0
    assert sent_to(sim, customer)["text"] == "欢迎关注我们的门店"
    row = welcome_row(event)
    assert (row.source, row.campaign_id, row.coupon_code) == ("corp_default", None, None)


def test_a_way_with_its_own_welcome_keeps_it_when_the_campaign_is_over_without_the_coupon(store):
    sim, way, template, campaign = store
    ways.update_contact_way(for_corp(CORP), CORP, way.config_id, welcome={
        "text": "张三欢迎您，券码 {coupon_code}", "without_coupon": {"text": "张三欢迎您"}})
    now = int(time.time())
    campaigns.update_campaign(CORP, campaign.campaign_id, starts_at=now - 7200, ends_at=now - 60)
    event, customer = add_event(sim, way)

    lane.send_for(event, for_corp(CORP))

    assert sent_to(sim, customer)["text"] == "张三欢迎您"
    assert coupons.stock(CORP, template.template_id)["issued"] == 0


def test_the_dates_are_those_of_the_add_not_of_the_processing(store):
    sim, way, template, campaign = store
    event, customer = add_event(sim, way, create_time=time.time() - 3)
    campaigns.update_campaign(CORP, campaign.campaign_id, ends_at=int(time.time()) - 1)  # ended after the add
    lane.send_for(event, for_corp(CORP))
    assert len(coupons.customer_coupons(CORP, customer)) == 1


# --- default welcomes ------------------------------------------------------------------------------
def test_a_customer_with_no_state_gets_the_store_default_else_the_corp_default(store):
    sim, _, _, _ = store
    event, customer = add_event(sim)  # a phone search: no state
    assert lane.send_for(event, for_corp(CORP)) == "welcome_skipped:no_welcome_configured"

    defaults.set_defaults(CORP, corp={"text": "总部欢迎您"})
    event, customer = add_event(sim)
    lane.send_for(event, for_corp(CORP))
    assert sent_to(sim, customer)["text"] == "总部欢迎您"

    defaults.set_defaults(CORP, stores={STORE: {"text": "门店欢迎您", "link": {"title": "到店", "url": "https://x.example"}}})
    event, customer = add_event(sim, userid="lisi")
    lane.send_for(event, for_corp(CORP))
    assert sent_to(sim, customer)["text"] == "门店欢迎您"
    assert welcome_row(event).source == "store_default"

    defaults.set_defaults(CORP, stores={STORE: None})
    event, customer = add_event(sim)
    lane.send_for(event, for_corp(CORP))
    assert sent_to(sim, customer)["text"] == "总部欢迎您"


def test_defaults_are_set_all_or_nothing_and_read_back_page_by_page(store):
    with pytest.raises(Invalid) as raised:
        defaults.set_defaults(CORP, corp={"text": "ok"}, stores={STORE: {"text": "ok"}, "999": {"text": "x"}})
    assert raised.value.field == "stores.999"
    assert defaults.get_defaults(CORP) == ({"corp": None, "stores": {}}, None)
    with pytest.raises(Invalid) as raised:
        defaults.set_defaults(CORP, corp={"text": "券码 {coupon_code}"})
    assert raised.value.field == "corp.text"

    assert defaults.set_defaults(CORP, corp={"text": "总部"}, stores={STORE: {"text": "门店"}}) == {
        "corp": {"text": "总部"}, "stores": {STORE: {"text": "门店"}}}
    assert defaults.get_defaults(CORP, limit=2) == ({"corp": {"text": "总部"}, "stores": {STORE: {"text": "门店"}}},
                                                    None)
    defaults.set_defaults(CORP, corp=None)
    assert defaults.get_defaults(CORP)[0]["corp"] is None


# --- WeCom's answers ------------------------------------------------------------------------------
def test_a_welcome_whose_answer_was_lost_is_recorded_sent_when_the_retry_hears_41051(store, monkeypatch):
    sim, way, _, _ = store
    monkeypatch.setenv("WECOM_TIMEOUT", "1")
    settings.cache_clear()
    handle_api, lost = sim.handle_api, []

    def answer_lost_once(method, api, query, body):
        result = handle_api(method, api, query, body)
        if api == "externalcontact/send_welcome_msg" and not lost:
            lost.append(api)
            time.sleep(1.5)  # applied, but the answer comes after the client gave up
        return result

    monkeypatch.setattr(sim, "handle_api", answer_lost_once)
    event, customer = add_event(sim, way)

    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent:earlier_attempt_arrived"
    assert sim.outcome_counts[("externalcontact/send_welcome_msg", "41051")] == 1
    assert len(sim.welcomes(CORP)) == 1 and welcome_row(event).status == "sent"
    settings.cache_clear()


def test_41051_at_the_first_attempt_is_another_apps_welcome(store):
    sim, way, _, _ = store
    event, _ = add_event(sim, way)
    for_corp(CORP).send_welcome_msg(event.fields["WelcomeCode"], "from the admin console's app")
    assert lane.send_for(event, for_corp(CORP)) == "welcome_skipped:already_delivered"


def test_after_the_window_nothing_is_sent(store):
    sim, way, _, _ = store
    event, _ = add_event(sim, way, create_time=time.time() - 25)
    assert lane.send_for(event, for_corp(CORP)) == "welcome_failed:window_closed"
    assert sim.welcomes(CORP) == []
    assert welcome_row(event).status == "failed"


# --- the claim: one holder, its code kept, its outcome recorded -----------------------------------------
def test_a_duplicate_arriving_mid_send_never_takes_over_and_the_first_worker_records_sent(store, monkeypatch):
    sim, way, _, _ = store
    event, customer = add_event(sim, way, create_time=time.time() - 1)
    handle_api, gate, arrived = sim.handle_api, threading.Event(), threading.Event()

    def slow_first_send(method, api, query, body):
        if api == "externalcontact/send_welcome_msg" and not arrived.is_set():
            arrived.set()
            gate.wait(10)  # WeCom is slow to answer the first worker
        return handle_api(method, api, query, body)

    monkeypatch.setattr(sim, "handle_api", slow_first_send)
    outcomes = {}
    first = threading.Thread(target=lambda: outcomes.update(first=lane.send_for(event, for_corp(CORP))))
    first.start()
    assert arrived.wait(10)
    # The duplicate comes 11 s after the claim (past a 10 s lease), still inside the window.
    outcomes["second"] = lane.send_for(event, for_corp(CORP), now=lambda: time.time() + 11)
    gate.set()
    first.join(15)

    assert outcomes == {"first": "welcome_sent", "second": "welcome_already_handled"}
    assert len(sim.welcomes(CORP)) == 1
    assert welcome_row(event).status == "sent"
    assert sim.call_counts["externalcontact/send_welcome_msg"] == 1


def test_only_the_holder_of_the_claim_records_an_outcome(store):
    sim, way, _, _ = store
    event, customer = add_event(sim, way)
    row = claim.new(CORP, customer, "zhangsan", event.fields["WelcomeCode"], create_time=event.create_time,
                    now=time.time())
    assert claim.put(row)
    intruder = Welcome.get(row.PK, row.SK)
    intruder.holder = "someone-else"

    assert claim.record(intruder, "failed", "window_closed") is False
    assert claim.record(row, "sent") is True
    assert claim.record(row, "failed", "late") is False  # settled: nobody writes over it
    assert welcome_row(event).status == "sent"


def fail_welcome_updates(monkeypatch, times: int) -> Counter:
    """The table refuses the next `times` updates of Welcome rows (as when it throttles)."""
    from pynamodb.exceptions import UpdateError

    update, failures = Welcome.update, Counter()

    def flaky(self, *args, **kwargs):
        if failures["done"] < times:
            failures["done"] += 1
            raise UpdateError("ProvisionedThroughputExceededException")
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Welcome, "update", flaky)
    return failures


def test_a_failing_record_is_retried_so_a_sent_welcome_is_recorded_sent(store, monkeypatch):
    sim, way, _, _ = store
    event, _ = add_event(sim, way)
    failures = fail_welcome_updates(monkeypatch, claim.RECORD_ATTEMPTS - 1)
    assert lane.send_for(event, for_corp(CORP)) == "welcome_sent"
    assert failures["done"] == claim.RECORD_ATTEMPTS - 1
    assert welcome_row(event).status == "sent"


def test_a_record_that_keeps_failing_is_settled_unknown_later_with_its_coupon_code_kept(store, monkeypatch):
    sim, way, _, _ = store
    event, customer = add_event(sim, way)
    fail_welcome_updates(monkeypatch, claim.RECORD_ATTEMPTS)
    with pytest.raises(Exception):
        lane.send_for(event, for_corp(CORP))
    monkeypatch.undo()
    [coupon] = coupons.customer_coupons(CORP, customer)
    assert len(sim.welcomes(CORP)) == 1  # it went out: only its record failed

    # SQS delivers the event again after its visibility timeout (180 s).
    assert lane.send_for(event, for_corp(CORP), now=lambda: event.create_time + 180) == \
        "welcome_unknown:outcome_not_recorded"
    row = welcome_row(event)
    assert (row.status, row.coupon_code) == ("unknown", coupon.code)
    assert lane.send_for(event, for_corp(CORP), now=lambda: event.create_time + 360) == "welcome_already_handled"


# --- nothing shared with other customers on the welcome's path ---------------------------------------
def conflict_on_shared_items(monkeypatch) -> list:
    """DynamoDB cancels a transaction with TransactionConflict when another event's transaction
    holds one of its items: modelled as every item touched by transactions of two different
    events (threads, by name: in_thread), but the coupon stock, whose conflicts coupons.issue
    retries."""
    touched: dict = {}
    conflicts: list = []
    transact = DynamoDBBackend.transact_write_items

    def contended(self, transact_items):
        me = threading.current_thread().name
        items = []
        for item in transact_items:
            op = next(iter(item.values()))
            key = op.get("Key") or {k: op["Item"][k] for k in ("PK", "SK")}
            items.append((key["PK"]["S"], key["SK"]["S"]))
        shared = [i for i in items if touched.setdefault(i, me) != me and i[1] != "STOCK"]
        if shared:
            conflicts.append(shared)
            raise TransactionCanceledException([("TransactionConflict", "conflict", None) if i in shared
                                                else (None, None, None) for i in items])
        return transact(self, transact_items)

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", contended)
    return conflicts


def in_thread(call, name: str):
    result = {}

    def run():
        try:
            result["value"] = call()
        except Exception as err:  # noqa: BLE001 - the test inspects it
            result["error"] = err

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(60)
    return result


def test_concurrent_adds_in_one_corp_never_cost_a_welcome_to_a_transaction_conflict(store, monkeypatch):
    sim, way, template, _ = store
    CouponStock(*keys.coupon_stock(CORP, template.template_id)).update(actions=[CouponStock.remaining.set(10)])
    conflicts = conflict_on_shared_items(monkeypatch)
    first, first_customer = add_event(sim, way)
    second, second_customer = add_event(sim, way)

    results = [in_thread(lambda: handle(first), "first"), in_thread(lambda: handle(second), "second")]

    assert [r.get("error") for r in results] == [None, None]
    assert all(r["value"].startswith("welcome_sent,applied") for r in results)
    assert {w["external_userid"] for w in sim.welcomes(CORP)} == {first_customer, second_customer}
    assert [len(coupons.customer_coupons(CORP, c)) for c in (first_customer, second_customer)] == [1, 1]
    assert conflicts == []


def test_one_new_customer_writes_each_timeline_entry_once_and_transacts_only_on_its_own_items(store, monkeypatch):
    sim, way, template, _ = store
    writes: list = []
    for operation in ("put_item", "update_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, operation)

        def recorded(self, *args, _original=original, _operation=operation, **kwargs):
            writes.append((_operation, args, kwargs))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, operation, recorded)
    event, customer = add_event(sim, way)

    assert handle(event).startswith("welcome_sent,applied,first")

    own = keys.customer_pk(CORP, customer)
    [coupon] = coupons.customer_coupons(CORP, customer)
    allowed = {own, keys.coupon_stock(CORP, template.template_id)[0], keys.coupon(CORP, coupon.code)[0]}
    transactions = [args[0] for op, args, _ in writes if op == "transact_write_items"]
    assert len(transactions) == 1
    touched = {next(iter(item.values())).get("Key", next(iter(item.values())).get("Item"))["PK"]["S"]
               for item in transactions[0]}
    assert touched <= allowed, touched - allowed
    timeline_writes = [args for op, args, _ in writes if op == "put_item" and args[1]["SK"]["S"].startswith("TL#")]
    assert len(timeline_writes) == 1
    [entry] = TimelineEntry.query(own, TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX))
    assert entry.detail["campaign_id"] == way.campaign_id
    assert Follow.get(*keys.follow(CORP, customer, "zhangsan")).status == "active"
