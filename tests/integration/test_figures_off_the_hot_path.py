"""No write on one customer's path touches an item another customer's path touches: the daily
figures are no longer bumped inside the add, welcome, coupon and redemption transactions (where
two concurrent adds in one corp could cancel each other with TransactionConflict and cost a
customer their welcome); the stats projector counts them from the stream instead."""
from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from moto.core.botocore_stubber import BotocoreStubber
from scrm.domain import coupons
from scrm.domain.contact_ways import campaigns, ways
from scrm.domain.org import tree as org
from scrm.entry import welcome as welcome_entry
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps, keys
from scrm.store.models import DailyCounter
from scrm.wecom.apis.client import for_corp
from scrm.wecom.callback.events import normalize

from tests.support.callbacks import VECTOR_A

CORP = VECTOR_A["corp_id"]
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def written_keys(operation: str, body: dict) -> list[tuple[str, str]]:
    def key(item: dict) -> tuple[str, str]:
        return item["PK"]["S"], item["SK"]["S"]

    if operation in ("PutItem",):
        return [key(body["Item"])]
    if operation in ("UpdateItem", "DeleteItem"):
        return [key(body["Key"])]
    if operation == "TransactWriteItems":
        found = []
        for entry in body["TransactItems"]:
            (kind, op), = entry.items()
            if kind != "ConditionCheck":
                found.append(key(op["Item"] if kind == "Put" else op["Key"]))
        return found
    return [key(r.get("PutRequest", {}).get("Item") or r["DeleteRequest"]["Key"])
            for requests in body["RequestItems"].values() for r in requests]


class Writes:
    """Every item key DynamoDB is asked to write, by whose path asked (all clients, via moto)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_path: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self.path = "setup"
        process = BotocoreStubber.process_request

        def recording(stubber, request):
            target = (request.headers.get("X-Amz-Target") or b"")
            target = target.decode() if isinstance(target, bytes) else target
            operation = target.rpartition(".")[2]
            if target.startswith("DynamoDB_") and operation in WRITES:
                self.by_path[self.path].update(written_keys(operation, json.loads(request.body)))
            return process(stubber, request)

        monkeypatch.setattr(BotocoreStubber, "process_request", recording)


@pytest.fixture
def store(aws, simulated_wecom):
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    for dept, name, parent in ((2, "华东分公司", 1), (3, "上海区域", 2), (4, "南京西路店", 3)):
        simulated_wecom.add_department(CORP, dept, name, parentid=parent)
    simulated_wecom.add_staff(CORP, "zhangsan", "张三", department=(4,))
    org.set_rule(CORP, {"mode": "depth", "branch": 2, "region": 3, "store": 4})
    org.full_sync(for_corp(CORP), CORP)
    template = coupons.create_template(CORP, name="新客券", kind="amount", amount=1000, valid_days=7, total_stock=10)
    campaign = campaigns.create_campaign(CORP, name="开业", coupon_template_id=template.template_id,
                                         welcome={"text": "欢迎！券码 {coupon_code}", "without_coupon": {"text": "欢迎！"}})
    way = ways.create_contact_way(for_corp(CORP), CORP, owner_kind="staff", users=["zhangsan"],
                                  campaign_id=campaign.campaign_id, store_id="4")
    return simulated_wecom, way, template


def test_two_customers_paths_share_no_item_but_the_coupon_stock(store, monkeypatch):
    sim, way, template = store
    writes = Writes(monkeypatch)
    for customer in ("first", "second"):
        writes.path = customer
        added = sim.add_customer(CORP, userid="zhangsan", state=way.state, deliver=False)
        fields = {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(int(time.time())), "MsgType": "event",
                  "Event": "change_external_contact", "ChangeType": "add_external_contact", "UserID": "zhangsan",
                  "ExternalUserID": added["external_userid"], "State": way.state,
                  "WelcomeCode": added["welcome_code"]}
        outcome = welcome_entry.handle(normalize(CORP, fields))  # the welcome lane, then the rest
        assert "welcome_sent" in outcome
        [coupon] = coupons.customer_coupons(CORP, added["external_userid"])
        coupons.redeem(CORP, coupon.code, store_id="4", staff_userid="zhangsan", request_id=f"pos-{customer}")

    shared = writes.by_path["first"] & writes.by_path["second"]
    # The rate governor's window of each WeCom API is shared by every caller of the corp on
    # purpose (a budget for all workers together); it is leased outside any transaction.
    budget = {k for k in shared if k[0].startswith(f"CORP#{CORP}#RATE#")}
    assert {k[0].rsplit("#", 1)[1] for k in budget} <= {"externalcontact/send_welcome_msg", "externalcontact/get"}
    assert shared - budget == {keys.coupon_stock(CORP, template.template_id)}
    assert list(DailyCounter.scan()) == []  # no figure is written on the way; the stream's projector writes them
