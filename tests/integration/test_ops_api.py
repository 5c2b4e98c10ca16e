"""The ops API through its Lambda handler: API Gateway v2 events with the JWT authorizer's
claims, DynamoDB and Secrets Manager in moto, WeCom simulated.

Two corps with their own org (synced from the simulator): A, the corp of the sample events
in events/ops_api/, and B, which shares a userid (zhangsan) and ids of campaigns with A.
Events are built the way the local gateway builds them, routed by template.yaml's routes.
"""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from scrm.domain import coupons
from scrm.domain.contact_ways import campaigns
from scrm.domain.org import tree as org
from scrm.entry.ops import api, auth, contract
from scrm.platform.config import settings
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps, keys
from scrm.store.models import Coupon, Customer, Follow, TimelineEntry
from scrm.wecom.apis import client as wecom_client
from scrm.wecom.apis.client import for_corp

from infra.local import template as tpl
from infra.local.gateway import Target, find_route, http_event
from tests.support.functions import LambdaContext, load_function
from tests.support.jobs import JobsQueue

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "ops_api"
A = "ww1436e0e65a779aee"  # the corp of events/ops_api/*.json
B = "wwopsbcorp0002"
ORGS = {  # (dept id, name, parent) and staff -> departments; stores sit at depth 4
    A: ([(2, "East branch", 1), (3, "Shanghai region", 2), (10, "Xuhui store", 3), (11, "Jing'an store", 3),
         (12, "West Lake store", 3)],
        {"zhangsan": [10], "lisi": [10], "wangwu": [11], "zhaoliu": [12], "boss": [1]}),
    B: ([(2, "North branch", 1), (3, "Beijing region", 2), (20, "Chaoyang store", 3)],
        {"zhangsan": [20], "b_clerk": [20]}),
}
NOW = int(time.time())
OPS_ROUTES = tpl.load().functions["OpsApiFunction"].routes
TARGETS = [Target(route, "OpsApiFunction") for route in OPS_ROUTES]
MISSING = object()


# --- harness ---------------------------------------------------------------------------
def claims(corp_id: str | None) -> dict:
    """What API Gateway's JWT authorizer passes for a valid token (values as strings)."""
    values = {"iss": "https://example.invalid", "aud": "scrm-ops", "sub": "ops-test", "iat": NOW, "exp": NOW + 3600}
    return {**values, "scrm:corp": corp_id} if corp_id is not None else values


def event(method: str, path: str, body: Any = MISSING, *, corp: str | None = A, raw: bytes | None = None,
          token_claims: dict | None = None, authorized: bool = True) -> dict:
    raw_path, _, raw_query = path.partition("?")
    found = find_route(TARGETS, method, raw_path)
    route_key, params = (found[0].route.route_key, found[1]) if found else (f"{method} {raw_path}", {})
    data = raw if raw is not None else b"" if body is MISSING else json.dumps(body).encode()
    headers = [("content-type", "application/json"), ("authorization", "Bearer t")]
    given = (token_claims or claims(corp)) if authorized else None
    return http_event(method, raw_path, raw_query, headers, data, route_key, params, "$default", "203.0.113.9",
                      given)


@pytest.fixture(scope="module")
def ops():
    return load_function("ops_api").handler


@pytest.fixture
def call(ops):
    def send(method: str, path: str, body: Any = MISSING, **kwargs: Any) -> tuple[int, Any]:
        result = ops(event(method, path, body, **kwargs), LambdaContext())
        return result["statusCode"], json.loads(result["body"])

    return send


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _forget_known_corps():
    auth.forget_cache()
    yield
    auth.forget_cache()


@pytest.fixture
def registered(aws):
    """Both corps registered (Corp row and secret), no org: enough for checks at the edge."""
    for corp_id in (A, B):
        corps.register(CorpCredentials(corp_id=corp_id, token="tok", encoding_aes_key="k" * 43,
                                       secret=f"secret-{corp_id}", agent_id="1000002"))


def add_org(simulator, corp_id: str) -> None:
    departments, staff = ORGS[corp_id]
    simulator.add_corp(corp_id, f"secret-{corp_id}", "tok", "k" * 43, 1000002)
    for dept_id, name, parent in departments:
        simulator.add_department(corp_id, dept_id, name, parent)
    for userid, depts in staff.items():
        simulator.add_staff(corp_id, userid, department=depts)
    org.full_sync(for_corp(corp_id), corp_id)


@pytest.fixture
def sim(registered, simulated_wecom):
    """Corp A in the simulator with its org, synced into the table (B only where a test asks)."""
    wecom_client.forget_caches()
    add_org(simulated_wecom, A)
    yield simulated_wecom
    wecom_client.forget_caches()


def template_body(**terms: Any) -> dict:
    """A valid template; a term given as None is left out."""
    body = {"name": "20 off 100", "kind": "amount", "amount": 2000, "threshold": 10000, "valid_days": 7,
            "total_stock": 100, **terms}
    return {k: v for k, v in body.items() if v is not None}


def issue(corp_id: str, template_id: str, external_userid: str, occasion: str = "test", **kwargs: Any) -> str:
    result = coupons.issue(corp_id, template_id, external_userid, occasion=occasion, **kwargs)
    assert result.status == "issued", result.status
    return result.code


# --- happy paths ---------------------------------------------------------------------------
def test_the_sample_events_run_as_they_are(sim, ops):
    def run(name: str) -> tuple[int, dict]:
        result = ops(sample(name), LambdaContext())
        return result["statusCode"], json.loads(result["body"])

    status, stores = run("list_stores.json")
    assert status == 200 and [s["store_id"] for s in stores["items"]] == ["10", "11", "12"]
    assert run("create_campaign.json")[0] == 201
    status, way = run("create_contact_way.json")
    assert (status, way["owner_id"], way["campaign_id"], way["channel"]) == (201, "zhangsan", "d11", "poster")
    assert run("get_customer.json") == (404, {"error": "not_found", "field": "external_userid",
                                              "message": "no such customer"})
    status, error = run("redeem_coupon.json")
    assert (status, error["error"], error["field"]) == (404, "unknown_code", "code")
    assert run("no_token.json")[0] == 401
    status, stored = run("put_welcome_defaults.json")
    assert status == 200 and stored["stores"]["10"]["text"] == "徐汇店欢迎您！"
    assert run("get_job.json") == (404, {"error": "not_found", "field": "job_id", "message": "no such job"})


def test_stores_and_staff_are_listed_a_page_at_a_time(sim, call):
    status, first = call("GET", "/ops/stores?limit=2")
    assert status == 200 and [s["store_id"] for s in first["items"]] == ["10", "11"] and first["next_cursor"]
    status, rest = call("GET", f"/ops/stores?limit=2&cursor={first['next_cursor']}")
    assert [s["store_id"] for s in rest["items"]] == ["12"] and rest["next_cursor"] is None
    assert call("GET", "/ops/stores?branch_id=2")[1]["items"][0]["branch_id"] == "2"

    status, staff = call("GET", "/ops/staff?store_id=10")
    assert status == 200 and sorted(s["userid"] for s in staff["items"]) == ["lisi", "zhangsan"]
    assert [s["userid"] for s in call("GET", "/ops/staff?store_id=none")[1]["items"]] == ["boss"]
    everyone = call("GET", "/ops/staff?status=active&limit=100")[1]["items"]
    assert sorted(s["userid"] for s in everyone) == ["boss", "lisi", "wangwu", "zhangsan", "zhaoliu"]


def test_a_contact_way_is_created_read_listed_changed_and_deleted(sim, call):
    status, way = call("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["zhangsan"],
                                                     "channel": "counter", "remark": "till 1", "tag_ids": ["et_a"]})
    assert status == 201 and (way["owner_kind"], way["store_id"], way["qr_code"] is not None) == ("staff", "10", True)
    config_id = way["config_id"]
    assert call("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["zhangsan"], "channel": "counter",
                                              "remark": "till 1", "tag_ids": ["et_a"]})[1]["config_id"] == config_id
    status, store_way = call("POST", "/ops/contact-ways", {"owner_kind": "store", "store_id": "10"})
    assert status == 201 and sorted(store_way["users"]) == ["lisi", "zhangsan"]

    assert call("GET", f"/ops/contact-ways/{config_id}") == (200, way)
    listed = call("GET", "/ops/contact-ways?owner_kind=staff&owner_id=zhangsan")[1]
    assert [w["config_id"] for w in listed["items"]] == [config_id] and listed["next_cursor"] is None
    assert len(call("GET", "/ops/contact-ways")[1]["items"]) == 2

    status, changed = call("PATCH", f"/ops/contact-ways/{config_id}", {"remark": "till 2", "tag_ids": None})
    assert status == 200 and (changed["remark"], changed["tag_ids"]) == ("till 2", None)
    in_wecom = {w["config_id"]: w for w in sim.state(A)["corps"][A]["contact_ways"]}
    assert in_wecom[config_id]["remark"] == "till 2"
    status, error = call("PATCH", f"/ops/contact-ways/{config_id}", {"users": ["lisi"]})
    assert (status, error["field"]) == (422, "users")  # a staff code keeps its staff member

    status, deleted = call("DELETE", f"/ops/contact-ways/{config_id}")
    assert status == 200 and deleted["deleted"] is True
    assert call("GET", f"/ops/contact-ways/{config_id}")[1]["deleted"] is True
    assert [w["owner_kind"] for w in call("GET", "/ops/contact-ways")[1]["items"]] == ["store"]
    assert call("DELETE", f"/ops/contact-ways/{config_id}")[0] == 200  # again: harmless
    assert call("GET", "/ops/contact-ways/nosuchway")[0] == 404


def test_bulk_creation_is_a_job_whose_result_is_the_report(sim, call, monkeypatch):
    jobs = JobsQueue(monkeypatch)

    def bulk(body: dict) -> dict:
        status, answer = call("POST", "/ops/contact-ways/bulk", body)
        assert status == 202 and set(answer) == {"job_id"}, answer
        status, queued = call("GET", f"/ops/jobs/{answer['job_id']}")
        assert status == 200 and queued["state"] == "queued" and queued["result"] is None
        jobs.run()
        status, job = call("GET", f"/ops/jobs/{answer['job_id']}")
        assert status == 200 and job["kind"] == "contact-ways-bulk" and job["state"] == "done", job
        return job

    store = bulk({"store_id": "10", "channel": "poster"})
    assert (store["total"], store["done"], store["failed"]) == (2, 2, 0)
    assert store["result"] == {"created": 2, "existing": 0, "failed": [], "not_attempted": []}
    assert bulk({"branch_id": "2", "channel": "poster"})["result"]["created"] == 2
    assert bulk({"branch_id": "2", "channel": "poster"})["result"]["existing"] == 4


def test_a_job_is_only_seen_by_its_own_corp(sim, call, monkeypatch):
    JobsQueue(monkeypatch)
    job_id = call("POST", "/ops/contact-ways/bulk", {"store_id": "10"})[1]["job_id"]
    assert call("GET", f"/ops/jobs/{job_id}")[0] == 200
    status, error = call("GET", f"/ops/jobs/{job_id}", corp=B)
    assert (status, error["error"], error["field"]) == (404, "not_found", "job_id")
    assert call("GET", "/ops/jobs/org-sync-2026-01-01")[0] == 404


def test_campaigns_are_created_read_listed_and_changed(sim, call):
    status, campaign = call("POST", "/ops/campaigns", {"name": "Spring", "campaign_id": "spr",
                                                       "welcome": {"text": "hello"}, "starts_at": NOW,
                                                       "ends_at": NOW + 86400})
    assert status == 201 and (campaign["campaign_id"], campaign["welcome"]) == ("spr", {"text": "hello"})
    status, generated = call("POST", "/ops/campaigns", {"name": "Autumn"})
    assert status == 201 and re.fullmatch(r"[0-9a-z]{4}", generated["campaign_id"])
    assert call("POST", "/ops/campaigns", {"name": "Again", "campaign_id": "spr"})[0] == 409

    assert call("GET", "/ops/campaigns/spr") == (200, campaign)
    assert {c["campaign_id"] for c in call("GET", "/ops/campaigns")[1]["items"]} == {"spr", generated["campaign_id"]}
    status, changed = call("PATCH", "/ops/campaigns/spr", {"welcome": None, "ends_at": NOW + 2 * 86400})
    assert status == 200 and (changed["welcome"], changed["ends_at"], changed["name"]) == (None, NOW + 2 * 86400,
                                                                                          "Spring")
    assert call("PATCH", "/ops/campaigns/spr", {"ends_at": NOW - 1})[1]["field"] == "ends_at"
    assert call("GET", "/ops/campaigns/nope")[0] == 404
    assert call("PATCH", "/ops/campaigns/nope", {"name": "x"})[0] == 404


def test_coupon_templates_come_with_their_stock(sim, call):
    status, created = call("POST", "/ops/coupon-templates", template_body(template_id="t20"))
    assert status == 201 and created["stock"] == {"remaining": 100, "issued": 0, "total": 100}
    assert call("POST", "/ops/coupon-templates", template_body(template_id="t20"))[1] == {
        "error": "template_exists", "field": "template_id", "message": "template_id t20 already exists"}
    issue(A, "t20", "wmA1")
    status, template = call("GET", "/ops/coupon-templates/t20")
    assert status == 200 and template["stock"] == {"remaining": 99, "issued": 1, "total": 100}
    assert template["amount"] == 2000 and template["valid_days"] == 7
    call("POST", "/ops/coupon-templates", template_body(template_id="t30", name="30 off"))
    assert [t["template_id"] for t in call("GET", "/ops/coupon-templates")[1]["items"]] == ["t30", "t20"]
    assert call("GET", "/ops/coupon-templates?limit=1")[1]["next_cursor"]
    assert call("GET", "/ops/coupon-templates/nope")[1]["error"] == "template_not_found"


def seed_customer(corp_id: str, external_userid: str, name: str) -> None:
    Customer(*keys.customer(corp_id, external_userid), external_userid=external_userid, name=name,
             first_seen_at=NOW).save()
    Follow(*keys.follow(corp_id, external_userid, "zhangsan"), external_userid=external_userid, userid="zhangsan",
           status="active", added_at=NOW, GSI1PK=keys.follows_of_staff(corp_id, "zhangsan"),
           GSI1SK=f"{keys.FOLLOW_PREFIX}{external_userid}").save()
    TimelineEntry(*keys.timeline(corp_id, external_userid, NOW, "e1"), external_userid=external_userid, at=NOW,
                  what="add_external_contact", userid="zhangsan").save()


def test_a_customer_is_seen_whole_and_its_coupons_a_page_at_a_time(sim, call):
    seed_customer(A, "wmA1", "Li Lei")
    call("POST", "/ops/coupon-templates", template_body(template_id="t1"))
    call("POST", "/ops/coupon-templates", template_body(template_id="t2"))
    codes = {issue(A, "t1", "wmA1", now=NOW - 10), issue(A, "t2", "wmA1", now=NOW)}

    status, view = call("GET", "/ops/customers/wmA1")
    assert status == 200 and view["profile"]["name"] == "Li Lei"
    assert [(f["userid"], f["status"]) for f in view["follows"]] == [("zhangsan", "active")]
    assert [e["what"] for e in view["timeline"]] == ["add_external_contact"]
    assert {c["code"] for c in view["coupons"]} == codes

    status, first = call("GET", "/ops/customers/wmA1/coupons?limit=1")
    assert status == 200 and first["items"][0]["template_id"] == "t2" and first["next_cursor"]
    rest = call("GET", f"/ops/customers/wmA1/coupons?limit=1&cursor={first['next_cursor']}")[1]
    assert [c["template_id"] for c in rest["items"]] == ["t1"]
    assert call("GET", "/ops/customers/wmNobody/coupons") == (200, {"items": [], "next_cursor": None})


def test_a_coupon_is_redeemed_once_per_request_at_a_till_of_the_corp(sim, call):
    call("POST", "/ops/coupon-templates", template_body(template_id="t1"))
    code = issue(A, "t1", "wmA1", staff_userid="zhangsan", store_id="10")
    typed = "-".join(code[i:i + 4] for i in range(0, 16, 4)).lower()
    till = {"store_id": "11", "staff_userid": "wangwu", "request_id": "pos-11-0001"}

    status, redeemed = call("POST", "/ops/coupons/redeem", {"code": typed, **till})
    assert status == 200 and (redeemed["status"], redeemed["redeemed_store_id"], redeemed["redeemed_by"]) == (
        "redeemed", "11", "wangwu")
    assert call("POST", "/ops/coupons/redeem", {"code": code, **till}) == (200, redeemed)
    status, error = call("POST", "/ops/coupons/redeem", {"code": code, **till, "request_id": "pos-11-0002"})
    assert (status, error["error"]) == (409, "already_redeemed")
    assert call("GET", f"/ops/coupons/{typed}") == (200, redeemed)
    assert call("GET", "/ops/coupons/0000000000000000")[1]["error"] == "unknown_code"

    for store_id, staff_userid, field in (("3", "wangwu", "store_id"), ("99", "wangwu", "store_id"),
                                          ("11", "nobody", "staff_userid"), ("11", "boss", "staff_userid")):
        answer = call("POST", "/ops/coupons/redeem", {"code": code, "store_id": store_id,
                                                      "staff_userid": staff_userid, "request_id": "r9"})
        assert answer[0] == 422 and answer[1]["field"] == field


def test_expired_and_not_yet_valid_coupons_are_refused(sim, call):
    call("POST", "/ops/coupon-templates", template_body(template_id="old", valid_days=1))
    expired = issue(A, "old", "wmA1", now=NOW - 30 * 86400)
    call("POST", "/ops/coupon-templates", template_body(template_id="later", valid_days=None,
                                                        valid_from=NOW + 86400, valid_until=NOW + 2 * 86400))
    early = issue(A, "later", "wmA1")
    till = {"store_id": "10", "staff_userid": "zhangsan", "request_id": "r1"}
    assert call("POST", "/ops/coupons/redeem", {"code": expired, **till})[:1] == (410,)
    assert call("POST", "/ops/coupons/redeem", {"code": expired, **till})[1]["error"] == "expired"
    assert call("POST", "/ops/coupons/redeem", {"code": early, **till})[1]["error"] == "not_yet_valid"


def test_default_welcomes_are_set_cleared_and_read_back_in_the_shape_they_were_put(sim, call):
    assert call("GET", "/ops/welcome-defaults") == (200, {"corp": None, "stores": {}, "next_cursor": None})
    body = {"corp": {"text": "欢迎关注我们"},
            "stores": {"10": {"text": "徐汇店欢迎您", "link": {"title": "到店", "url": "https://x.example/10"}},
                       "11": {"text": "静安店欢迎您"}}}
    assert call("PUT", "/ops/welcome-defaults", body) == (200, body)
    status, page = call("GET", "/ops/welcome-defaults?limit=1")
    assert status == 200 and page["corp"] == body["corp"] and page["stores"] == {"10": body["stores"]["10"]}
    rest = call("GET", f"/ops/welcome-defaults?cursor={page['next_cursor']}")[1]
    assert (rest["stores"], rest["next_cursor"]) == ({"11": body["stores"]["11"]}, None)

    assert call("PUT", "/ops/welcome-defaults", {"stores": {"11": None}}) == (200, {"stores": {"11": None}})
    assert call("GET", "/ops/welcome-defaults")[1] == {"corp": body["corp"], "stores": {"10": body["stores"]["10"]},
                                                      "next_cursor": None}
    status, error = call("PUT", "/ops/welcome-defaults", {"corp": None, "stores": {"12": {"text": "x"}, "3": {
        "text": "not a store"}}})
    assert (status, error["field"]) == (422, "stores.3")
    assert call("GET", "/ops/welcome-defaults")[1]["corp"] == body["corp"]  # nothing of it was written
    assert call("GET", "/ops/welcome-defaults", corp=B)[1] == {"corp": None, "stores": {}, "next_cursor": None}


# --- corp isolation -----------------------------------------------------------------------
@pytest.fixture
def b_objects(sim, call) -> dict:
    """Corp B's campaign, contact way, coupon template, customer and coupon, made with B's token."""
    add_org(sim, B)
    assert call("POST", "/ops/campaigns", {"name": "B spring", "campaign_id": "spr"}, corp=B)[0] == 201
    way = call("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["zhangsan"]}, corp=B)[1]
    assert call("POST", "/ops/coupon-templates", template_body(template_id="tb"), corp=B)[0] == 201
    seed_customer(B, "wmB1", "Han Meimei")
    code = issue(B, "tb", "wmB1", staff_userid="zhangsan", store_id="20")
    return {"config_id": way["config_id"], "code": code}


def test_a_token_of_corp_a_reads_nothing_of_corp_b(b_objects, call):
    config_id, code = b_objects["config_id"], b_objects["code"]
    for path in (f"/ops/contact-ways/{config_id}", "/ops/campaigns/spr", "/ops/coupon-templates/tb",
                 f"/ops/coupons/{code}", "/ops/customers/wmB1"):
        status, answer = call("GET", path)
        assert status == 404, path
        assert "B spring" not in json.dumps(answer) and "Han Meimei" not in json.dumps(answer)
    assert call("GET", "/ops/customers/wmB1/coupons")[1]["items"] == []
    for path in ("/ops/contact-ways", "/ops/campaigns", "/ops/coupon-templates"):
        assert call("GET", path)[1]["items"] == [], path
    assert "20" not in {s["store_id"] for s in call("GET", "/ops/stores")[1]["items"]}
    assert "b_clerk" not in {s["userid"] for s in call("GET", "/ops/staff")[1]["items"]}
    # B sees its own
    assert call("GET", "/ops/campaigns/spr", corp=B)[1]["name"] == "B spring"


def test_a_token_of_corp_a_changes_nothing_of_corp_b(b_objects, call, sim):
    config_id, code = b_objects["config_id"], b_objects["code"]
    assert call("PATCH", "/ops/campaigns/spr", {"name": "taken over"})[0] == 404
    assert call("PATCH", f"/ops/contact-ways/{config_id}", {"remark": "taken over"})[0] == 404
    assert call("DELETE", f"/ops/contact-ways/{config_id}")[0] == 404
    status, error = call("POST", "/ops/coupons/redeem", {"code": code, "store_id": "10", "staff_userid": "zhangsan",
                                                         "request_id": "steal-1"})
    assert (status, error["error"]) == (404, "unknown_code")

    assert call("GET", "/ops/campaigns/spr", corp=B)[1]["name"] == "B spring"
    assert call("GET", f"/ops/contact-ways/{config_id}", corp=B)[1]["deleted"] is False
    assert [w["config_id"] for w in sim.state(B)["corps"][B]["contact_ways"]] == [config_id]
    assert Coupon.get(*keys.coupon(B, code)).status == "issued"


def test_a_corp_cannot_be_named_anywhere_but_in_the_token(b_objects, call):
    status, error = call("POST", "/ops/campaigns", {"name": "x", "corp_id": B})
    assert (status, error["field"]) == (400, "corp_id")
    b_cursor = call("GET", "/ops/campaigns?limit=1", corp=B)[1]["next_cursor"] or \
        call("GET", "/ops/contact-ways?limit=1", corp=B)[1]["next_cursor"]
    b_page = call("GET", "/ops/staff?limit=1", corp=B)[1]["next_cursor"]
    for cursor in filter(None, (b_cursor, b_page)):
        status, error = call("GET", f"/ops/staff?limit=1&cursor={cursor}")
        assert (status, error["field"]) == (400, "cursor")


# --- authentication ------------------------------------------------------------------------
def test_no_claims_is_401_and_a_token_without_a_registered_corp_is_403(registered, call):
    assert call("GET", "/ops/stores", authorized=False) == (401, {"error": "unauthorized", "field": None,
                                                                  "message": "a bearer token is required"})
    assert call("GET", "/ops/nope", authorized=False)[0] == 401  # even for a route that does not exist
    assert call("GET", "/ops/stores", token_claims=claims(None))[1]["error"] == "forbidden"
    for corp_id in ("wwneverregistered", "ww#A", "x" * 65, ""):
        status, error = call("GET", "/ops/stores", corp=corp_id)
        assert status == 403 and error["error"] in ("unknown_corp", "forbidden"), corp_id
    assert call("GET", "/ops/nope") == (404, {"error": "no_route", "field": None, "message": "no such route"})


# --- the error mapper ------------------------------------------------------------------------
@pytest.mark.parametrize("errcode, status, error", [
    (45009, 429, "wecom_rate_limited"),
    (-1, 503, "wecom_unavailable"),
    (48002, 502, "wecom_configuration"),
    (40001, 502, "wecom_configuration"),
    (41041, 422, "wecom_refused"),
])
def test_wecom_errors_are_mapped_and_quote_what_wecom_said(sim, ops, monkeypatch, errcode, status, error):
    monkeypatch.setattr(wecom_client, "BACKOFF_BASE", 0.001)  # the client's retries, quickly
    sim.block_api("externalcontact/add_contact_way", errcode)
    result = ops(event("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["lisi"]}), LambdaContext())
    body = json.loads(result["body"])
    assert (result["statusCode"], body["error"], body["field"]) == (status, error, None)
    if errcode == 45009:
        assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? China time", body["message"]), body
    else:  # WeCom's own words: its errcode and its errmsg (hint and lookup link included)
        assert f"errcode {errcode} (" in body["message"] and "hint: [sim]" in body["message"], body
        assert "externalcontact/add_contact_way" in body["message"]
    if status in (429, 503):
        assert int(result["headers"]["Retry-After"]) >= 1
    sim.block_api("externalcontact/add_contact_way", None)
    if errcode == 45009:  # blocked for every caller until the block ends, without calling WeCom
        assert ops(event("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["lisi"]}),
                   LambdaContext())["statusCode"] == 429


def test_an_unexpected_http_status_from_wecom_is_quoted_not_called_a_secret_problem(sim, call, monkeypatch):
    """Defect: the 502 said "errcode -1" and sent the operator to the corp's secret."""
    monkeypatch.setenv("WECOM_API_BASE", f"{sim.base_url}/wrong-base")  # WeCom's host answers 404 there
    settings.cache_clear()
    status, body = call("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["lisi"]})
    assert (status, body["error"]) == (502, "wecom_unexpected_answer"), body
    assert "HTTP 404 (errcode 40035: unknown path /wrong-base/" in body["message"]
    assert "errcode -1" not in body["message"] and "secret" not in body["message"]
    assert "WECOM_API_BASE" in body["message"]


def test_an_unexpected_error_is_500_without_internals(registered, call, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("table arn:aws:dynamodb:secret-internals")

    monkeypatch.setattr(campaigns, "list_campaigns", broken)
    assert call("GET", "/ops/campaigns") == (500, {"error": "internal_error", "field": None,
                                                   "message": "internal error"})


# --- the 400 matrix --------------------------------------------------------------------------
TOO_MANY_USERS = [f"u{i}" for i in range(101)]
BODY_ROUTES = {  # name -> (method, path, a valid body)
    "create_way": ("POST", "/ops/contact-ways", {"owner_kind": "staff", "users": ["zhangsan"]}),
    "update_way": ("PATCH", "/ops/contact-ways/someway", {"remark": "r"}),
    "bulk": ("POST", "/ops/contact-ways/bulk", {"store_id": "10"}),
    "create_campaign": ("POST", "/ops/campaigns", {"name": "Spring"}),
    "update_campaign": ("PATCH", "/ops/campaigns/somecampaign", {"name": "Spring"}),
    "create_template": ("POST", "/ops/coupon-templates", template_body()),
    "redeem": ("POST", "/ops/coupons/redeem", {"code": "0000-0000-0000-0000", "store_id": "10",
                                               "staff_userid": "zhangsan", "request_id": "r1"}),
    "put_defaults": ("PUT", "/ops/welcome-defaults", {"corp": {"text": "hi"}}),
}
# route -> field -> values the description refuses (MISSING: left out of the valid body). Each
# is missing, of the wrong type, too long, malformed or repeated: a 400 that names the field.
BAD_FIELDS: dict[str, dict[str, list]] = {
    "create_way": {
        "owner_kind": [MISSING, None, 7, "desk", "s" * 17],
        "users": [True, "zhangsan", {"a": 1}, [7], ["x" * 65], TOO_MANY_USERS, ["has space"], [],
                  ["zhangsan", "zhangsan"]],
        "store_id": [10, "abc", "1" * 11, "0", "10\n"],
        "campaign_id": [5, "bad id!", "c" * 33],
        "channel": [[], "bad channel", "c" * 17],
        "remark": [1, "r" * 31],
        "tag_ids": ["et1", [1], ["t" * 65], [f"t{i}" for i in range(101)]],
        "welcome": ["hi", [1], {}, {"text": "x" * 4001}, {"text": 5}, {"text": "  "}, {"nope": 1},
                    {"link": {"title": "t", "url": "ftp://x"}},
                    {"link": {"title": "t", "url": "https://x"},
                     "miniprogram": {"title": "t", "appid": "a", "page": "p", "pic_media_id": "m"}}],
    },
    "update_way": {
        "remark": [1, "r" * 31],
        "users": [None, "zhangsan", [1], ["x" * 65], TOO_MANY_USERS],
        "tag_ids": ["et1", [1], ["t" * 65]],
        "welcome": ["hi", 5, []],
        "owner_kind": ["store"],  # not changeable: unknown here
    },
    "bulk": {
        "store_id": [10, "abc", "1" * 11],
        "branch_id": [2, "b", "2" * 11],
        "campaign_id": [1, "bad!", "c" * 33],
        "channel": [1, "bad channel", "c" * 17],
    },
    "create_campaign": {
        "name": [MISSING, None, 5, "", "  ", "n" * 65],
        "welcome": ["hi", {"text": ""}, {"text": "x" * 4001}],
        "coupon_template_id": [5, "bad id!", "t" * 65],
        "starts_at": ["1795600000", True, -1, 1.5, 1.0, 4102444801],
        "ends_at": ["x", False, 1.5, 4102444801],
        "campaign_id": [5, "bad id!", "c" * 33],
    },
    "update_campaign": {
        "name": [None, 5, "", "n" * 65],
        "welcome": ["hi", 1],
        "coupon_template_id": [5, "bad!", "t" * 65],
        "starts_at": ["x", True, -1],
        "ends_at": [1.5, "1"],
        "campaign_id": ["other"],  # not changeable: unknown here
    },
    "create_template": {
        "name": [MISSING, None, 5, "", "n" * 65],
        "kind": [MISSING, 1, "gift", "k" * 17],
        "amount": ["2000", True, 0, 10**9 + 1, 1.5],
        "discount": ["85", 0, 100, True],
        "threshold": [-1, "0", True, 10**10 + 1],
        "valid_days": [-1, "7", 3651, False],
        "valid_from": ["x", -1, 4102444801],
        "valid_until": ["x", True, 4102444801],
        "per_customer_limit": [0, "1", True, 1001],
        "total_stock": [MISSING, None, -1, "100", True, 10**8 + 1],
        "template_id": [5, "bad id!", "t" * 65],
    },
    "put_defaults": {
        "corp": ["hi", 5, [], {}, {"text": ""}, {"nope": 1}, {"text": "hi", "without_coupon": {"text": "hi"}}],
        "stores": [None, "x", [], {"10": {"text": ""}}, {"10": "hi"},
                   {str(n): {"text": "hi"} for n in range(1, 102)}],
    },
    "redeem": {
        "code": [MISSING, 5, "", "c" * 65, "bad!code"],
        "store_id": [MISSING, 10, "abc", "1" * 11],
        "staff_userid": [MISSING, 5, "x" * 65, "bad user"],
        "request_id": [MISSING, None, 5, "r" * 65, "bad id!"],
    },
}
# Values the description allows but that name nothing of the corp, or break a rule across
# fields, which the domain checks: a 422 that names the field.
MEANING_CASES = [
    ("create_way", {"users": ["nobody"]}, "users"),
    ("create_way", {"users": ["zhangsan", "lisi"]}, "users"),  # a staff code has one staff member
    ("create_way", {"store_id": "3"}, "store_id"),  # a region, not a store
    ("create_way", {"campaign_id": "nosuch"}, "campaign_id"),
    ("create_way", {"welcome": {"text": "字" * 1334}}, "welcome.text"),  # 4,002 bytes
    ("create_way", {"welcome": {"link": {"title": "到店", "url": "http://[shop"}}}, "welcome.link.url"),  # no host
    ("create_way", {"owner_kind": "store"}, "store_id"),  # a store code needs its store
    ("create_way", {"owner_kind": "campaign"}, "campaign_id"),
    ("bulk", {"store_id": "99"}, "store_id"),
    ("bulk", {"campaign_id": "nosuch"}, "campaign_id"),
    ("bulk", {"store_id": "10", "branch_id": "2"}, "store_id"),
    ("bulk", {"store_id": None}, "store_id"),  # neither a store nor a branch
    ("create_campaign", {"coupon_template_id": "nosuch"}, "coupon_template_id"),
    ("create_campaign", {"starts_at": NOW, "ends_at": NOW - 1}, "ends_at"),
    ("create_template", {"kind": "discount"}, "discount"),
    ("create_template", {"discount": 85}, "discount"),
    ("create_template", {"valid_days": None, "valid_from": NOW}, "valid_until"),
    ("create_template", {"valid_days": None, "valid_until": NOW + 86400, "valid_from": NOW + 2 * 86400}, "valid_from"),
    ("redeem", {"store_id": "99"}, "store_id"),
    ("redeem", {"staff_userid": "nobody"}, "staff_userid"),
    ("put_defaults", {"corp": {"text": "券 {coupon_code}"}}, "corp"),  # a default carries no coupon
    ("put_defaults", {"stores": {"abc": {"text": "hi"}}}, "stores"),  # keys are not described
    ("put_defaults", {"stores": {"99": {"text": "hi"}}}, "stores"),  # not a store of the corp
    ("put_defaults", {"stores": {"0": {"text": "hi"}}}, "stores"),
]


def assert_names(answer: tuple[int, dict], field: str, status: int = 400) -> None:
    got, body = answer
    assert got == status, body
    assert body["error"] == "invalid" or body["error"].startswith("invalid_"), body
    assert body["field"] == field or body["field"].startswith(f"{field}."), body
    assert body["message"]


@pytest.mark.parametrize("route", sorted(BODY_ROUTES))
def test_every_body_field_the_description_refuses_is_a_400_naming_it(sim, call, subtests, route):
    method, path, valid = BODY_ROUTES[route]
    assert BAD_FIELDS[route], route
    for name, values in BAD_FIELDS[route].items():
        for value in values:
            body = {k: v for k, v in valid.items() if k != name}
            if value is not MISSING:
                body[name] = value
            with subtests.test(field=name, value=repr(value)[:40]):
                assert_names(call(method, path, body), name)


@pytest.mark.parametrize("route", sorted({case[0] for case in MEANING_CASES}))
def test_a_well_formed_body_refused_on_meaning_is_a_422_naming_the_field(sim, call, subtests, route):
    method, path, valid = BODY_ROUTES[route]
    for changes, field in [(changes, field) for r, changes, field in MEANING_CASES if r == route]:
        body = {k: v for k, v in {**valid, **changes}.items() if v is not None}
        with subtests.test(changes=repr(changes)[:60]):
            assert_names(call(method, path, body), field, 422)


BODY_FAULTS = {
    "missing": dict(raw=b""),
    "not_json": dict(raw=b"{name: 'x'}"),
    "an_array": dict(raw=b'[{"name": "x"}]'),
    "a_string": dict(raw=b'"x"'),
    "nan": dict(raw=b'{"name": NaN}'),
    "too_large": dict(raw=json.dumps({"name": "x" * 70_000}).encode()),
    "not_utf8": dict(raw=b'{"name": "\xff"}'),
}


@pytest.mark.parametrize("route", sorted(BODY_ROUTES))
def test_a_body_that_is_not_one_json_object_is_a_400_naming_the_body(registered, call, subtests, route):
    method, path, _ = BODY_ROUTES[route]
    faults = {**BODY_FAULTS, **({"nothing_to_change": dict(body={})} if method == "PATCH" else {})}
    for fault, request in faults.items():
        with subtests.test(fault=fault):
            assert_names(call(method, path, **request), "body")


def test_a_base64_body_is_decoded_first(registered, ops):
    request = event("POST", "/ops/campaigns", raw=b"")
    request.update(body=base64.b64encode(b'{"name": 1}').decode(), isBase64Encoded=True)
    assert json.loads(ops(request, LambdaContext())["body"])["field"] == "name"
    request.update(body="***not base64***")
    assert json.loads(ops(request, LambdaContext())["body"])["field"] == "body"


LIST_ROUTES = ["/ops/stores", "/ops/staff", "/ops/contact-ways", "/ops/campaigns", "/ops/coupon-templates",
               "/ops/customers/wmA1/coupons", "/ops/welcome-defaults"]
BAD_QUERIES = [("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=1.5", "limit"),
               ("limit=true", "limit"), ("limit=-1", "limit"), ("limit=", "limit"), ("limit=1&limit=2", "limit"),
               ("cursor=!!!", "cursor"), ("cursor=" + "x" * 2049, "cursor"), ("cursor=eyJhIjoxfQ", "cursor"),
               ("cursor=bm90IGpzb24", "cursor"), ("foo=1", "foo")]


@pytest.mark.parametrize("path", LIST_ROUTES)
def test_a_bad_limit_cursor_or_query_parameter_is_a_400_naming_it(registered, call, subtests, path):
    for query, field in BAD_QUERIES:
        with subtests.test(query=query[:40]):
            assert_names(call("GET", f"{path}?{query}"), field)


BAD_PARAMETERS = [
    ("/ops/staff?store_id=abc", "store_id"), ("/ops/staff?status=gone", "status"),
    ("/ops/stores?branch_id=x", "branch_id"), ("/ops/contact-ways?owner_kind=desk", "owner_kind"),
    ("/ops/contact-ways?owner_id=bad%20id", "owner_id"),
    (f"/ops/contact-ways/{'c' * 65}", "config_id"), ("/ops/campaigns/bad%21id", "campaign_id"),
    (f"/ops/coupon-templates/{'t' * 65}", "template_id"), ("/ops/customers/bad%21id", "external_userid"),
    (f"/ops/coupons/{'c' * 65}", "code"), ("/ops/customers/wmA1?timeline=1", "timeline"),
    ("/ops/jobs/Not%20A%20Job", "job_id"), (f"/ops/jobs/j{'x' * 81}", "job_id"),
]


def test_bad_query_and_path_parameters_are_400s_naming_them(registered, call, subtests):
    for path, field in BAD_PARAMETERS:
        with subtests.test(path=path[:60]):
            assert_names(call("GET", path), field)


# --- the API, its OpenAPI description and the template agree --------------------------------
OPENAPI = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))


def documented_operations() -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op
            for path, item in OPENAPI["paths"].items() for method, op in item.items() if method != "parameters"}


def test_every_route_of_the_resolver_is_documented_and_nothing_else():
    assert set(documented_operations()) == api.routes()


def test_every_route_of_the_resolver_is_in_the_template_behind_the_jwt_authorizer():
    raw = tpl.load_yaml()["Resources"]["OpsApiFunction"]["Properties"]["Events"]
    assert {(r.method, r.path) for r in OPS_ROUTES} == api.routes()
    assert all(event["Properties"]["Auth"] == {"Authorizer": "OpsJwt"} for event in raw.values())
    assert all(event["Properties"]["ApiId"] == {"Ref": "ScrmHttpApi"} for event in raw.values())


def test_the_openapi_document_is_valid():
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(OPENAPI)
    assert OPENAPI["security"] == [{"bearerJwt": []}]
    assert contract.document() == OPENAPI  # the package validates with the very same document


def test_every_documented_operation_compiles_into_its_validation():
    for method, path in documented_operations():
        op = contract.operation(method, path)
        assert set(op.of("path")) == set(re.findall(r"{(\w+)}", path)), (method, path)


def request_schema(method: str, path: str) -> dict:
    schema = documented_operations()[(method, path)]["requestBody"]["content"]["application/json"]["schema"]
    while "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_the_400_matrix_covers_every_body_field_and_every_required_one_missing():
    covered = set()
    for route, (method, path, _) in BODY_ROUTES.items():
        target, _ = find_route(TARGETS, method, path)
        schema = request_schema(method, target.route.path)
        assert set(schema["properties"]) <= set(BAD_FIELDS[route]), route
        assert set(schema.get("required", [])) <= {
            n for n, values in BAD_FIELDS[route].items() if any(v is MISSING for v in values)}, route
        covered.add((method, target.route.path))
    assert covered == {key for key, op in documented_operations().items() if "requestBody" in op}
