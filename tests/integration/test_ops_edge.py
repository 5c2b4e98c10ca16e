"""The ops API's edge, tried from outside: Idempotency-Key, hostile bodies and cursors, a till
that reuses another till's request, requests served at once, and the conventions of every
answer (Chinese as Chinese, ISO times, names beside ids, readable messages).

Same harness as test_ops_api: Lambda events with the JWT authorizer's claims, moto, the
WeCom simulator with corp A's org (stores 10, 11 and 12; zhangsan and lisi at 10, wangwu at
11, zhaoliu at 12).
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from typing import Any

import boto3
import pytest
from scrm.domain import coupons
from scrm.entry.ops import customers as ops_customers
from scrm.entry.ops import idempotency
from scrm.platform.observability import log
from scrm.store import keys
from scrm.store.models import CouponTemplate, Department, Staff

from tests.integration.test_ops_api import (  # noqa: F401 - fixtures
    NOW,
    A,
    B,
    _forget_known_corps,
    add_org,
    call,
    event,
    issue,
    ops,
    registered,
    sim,
    template_body,
)
from tests.support.functions import LambdaContext

KEY = "Idempotency-Key"


@pytest.fixture(autouse=True)
def _fresh_idempotency_clients():
    idempotency.forget_clients()
    yield
    idempotency.forget_clients()


def send(ops, method: str, path: str, body: Any = None, *, headers: dict | None = None, raw: bytes | None = None,
         corp: str = A) -> tuple[int, dict, dict]:
    request = event(method, path, body if body is not None else {}, raw=raw, corp=corp)
    request["headers"].update({k.lower(): v for k, v in (headers or {}).items()})
    result = ops(request, LambdaContext())
    return result["statusCode"], json.loads(result["body"]), result.get("headers") or {}


def listed(call, path: str) -> list[dict]:
    status, page = call("GET", f"{path}?limit=100")
    assert status == 200
    return page["items"]


# --- Idempotency-Key (defect 10) -----------------------------------------------------------------
CREATES = {  # route -> a body whose retry would otherwise create a second object
    "/ops/coupon-templates": template_body(),  # no template_id: each run draws one
    "/ops/campaigns": {"name": "春季新客"},  # no campaign_id: each run draws one
}


@pytest.mark.parametrize("path", sorted(CREATES))
def test_a_retried_create_with_the_same_key_creates_once_and_answers_the_first_answer(sim, ops, call, path):
    body = CREATES[path]
    first = send(ops, "POST", path, body, headers={KEY: "retry-1"})
    again = send(ops, "POST", path, body, headers={KEY: "retry-1"})
    assert first[0] == again[0] == 201
    assert again[1] == first[1] and len(listed(call, path)) == 1
    assert "Idempotent-Replayed" not in first[2] and again[2]["Idempotent-Replayed"] == "true"

    # the same body under another key is another request: it creates
    assert send(ops, "POST", path, body, headers={KEY: "retry-2"})[0] == 201
    assert len(listed(call, path)) == 2
    # and without a key nothing is remembered
    send(ops, "POST", path, body)
    assert len(listed(call, path)) == 3


def test_a_retried_contact_way_is_replayed_without_calling_wecom_again(sim, ops):
    body = {"owner_kind": "staff", "users": ["zhangsan"], "channel": "door"}
    first = send(ops, "POST", "/ops/contact-ways", body, headers={KEY: "way-1"})
    calls = len(sim.state(A)["corps"][A]["contact_ways"])
    again = send(ops, "POST", "/ops/contact-ways", body, headers={KEY: "way-1"})
    assert first[0] == again[0] == 201 and again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"
    assert len(sim.state(A)["corps"][A]["contact_ways"]) == calls == 1


def test_the_same_key_with_another_body_is_refused_and_spacing_or_order_is_not_another_body(sim, ops, call):
    raw = b'{"name": "Spring", "campaign_id": "spr"}'
    assert send(ops, "POST", "/ops/campaigns", raw=raw, headers={KEY: "k1"})[0] == 201
    reordered = send(ops, "POST", "/ops/campaigns", raw=b'{"campaign_id":"spr",\n "name":"Spring"}', headers={KEY: "k1"})
    assert reordered[0] == 201 and reordered[2]["Idempotent-Replayed"] == "true"
    status, error, _ = send(ops, "POST", "/ops/campaigns", {"name": "Autumn", "campaign_id": "spr"},
                            headers={KEY: "k1"})
    assert (status, error["error"], error["field"]) == (422, "idempotency_key_reused", KEY)
    assert "different request body" in error["message"]
    assert [c["name"] for c in listed(call, "/ops/campaigns")] == ["Spring"]


def test_keys_are_per_route_and_per_corp(sim, ops, call):
    add_org(sim, B)
    assert send(ops, "POST", "/ops/campaigns", {"name": "A"}, headers={KEY: "shared"})[0] == 201
    assert send(ops, "POST", "/ops/coupon-templates", template_body(), headers={KEY: "shared"})[0] == 201
    status, body, headers = send(ops, "POST", "/ops/campaigns", {"name": "A"}, headers={KEY: "shared"}, corp=B)
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert len(listed(call, "/ops/campaigns")) == 1 and len(call("GET", "/ops/campaigns", corp=B)[1]["items"]) == 1


def test_a_refused_request_is_not_remembered_so_its_corrected_retry_runs(sim, ops):
    status, error, _ = send(ops, "POST", "/ops/campaigns", {"name": "X", "coupon_template_id": "nosuch"},
                            headers={KEY: "fix-me"})
    assert (status, error["field"]) == (422, "coupon_template_id")
    send(ops, "POST", "/ops/coupon-templates", template_body(template_id="nosuch"))
    status, campaign, headers = send(ops, "POST", "/ops/campaigns", {"name": "X", "coupon_template_id": "nosuch"},
                                     headers={KEY: "fix-me"})
    assert status == 201 and "Idempotent-Replayed" not in headers


def test_a_key_whose_first_request_died_is_busy_until_that_request_would_have_timed_out(sim, ops, monkeypatch):
    from scrm.domain.contact_ways import campaigns

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # what the runtime's timeout looks like from inside: no cleanup runs

    def attempt(key: str, remaining_millis: int = 30_000) -> dict:
        request = event("POST", "/ops/campaigns", {"name": "X"})
        request["headers"][KEY.lower()] = key
        return ops(request, LambdaContext(remaining_millis=remaining_millis))

    monkeypatch.setattr(campaigns, "create_campaign", killed)
    for key, remaining in (("dead-long", 30_000), ("dead-short", 100)):
        with pytest.raises(KeyboardInterrupt):
            attempt(key, remaining)
    monkeypatch.undo()

    busy = attempt("dead-long")
    assert (busy["statusCode"], json.loads(busy["body"])["error"]) == (409, "idempotency_in_progress")
    assert int(busy["headers"]["Retry-After"]) >= 1
    time.sleep(0.2)  # the short-lived request's Lambda would be over by now: its key is free
    assert attempt("dead-short")["statusCode"] == 201


def test_records_live_in_the_corps_partition_and_expire_through_the_tables_ttl(sim, ops, aws):
    send(ops, "POST", "/ops/campaigns", {"name": "X"}, headers={KEY: "ttl"})
    items = boto3.client("dynamodb").query(
        TableName=aws.table_name, KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": keys.idempotency(A)}})["Items"]
    assert len(items) == 1 and items[0]["SK"]["S"].startswith(f"{keys.IDEMPOTENCY_PREFIX}#")
    assert items[0]["status"]["S"] == "COMPLETED"
    assert abs(int(items[0]["expires_at"]["N"]) - (time.time() + idempotency.EXPIRES_AFTER)) < 60


@pytest.mark.parametrize("value", ["", "has space", "k" * 129, "ключ"])
def test_a_malformed_key_is_a_400_naming_the_header(registered, ops, value):
    status, error, _ = send(ops, "POST", "/ops/campaigns", {"name": "X"}, headers={KEY: value})
    assert (status, error["field"]) == (400, KEY)


# --- the till (defect 12) -------------------------------------------------------------------------
@pytest.fixture
def coupon(sim, call) -> str:
    call("POST", "/ops/coupon-templates", template_body(template_id="t1"))
    return issue(A, "t1", "wmA1", staff_userid="zhangsan", store_id="10")


def test_a_request_id_from_another_till_is_refused_not_answered_with_the_first_tills_redemption(coupon, call):
    till = {"code": coupon, "store_id": "11", "staff_userid": "wangwu", "request_id": "pos-0001"}
    status, redeemed = call("POST", "/ops/coupons/redeem", till)
    assert status == 200 and redeemed["redeemed_store_id"] == "11"
    assert call("POST", "/ops/coupons/redeem", till) == (200, redeemed)  # the till's own retry
    status, error = call("POST", "/ops/coupons/redeem", {**till, "store_id": "12", "staff_userid": "zhaoliu"})
    assert (status, error["error"], error["field"]) == (409, "request_id_reused", "request_id"), error
    assert "redeemed_store_id" not in error


def test_a_clerk_of_another_store_is_not_accepted_at_this_till(coupon, call):
    status, error = call("POST", "/ops/coupons/redeem", {"code": coupon, "store_id": "10", "staff_userid": "wangwu",
                                                         "request_id": "pos-0002"})
    assert (status, error["field"]) == (422, "staff_userid") and "store 10" in error["message"]
    Staff.get(*keys.staff(A, "lisi")).update(actions=[Staff.status.set("resigned")])
    status, error = call("POST", "/ops/coupons/redeem", {"code": coupon, "store_id": "10", "staff_userid": "lisi",
                                                         "request_id": "pos-0003"})
    assert (status, error["field"]) == (422, "staff_userid")
    assert call("GET", f"/ops/coupons/{coupon}")[1]["status"] == "issued"


# --- hostile bodies and cursors (defect 12) -------------------------------------------------------
def test_a_key_given_twice_is_refused_naming_it_never_read_as_either_value(sim, ops, call):
    raw = json.dumps(template_body(template_id="dup"))[:-1].encode() + b', "amount": 999999}'
    status, error, _ = send(ops, "POST", "/ops/coupon-templates", raw=raw)
    assert (status, error["field"]) == (400, "amount") and "twice" in error["message"]
    nested = b'{"name": "x", "welcome": {"text": "hello", "text": "bye"}}'
    assert send(ops, "POST", "/ops/campaigns", raw=nested)[:2] == (400, {
        "error": "invalid", "field": "text", "message": "appears twice in one JSON object; give each field once"})
    assert call("GET", "/ops/coupon-templates/dup")[0] == 404


@pytest.mark.parametrize("depth", [17, 969, 100_000])
def test_a_deeply_nested_body_is_a_400_naming_the_body(registered, ops, depth):
    raw = b'{"name": "x", "welcome": ' + b"[" * depth + b"]" * depth + b"}"
    if len(raw) > 64 * 1024:
        raw = b'{"name": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    status, error, _ = send(ops, "POST", "/ops/campaigns", raw=raw)
    assert (status, error["field"]) == (400, "body"), error


def cursor_of(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def hand_made_cursors() -> list[str]:
    stores = f"CORP#{A}#STORES"
    return [
        cursor_of({"GSI1PK": {"S": stores}}),  # the right partition, not a key
        cursor_of({"GSI1PK": {"S": stores}, "GSI1SK": {"S": "STORE#0000000010"}}),
        cursor_of({"GSI1PK": {"S": stores}, "GSI1SK": {"S": ""}, "PK": {"S": "x"}, "SK": {"S": "y"}}),
        cursor_of({"GSI1PK": {"S": stores}, "GSI1SK": {"S": "a"}, "PK": {"S": "x"}, "SK": {"S": "y"},
                   "extra": {"S": "z"}}),
        cursor_of({"GSI1PK": {"S": stores}, "GSI1SK": {"N": "1"}, "PK": {"S": "x"}, "SK": {"S": "y"}}),
        base64.urlsafe_b64encode(b"[" * 1000 + b"]" * 1000).decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ]


def test_a_hand_made_cursor_is_a_400_naming_the_cursor(sim, call, subtests):
    for cursor in hand_made_cursors():
        with subtests.test(cursor=cursor[:40]):
            status, error = call("GET", f"/ops/stores?cursor={cursor}")
            assert (status, error["field"]) == (400, "cursor"), error


def test_a_cursor_dynamodb_refuses_is_a_400_too(sim, call, monkeypatch):
    """A cursor that fits every check but still not the query (DynamoDB: outside its boundaries)."""
    from pynamodb.exceptions import QueryError
    from scrm.store import paging
    real = paging.page

    class Refused(Exception):
        response = {"Error": {"Code": "ValidationException", "Message": "outside query boundaries"}}

    class Boundary:  # a query result: DynamoDB answers when it is read
        last_evaluated_key = None

        def __iter__(self):
            raise QueryError("outside query boundaries", cause=Refused())

    def refusing(query, hash_key, **kwargs):
        return real((lambda *a, **k: Boundary()) if kwargs.get("cursor") else query, hash_key, **kwargs)

    monkeypatch.setattr(paging, "page", refusing)
    first = call("GET", "/ops/stores?limit=1")[1]
    assert call("GET", f"/ops/stores?limit=1&cursor={first['next_cursor']}")[:1] == (400,)


# --- requests served at once (defect 12: the 500 under a fuzzer's load) ---------------------------
def test_two_requests_at_once_in_one_process_each_keep_their_own_corp(sim, ops, monkeypatch):
    """The local gateway serves requests on threads. The resolver keeps the request being served
    in shared state, so a request that finished in between wiped the corp of one still running:
    500 internal_error, once in a while, never alone."""
    add_org(sim, B)
    started, other_done = threading.Event(), threading.Event()
    real = ops_customers.current_corp

    def slow(router):
        started.set()
        other_done.wait(timeout=1)  # with requests taking turns this times out: the other waits for us
        return real(router)

    monkeypatch.setattr(ops_customers, "current_corp", slow)
    results: dict[str, Any] = {}

    def customer() -> None:
        results["customer"] = ops(event("GET", "/ops/customers/wmNobody"), LambdaContext())

    def stores() -> None:
        started.wait(timeout=5)
        results["stores"] = ops(event("GET", "/ops/stores", corp=B), LambdaContext())
        other_done.set()

    threads = [threading.Thread(target=customer), threading.Thread(target=stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results["customer"]["statusCode"] == 404, results["customer"]["body"]
    assert [s["store_id"] for s in json.loads(results["stores"]["body"])["items"]] == ["20"]


def test_a_500_logs_its_cause(registered, call, monkeypatch, caplog):
    from scrm.domain.contact_ways import campaigns

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the table is gone")

    monkeypatch.setattr(campaigns, "list_campaigns", broken)
    caplog.set_level("ERROR", logger=log.name)
    assert call("GET", "/ops/campaigns")[0] == 500
    [failure] = [r for r in caplog.records if r.getMessage() == "ops request failed"]
    assert failure.levelname == "ERROR" and failure.exc_info[0] is RuntimeError
    assert "the table is gone" in str(failure.exc_info[1])


# --- conventions of every answer (section 7) -------------------------------------------------------
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00")


def test_chinese_is_written_as_chinese(sim, ops):
    result = ops(event("POST", "/ops/campaigns", {"name": "春季新客"}), LambdaContext())
    assert "春季新客" in result["body"] and "\\u" not in result["body"]


def test_every_epoch_field_has_its_china_time_beside_it_nested_ones_included(sim, call):
    status, campaign = call("POST", "/ops/campaigns", {"name": "x", "starts_at": 1795665600})  # 2026-11-26 12:00 +8
    assert campaign["starts_at_iso"] == "2026-11-26T12:00:00+08:00" and campaign["ends_at_iso"] is None
    assert ISO.fullmatch(campaign["created_at_iso"])
    call("POST", "/ops/coupon-templates", template_body(template_id="t1"))
    issue(A, "t1", "wmA1", staff_userid="zhangsan", store_id="10")
    from tests.integration.test_ops_api import seed_customer
    seed_customer(A, "wmA1", "李雷")
    view = call("GET", "/ops/customers/wmA1")[1]
    assert ISO.fullmatch(view["profile"]["first_seen_at_iso"])
    assert ISO.fullmatch(view["follows"][0]["added_at_iso"]) and ISO.fullmatch(view["timeline"][0]["at_iso"])
    assert ISO.fullmatch(view["coupons"][0]["issued_at_iso"]) and view["coupons"][0]["redeemed_at_iso"] is None


def test_names_come_beside_ids(sim, call):
    Department.get(*keys.department(A, 10)).update(actions=[Department.name.set("徐汇店")])
    Staff.get(*keys.staff(A, "zhangsan")).update(actions=[Staff.name.set("张三")])
    call("POST", "/ops/coupon-templates", template_body(template_id="t1", name="满100减20"))
    call("POST", "/ops/campaigns", {"name": "开业", "campaign_id": "open", "coupon_template_id": "t1"})
    code = coupons.issue(A, "t1", "wmA1", occasion="x", campaign_id="open", staff_userid="zhangsan",
                         store_id="10").code
    coupon = call("GET", f"/ops/coupons/{code}")[1]
    assert (coupon["template_name"], coupon["campaign_name"], coupon["staff_name"], coupon["store_name"]) == (
        "满100减20", "开业", "张三", "徐汇店")
    assert coupon["redeemed_store_name"] is None and coupon["redeemed_by_name"] is None

    assert call("GET", "/ops/campaigns/open")[1]["coupon_template_name"] == "满100减20"
    staff = {s["userid"]: s for s in call("GET", "/ops/staff?store_id=10")[1]["items"]}
    assert staff["zhangsan"]["store_name"] == "徐汇店" and "staff_name" not in staff["zhangsan"]
    store = call("GET", "/ops/stores?limit=1")[1]["items"][0]
    assert (store["name"], store["region_name"], store["branch_name"]) == ("徐汇店", "Shanghai region", "East branch")
    assert "store_name" not in store
    way = call("POST", "/ops/contact-ways", {"owner_kind": "store", "store_id": "10", "campaign_id": "open"})[1]
    assert (way["owner_name"], way["store_name"], way["campaign_name"]) == ("徐汇店", "徐汇店", "开业")
    assert dict(zip(way["users"], way["user_names"]))["zhangsan"] == "张三"


def test_messages_give_times_in_china_time_not_epoch_numbers(sim, call):
    call("POST", "/ops/coupon-templates", template_body(template_id="old", valid_days=1))
    expired = issue(A, "old", "wmA1", now=1795665600 - 30 * 86400)  # ends 2026-10-28 23:59:59 China time
    status, error = call("POST", "/ops/coupons/redeem", {"code": expired, "store_id": "10",
                                                          "staff_userid": "zhangsan", "request_id": "r1"})
    assert (status, error["message"]) == (410, "coupon expired at 2026-10-28 23:59:59 China time")
    assert CouponTemplate.get(*keys.coupon_template(A, "old")).name
