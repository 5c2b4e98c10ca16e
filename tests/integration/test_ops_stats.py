"""GET /ops/stats/daily and /ops/stats/ranking through the ops API's handler: figures projected
from stream records (as the stats function gets them), every parameter checked."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from scrm.domain.stats import projector
from scrm.domain.stats.facts import METRICS
from scrm.entry.ops import auth
from scrm.platform.config import business_day
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps, keys
from scrm.store.models import Department, Follow, Staff, Welcome

from infra.local import template as tpl
from infra.local.gateway import Target, find_route, http_event
from infra.scripts.make_events import stream_record
from tests.support.functions import LambdaContext, load_function

A, B = "wwopsstatsa001", "wwopsstatsb002"
DAY = 1795600000  # 2026-11-25 16:26 in China
TARGETS = [Target(route, "OpsApiFunction") for route in tpl.load().functions["OpsApiFunction"].routes]
ZERO = dict.fromkeys(METRICS, 0)


@pytest.fixture(scope="module")
def ops():
    return load_function("ops_api").handler


@pytest.fixture
def call(ops, aws):
    auth.forget_cache()
    for corp_id in (A, B):
        corps.register(CorpCredentials(corp_id=corp_id, token="tok", encoding_aes_key="k" * 43, secret="s",
                                       agent_id="1000002"))

    def send(path: str, corp: str = A) -> tuple[int, Any]:
        raw_path, _, raw_query = path.partition("?")
        found = find_route(TARGETS, "GET", raw_path)
        route_key, params = (found[0].route.route_key, found[1]) if found else (f"GET {raw_path}", {})
        claims = {"iss": "https://example.invalid", "aud": "scrm-ops", "sub": "t", "scrm:corp": corp}
        event = http_event("GET", raw_path, raw_query, [("authorization", "Bearer t")], b"", route_key, params,
                           "$default", "203.0.113.9", claims)
        result = ops(event, LambdaContext())
        return result["statusCode"], json.loads(result["body"])

    yield send
    auth.forget_cache()


@pytest.fixture
def figures(call):
    """Store 1001 (region 100, branch 10) with 张三 and 李四; 3 customers for 张三, 1 for 李四 and a
    welcome, on 2026-11-25; 1 for 李四 on the 26th."""
    Department(*keys.department(A, 10), dept_id=10, name="华东分公司", level="branch", branch_id="10").save()
    Department(*keys.department(A, 100), dept_id=100, name="上海区域", level="region", region_id="100",
               branch_id="10").save()
    Department(*keys.department(A, 1001), dept_id=1001, name="南京西路店", level="store", store_id="1001",
               region_id="100", branch_id="10").save()
    for userid, name in (("zhangsan", "张三"), ("lisi", "李四")):
        Staff(*keys.staff(A, userid), userid=userid, name=name, store_id="1001", region_id="100",
              branch_id="10").save()
    records = []
    for n, (customer, staff, at) in enumerate([("c1", "zhangsan", DAY), ("c2", "zhangsan", DAY + 1),
                                              ("c3", "zhangsan", DAY + 2), ("c4", "lisi", DAY + 3),
                                              ("c5", "lisi", DAY + 86400)]):
        follow = Follow(*keys.follow(A, customer, staff), external_userid=customer, userid=staff, status="active",
                        added_at=at, version=at * 10 + 1)
        records.append(stream_record(n, "INSERT", follow))
    claim = dict(external_userid="c4", userid="lisi", claimed_at=DAY + 3, lease_until=DAY + 13, holder="test")
    records.append(stream_record(9, "MODIFY", Welcome(*keys.welcome(A, "c4", "lisi", "W1"), status="sent",
                                                       sent_at=DAY + 4, **claim),
                                 Welcome(*keys.welcome(A, "c4", "lisi", "W1"), status="sending", **claim)))
    assert projector.project(records).failed is None
    return call


def test_a_scopes_days_come_one_item_each_zeros_included_with_its_name(figures):
    status, body = figures("/ops/stats/daily?scope=staff&scope_id=lisi&from=2026-11-24&to=2026-11-27")
    assert status == 200, body
    assert (body["scope"], body["scope_id"], body["name"], body["from"], body["to"]) == (
        "staff", "lisi", "李四", "2026-11-24", "2026-11-27")
    assert body["items"] == [
        {"day": "2026-11-24", **ZERO},
        {"day": "2026-11-25", **ZERO, "new_customers": 1, "welcomes_sent": 1},
        {"day": "2026-11-26", **ZERO, "new_customers": 1},
        {"day": "2026-11-27", **ZERO},
    ]
    status, body = figures("/ops/stats/daily?scope=store&scope_id=1001&from=2026-11-25&to=2026-11-25")
    assert (status, body["name"], body["items"][0]["new_customers"]) == (200, "南京西路店", 4)


def test_the_corp_scope_is_the_callers_corp_and_takes_no_id(figures):
    status, body = figures("/ops/stats/daily?scope=corp&from=2026-11-25&to=2026-11-26")
    assert status == 200 and body["scope_id"] == A
    assert [d["new_customers"] for d in body["items"]] == [4, 1]
    status, body = figures("/ops/stats/daily?scope=corp&from=2026-11-25&to=2026-11-26", corp=B)
    assert status == 200 and [d["new_customers"] for d in body["items"]] == [0, 0]  # B sees none of A's
    status, _ = figures("/ops/stats/daily?scope=staff&scope_id=lisi&from=2026-11-25&to=2026-11-25", corp=B)
    assert status == 404


def test_a_ranking_lists_the_scopes_under_a_parent_highest_first_with_names(figures):
    status, body = figures("/ops/stats/ranking?scope=staff&parent=store:1001&day=2026-11-25&metric=new_customers")
    assert status == 200, body
    assert (body["parent"], body["parent_name"], body["day"], body["metric"]) == (
        "store:1001", "南京西路店", "2026-11-25", "new_customers")
    assert body["items"] == [{"scope_id": "zhangsan", "name": "张三", "value": 3, "rank": 1},
                             {"scope_id": "lisi", "name": "李四", "value": 1, "rank": 2}]
    status, body = figures("/ops/stats/ranking?scope=staff&parent=store:1001&day=2026-11-25&metric=new_customers"
                           "&limit=1")
    assert [i["scope_id"] for i in body["items"]] == ["zhangsan"]
    status, body = figures("/ops/stats/ranking?scope=branch&parent=corp&day=2026-11-25&metric=welcomes_sent")
    assert body["items"] == [{"scope_id": "10", "name": "华东分公司", "value": 1, "rank": 1}]
    status, body = figures("/ops/stats/ranking?scope=store&parent=region:100&metric=new_customers")
    assert (status, body["day"]) == (200, business_day(time.time()))  # today by default


@pytest.mark.parametrize("query, field, status", [
    ("from=2026-11-25&to=2026-11-25", "scope", 400),
    ("scope=planet&from=2026-11-25&to=2026-11-25", "scope", 400),
    ("scope=staff&from=2026-11-25&to=2026-11-25", "scope_id", 422),
    ("scope=corp&scope_id=wwopsstatsa001&from=2026-11-25&to=2026-11-25", "scope_id", 422),
    ("scope=store&scope_id=abc&from=2026-11-25&to=2026-11-25", "scope_id", 422),
    ("scope=staff&scope_id=bad%20id&from=2026-11-25&to=2026-11-25", "scope_id", 400),
    ("scope=corp&to=2026-11-25", "from", 400),
    ("scope=corp&from=2026-11-25", "to", 400),
    ("scope=corp&from=2026-13-01&to=2026-12-01", "from", 422),
    ("scope=corp&from=2026-02-30&to=2026-03-01", "from", 422),
    ("scope=corp&from=2026-1-1&to=2026-12-01", "from", 400),
    ("scope=corp&from=2026-11-25&to=2026-11-24", "to", 422),
    ("scope=corp&from=2025-11-25&to=2026-11-26", "to", 422),  # 367 days
    ("scope=corp&from=2026-11-25&to=2026-11-25&limit=5", "limit", 400),
])
def test_every_daily_parameter_is_checked_and_the_refusal_names_it(figures, query, field, status):
    """400: the request does not match the description; 422: it does, but means nothing here."""
    got, body = figures(f"/ops/stats/daily?{query}")
    assert (got, body["field"]) == (status, field), body


@pytest.mark.parametrize("query, field, status", [
    ("parent=store:1001&metric=new_customers", "scope", 400),
    ("scope=corp&parent=corp&metric=new_customers", "scope", 400),
    ("scope=staff&metric=new_customers", "parent", 400),
    ("scope=staff&parent=planet:1&metric=new_customers", "parent", 400),
    ("scope=staff&parent=store:abc&metric=new_customers", "parent", 400),
    ("scope=store&parent=store:1001&metric=new_customers", "parent", 422),  # not a level above
    ("scope=branch&parent=region:100&metric=new_customers", "parent", 422),
    ("scope=staff&parent=store:1001", "metric", 400),
    ("scope=staff&parent=store:1001&metric=sales", "metric", 400),
    ("scope=staff&parent=store:1001&metric=new_customers&day=2026-11-31", "day", 422),
    ("scope=staff&parent=store:1001&metric=new_customers&limit=0", "limit", 400),
    ("scope=staff&parent=store:1001&metric=new_customers&limit=101", "limit", 400),
    ("scope=staff&parent=store:1001&metric=new_customers&limit=ten", "limit", 400),
])
def test_every_ranking_parameter_is_checked_and_the_refusal_names_it(figures, query, field, status):
    got, body = figures(f"/ops/stats/ranking?{query}")
    assert (got, body["field"]) == (status, field), body


@pytest.mark.parametrize("path, field", [
    ("/ops/stats/daily?scope=staff&scope_id=nobody&from=2026-11-25&to=2026-11-25", "scope_id"),
    ("/ops/stats/daily?scope=region&scope_id=999&from=2026-11-25&to=2026-11-25", "scope_id"),
    ("/ops/stats/ranking?scope=staff&parent=store:999&metric=new_customers", "parent"),
])
def test_a_scope_the_corp_does_not_have_is_a_404_naming_it(figures, path, field):
    status, body = figures(path)
    assert (status, body["error"], body["field"]) == (404, "not_found", field), body
