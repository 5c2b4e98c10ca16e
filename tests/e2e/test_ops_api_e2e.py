"""The ops API through the running local stack: real HTTP, the gateway's JWT check, the token
the stack minted, the org sync schedule, WeCom simulated, the callback and welcome lanes.

An operator sets a campaign up (coupon template, campaign with a welcome, a staff code); a
customer adds the clerk through the code; the store sees the customer with the campaign's
coupon and redeems it at the till.
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps

pytestmark = pytest.mark.e2e

STORE, CLERK = "30", "e2e_clerk"


@pytest.fixture(scope="module")
def corp_id(stack) -> str:
    return stack.corps[0].corp_id


def ops(stack, method: str, path: str, token: str | None = None, headers_extra: dict | None = None,
        **kwargs) -> requests.Response:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers_extra or {})}
    return requests.request(method, f"{stack.gateway_url}{path}", headers=headers, timeout=15, **kwargs)


@pytest.fixture(scope="module")
def store(stack, corp_id) -> str:
    """A branch, a region and store 30 with its clerk in the simulator, synced by the nightly schedule."""
    if stack.sim is None:
        pytest.skip("WECOM_API_BASE is set: no simulator to seed")
    for dept_id, name, parent in ((2, "E2E branch", 1), (3, "E2E region", 2), (int(STORE), "E2E store", 3)):
        stack.sim.add_department(corp_id, dept_id, name, parent)
    stack.sim.add_staff(corp_id, CLERK, department=[int(STORE)])
    fired = requests.post(f"{stack.gateway_url}/_local/schedules/OrgSyncFunction", timeout=60)
    assert fired.status_code == 200, fired.text
    stack.drain(timeout=60)  # the org sync jobs it started, run by the jobs function
    return STORE


def test_a_campaign_brings_a_customer_whose_coupon_the_store_redeems(stack, corp_id, store):
    token = stack.ops_token(corp_id)
    stores = ops(stack, "GET", "/ops/stores", token)
    assert stores.status_code == 200 and store in {s["store_id"] for s in stores.json()["items"]}

    template_id = f"e2e{uuid.uuid4().hex[:8]}"
    template = ops(stack, "POST", "/ops/coupon-templates", token, json={
        "name": "10 off", "kind": "amount", "amount": 1000, "valid_days": 7, "total_stock": 10,
        "template_id": template_id})
    assert template.status_code == 201, template.text
    campaign = ops(stack, "POST", "/ops/campaigns", token, json={
        "name": "E2E opening", "welcome": {"text": "Welcome to our store"}, "coupon_template_id": template_id})
    assert campaign.status_code == 201, campaign.text
    way = ops(stack, "POST", "/ops/contact-ways", token, json={
        "owner_kind": "staff", "users": [CLERK], "campaign_id": campaign.json()["campaign_id"], "channel": "door"})
    assert way.status_code == 201, way.text

    added = stack.sim.add_customer(corp_id, config_id=way.json()["config_id"])
    assert added["callback_status"] == [200]
    stack.drain(timeout=30)

    customer = ops(stack, "GET", f"/ops/customers/{added['external_userid']}", token)
    assert customer.status_code == 200, customer.text
    view = customer.json()
    assert [f["userid"] for f in view["follows"]] == [CLERK]
    first = view["attribution"]["first"]
    assert (first["config_id"], first["campaign_id"], first["store_id"], first["channel"]) == (
        way.json()["config_id"], campaign.json()["campaign_id"], store, "door")

    coupons = ops(stack, "GET", f"/ops/customers/{added['external_userid']}/coupons", token).json()["items"]
    assert [c["template_id"] for c in coupons] == [template_id]  # issued with the welcome
    till = {"code": coupons[0]["code"], "store_id": store, "staff_userid": CLERK, "request_id": "e2e-till-1"}
    redeemed = ops(stack, "POST", "/ops/coupons/redeem", token, json=till)
    assert redeemed.status_code == 200 and redeemed.json()["status"] == "redeemed"
    assert ops(stack, "POST", "/ops/coupons/redeem", token, json=till).json() == redeemed.json()
    again = ops(stack, "POST", "/ops/coupons/redeem", token, json={**till, "request_id": "e2e-till-2"})
    assert (again.status_code, again.json()["error"]) == (409, "already_redeemed")
    stock = ops(stack, "GET", f"/ops/coupon-templates/{template_id}", token).json()["stock"]
    assert stock == {"remaining": 9, "issued": 1, "total": 10}


def test_requests_without_a_valid_token_never_reach_the_data(stack, corp_id):
    assert ops(stack, "GET", "/ops/stores").status_code == 401
    expired = stack.mint_token({**stack.ops_claims(corp_id, now=time.time() - 13 * 3600)})
    answer = ops(stack, "GET", "/ops/stores", expired)
    assert (answer.status_code, answer.json()) == (401, {"message": "Unauthorized"})
    stranger = ops(stack, "GET", "/ops/stores", stack.mint_token(stack.ops_claims("wwnotregistered")))
    assert (stranger.status_code, stranger.json()["error"]) == (403, "unknown_corp")
    no_corp = {k: v for k, v in stack.ops_claims(corp_id).items() if k != "scrm:corp"}
    assert ops(stack, "GET", "/ops/stores", stack.mint_token(no_corp)).status_code == 403


def test_a_token_of_another_corp_sees_and_changes_nothing_of_this_one(stack, corp_id):
    token = stack.ops_token(corp_id)
    mine = ops(stack, "POST", "/ops/campaigns", token, json={"name": "Only ours"}).json()
    other = f"wwe2eother{uuid.uuid4().hex[:6]}"
    corps.register(CorpCredentials(corp_id=other, token="t", encoding_aes_key="k" * 43, secret="s", agent_id="1"))
    theirs = stack.mint_token(stack.ops_claims(other))

    assert ops(stack, "GET", f"/ops/campaigns/{mine['campaign_id']}", theirs).status_code == 404
    assert ops(stack, "PATCH", f"/ops/campaigns/{mine['campaign_id']}", theirs, json={"name": "x"}).status_code == 404
    assert ops(stack, "GET", "/ops/campaigns", theirs).json() == {"items": [], "next_cursor": None}
    assert ops(stack, "GET", f"/ops/campaigns/{mine['campaign_id']}", token).json()["name"] == "Only ours"


def test_the_ops_routes_are_served_under_the_stage_name_too(stack, corp_id):
    stage = stack.template.parameters["StageName"]
    answer = ops(stack, "GET", f"/{stage}/ops/staff?limit=1", stack.ops_token(corp_id))
    assert answer.status_code == 200 and set(answer.json()) == {"items", "next_cursor"}


def test_a_retried_post_through_the_gateway_is_answered_once_in_chinese_with_china_time(stack, corp_id):
    token = stack.ops_token(corp_id)
    key = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}
    first = ops(stack, "POST", "/ops/campaigns", token, json={"name": "双十一"}, headers_extra=key)
    again = ops(stack, "POST", "/ops/campaigns", token, json={"name": "双十一"}, headers_extra=key)
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "双十一".encode() in first.content and b"\\u" not in first.content
    assert first.json()["created_at_iso"].endswith("+08:00")
