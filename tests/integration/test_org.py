"""Org tree: full sync against the WeCom simulator, placement rules, address-book events.

The simulated company (depth in brackets, root = 1)::

    1 company [1]                       boss
    ├── 2 East branch [2]
    │   ├── 3 Shanghai region [3]
    │   │   ├── 10 Xuhui store [4]      zhangsan
    │   │   │   └── 100 tills [5]       lisi        (below a store: belongs to it)
    │   │   └── 11 Jing'an store [4]    wangwu, multi (main 11, also in 10)
    │   └── 4 Hangzhou region [3]
    │       └── 12 West Lake store [4]  zhaoliu
    └── 5 Head office [2]               hq_admin    (a branch by depth: in no store)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from scrm.domain.org import events as address_book
from scrm.domain.org import tree as org
from scrm.jobs import runner
from scrm.platform.credentials import CorpCredentials
from scrm.platform.errors import Invalid, NotFound, ScrmError
from scrm.store import corps, keys
from scrm.store.models import Corp, Department, Follow, Staff
from scrm.wecom.apis.client import WeComClient, forget_caches
from scrm.wecom.apis.tokens import TokenStore
from scrm.wecom.callback.events import CallbackEvent, normalize

from infra.local.wecom_sim import WeComSimulator

CORP = "wworgtest0001"
CREDS = CorpCredentials(corp_id=CORP, token="tok", encoding_aes_key="6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
                        secret="sim-secret", agent_id="1000002")
DEPARTMENTS = [(2, "East branch", 1), (3, "Shanghai region", 2), (10, "Xuhui store", 3), (100, "Tills", 10),
               (11, "Jing'an store", 3), (4, "Hangzhou region", 2), (12, "West Lake store", 4), (5, "Head office", 1)]
STAFF = {"boss": [1], "zhangsan": [10], "lisi": [100], "wangwu": [11], "multi": [11, 10], "zhaoliu": [12],
         "hq_admin": [5]}


def register(corp_id: str) -> None:
    Corp(*keys.corp(corp_id), corp_id=corp_id, registered_at=int(time.time()), GSI1PK=keys.CORPS_INDEX_PK,
         GSI1SK=corp_id).save()


def seed(sim: WeComSimulator, corp_id: str = CORP) -> None:
    sim.add_corp(corp_id, CREDS.secret, CREDS.token, CREDS.encoding_aes_key, int(CREDS.agent_id))
    for dept_id, name, parent in DEPARTMENTS:
        sim.add_department(corp_id, dept_id, name, parent)
    for userid, departments in STAFF.items():
        sim.add_staff(corp_id, userid, department=departments)
    register(corp_id)


def client_for(sim: WeComSimulator, corp_id: str = CORP) -> WeComClient:
    creds = CorpCredentials(**{**CREDS.__dict__, "corp_id": corp_id})
    return WeComClient(creds, base_url=f"{sim.base_url}/cgi-bin", token_store=TokenStore())


@pytest.fixture
def sim(aws) -> Iterator[WeComSimulator]:
    forget_caches()
    simulator = WeComSimulator()
    simulator.start(host="127.0.0.1", port=0)
    seed(simulator)
    yield simulator
    simulator.stop()
    forget_caches()


@pytest.fixture
def client(sim: WeComSimulator) -> WeComClient:
    return client_for(sim)


def follow(userid: str, external_userid: str, status: str = "active") -> None:
    Follow(*keys.follow(CORP, external_userid, userid), external_userid=external_userid, userid=userid, status=status,
           GSI1PK=keys.follows_of_staff(CORP, userid), GSI1SK=f"{keys.FOLLOW_PREFIX}{external_userid}").save()


def department(dept_id: int) -> Department:
    return Department.get(*keys.department(CORP, dept_id))


def staff(userid: str) -> Staff:
    return Staff.get(*keys.staff(CORP, userid))


def contact_event(change_type: str, create_time: int, **fields: str) -> CallbackEvent:
    return normalize(CORP, {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(create_time),
                            "MsgType": "event", "Event": "change_contact", "ChangeType": change_type, **fields})


# --- full sync ------------------------------------------------------------------------------
def test_full_sync_levels_departments_by_depth(client):
    report = org.full_sync(client, CORP)

    assert (report["departments"], report["branches"], report["regions"], report["stores"]) == (9, 2, 2, 3)
    assert {d: department(d).level for d in (1, 2, 3, 4, 5, 10, 11, 12, 100)} == {
        1: "other", 2: "branch", 3: "region", 4: "region", 5: "branch", 10: "store", 11: "store", 12: "store",
        100: "other"}
    tills = department(100)
    assert (tills.depth, tills.store_id, tills.region_id, tills.branch_id) == (5, "10", "3", "2")
    stores, cursor = org.list_stores(CORP, limit=10)
    assert cursor is None
    assert [(s["store_id"], s["name"], s["region_id"], s["branch_id"]) for s in stores] == [
        ("10", "Xuhui store", "3", "2"), ("11", "Jing'an store", "3", "2"), ("12", "West Lake store", "4", "2")]


def test_full_sync_puts_staff_in_stores_and_reports_the_unassigned(client):
    report = org.full_sync(client, CORP)

    assert report["staff"] == 7
    assert sorted(report["unassigned_staff"]) == ["boss", "hq_admin"]
    assert org.store_of(CORP, "zhangsan") == {"store_id": "10", "region_id": "3", "branch_id": "2"}
    assert org.store_of(CORP, "lisi") == {"store_id": "10", "region_id": "3", "branch_id": "2"}
    assert org.store_of(CORP, "multi")["store_id"] == "11"  # the main department decides
    assert org.store_of(CORP, "zhaoliu") == {"store_id": "12", "region_id": "4", "branch_id": "2"}
    assert org.store_of(CORP, "hq_admin") is None
    assert staff("hq_admin").branch_id == "5"  # kept, with the placement it has
    in_xuhui, _ = org.list_staff(CORP, store_id="10", limit=10)
    assert sorted(s["userid"] for s in in_xuhui) == ["lisi", "zhangsan"]
    unassigned, _ = org.list_staff(CORP, store_id=org.NO_STORE, limit=10)
    assert sorted(s["userid"] for s in unassigned) == ["boss", "hq_admin"]


def test_listings_page_with_opaque_cursors(client):
    org.full_sync(client, CORP)
    first, cursor = org.list_staff(CORP, limit=4)
    second, end = org.list_staff(CORP, limit=4, cursor=cursor)
    assert end is None
    assert sorted(s["userid"] for s in first + second) == sorted(STAFF)
    stores, cursor = org.list_stores(CORP, limit=2)
    assert [s["store_id"] for s in stores] == ["10", "11"]
    assert [s["store_id"] for s in org.list_stores(CORP, limit=2, cursor=cursor)[0]] == ["12"]
    with pytest.raises(Invalid) as err:
        org.list_staff("wwanothercorp", limit=4, cursor=cursor)  # another listing's cursor
    assert err.value.field == "cursor"
    with pytest.raises(Invalid):
        org.list_staff(CORP, limit=4, cursor="not-a-cursor!")
    with pytest.raises(Invalid) as err:
        org.list_stores(CORP, limit=0)
    assert err.value.field == "limit"


def test_a_second_sync_changes_nothing(client):
    org.full_sync(client, CORP, now=1_800_000_000)
    versions = {u: staff(u).version for u in STAFF}

    report = org.full_sync(client, CORP, now=1_800_086_400)

    assert (report["written"], report["stale"], report["resigned"], report["departments_removed"]) == (0, 0, [], [])
    assert {u: staff(u).version for u in STAFF} == versions


def test_staff_removed_from_wecom_is_resigned_with_the_customers_left_behind(sim, client):
    org.full_sync(client, CORP, now=1_800_000_000)
    follow("zhangsan", "wm_a")
    follow("zhangsan", "wm_b")
    follow("zhangsan", "wm_c", status="deleted_by_customer")  # already gone: not left behind
    sim.delete_user(CORP, "zhangsan", deliver=False)

    report = org.full_sync(client, CORP, now=1_800_086_400)

    assert report["resigned"] == [{"userid": "zhangsan", "customers_left_behind": 2}]
    row = staff("zhangsan")
    assert (row.status, row.resigned_at, row.customers_left_behind) == ("resigned", 1_800_086_400, 2)
    assert row.store_id == "10"  # the store keeps the record of who left it
    assert org.customers_left_behind(CORP, "zhangsan") == 2
    assert org.full_sync(client, CORP, now=1_800_172_800)["resigned"] == []  # reported once


def test_a_removed_department_is_marked_deleted_and_leaves_the_store_list(sim, client):
    org.full_sync(client, CORP, now=1_800_000_000)
    sim.delete_user(CORP, "zhaoliu", deliver=False)
    with sim._lock:  # the simulator has no department deletion; WeCom would refuse a non-empty one anyway
        del sim._corps[CORP].departments[12]

    report = org.full_sync(client, CORP, now=1_800_086_400)

    assert report["departments_removed"] == [12]
    assert department(12).deleted
    assert [s["store_id"] for s in org.list_stores(CORP, limit=10)[0]] == ["10", "11"]


def test_a_sync_does_not_undo_a_newer_event(client):
    org.full_sync(client, CORP, now=1_800_000_000)
    address_book.handle(contact_event("delete_user", 1_800_000_500, UserID="wangwu"))

    report = org.full_sync(client, CORP, now=1_800_000_400)  # WeCom read before the deletion

    assert report["stale"] == 1
    assert staff("wangwu").status == "resigned"


def test_a_wecom_answer_without_departments_resigns_nobody(client):
    org.full_sync(client, CORP)

    class Empty:
        def list_departments(self) -> dict:
            return {"department": []}

    with pytest.raises(ScrmError):
        org.full_sync(Empty(), CORP)  # type: ignore[arg-type]
    assert staff("zhangsan").status == "active"


# --- rules ----------------------------------------------------------------------------------
def test_the_explicit_rule_names_stores_and_their_regions(client):
    org.full_sync(client, CORP)
    # Head office (5) counted as a store of the Hangzhou region although the tree says otherwise.
    org.set_rule(CORP, {"mode": "explicit", "branches": [2], "regions": [3, 4],
                        "stores": {"10": None, "11": None, "12": None, "5": 4}})
    # set_rule re-places the stored departments at once ...
    assert [s["store_id"] for s in org.list_stores(CORP, limit=10)[0]] == ["5", "10", "11", "12"]

    report = org.full_sync(client, CORP)  # ... and the next sync re-places the staff

    assert report["unassigned_staff"] == ["boss"]
    assert org.store_of(CORP, "hq_admin") == {"store_id": "5", "region_id": "4", "branch_id": "2"}
    assert org.store_of(CORP, "lisi") == {"store_id": "10", "region_id": "3", "branch_id": "2"}
    assert department(5).level == "store"


def test_a_depth_rule_without_regions(client):
    org.set_rule(CORP, {"mode": "depth", "branch": 2, "store": 3})
    report = org.full_sync(client, CORP)
    assert (report["branches"], report["regions"], report["stores"]) == (2, 0, 2)
    assert org.store_of(CORP, "zhangsan") == {"store_id": "3", "region_id": None, "branch_id": "2"}


@pytest.mark.parametrize(("rule", "field"), [
    ("depth", "org_rule"),
    ({"mode": "tree"}, "org_rule.mode"),
    ({"mode": "depth", "branch": 3, "region": 3, "store": 4}, "org_rule"),
    ({"mode": "depth", "branch": 2, "region": 3}, "org_rule.store"),
    ({"mode": "depth", "store": 16}, "org_rule.store"),
    ({"mode": "depth", "store": True}, "org_rule.store"),
    ({"mode": "depth", "store": 4, "shop": 5}, "org_rule"),
    ({"mode": "explicit", "stores": []}, "org_rule.stores"),
    ({"mode": "explicit", "stores": ["x"]}, "org_rule.stores"),
    ({"mode": "explicit", "regions": [3], "stores": [3]}, "org_rule"),
    ({"mode": "explicit", "regions": [3], "stores": {"10": 4}}, "org_rule.stores.10"),
])
def test_a_bad_rule_is_refused_naming_the_field(aws, rule, field):
    register(CORP)
    with pytest.raises(Invalid) as err:
        org.set_rule(CORP, rule)
    assert err.value.field == field
    assert org.rule_of(CORP) == org.DEFAULT_RULE


def test_a_rule_for_an_unregistered_corp_is_not_found(aws):
    with pytest.raises(NotFound):
        org.set_rule("wwnobody", org.DEFAULT_RULE)


def test_placement_survives_a_cycle_and_a_missing_parent():
    placed = org.place({1: 0, 2: 1, 7: 8, 8: 7, 9: 42}, org.DEFAULT_RULE)
    assert placed[2].level == "branch"
    assert {placed[d].depth for d in (7, 8, 9)} == {None}


# --- address-book events --------------------------------------------------------------------
def test_a_new_staff_member_gets_a_store_from_the_event(client):
    org.full_sync(client, CORP, now=1_800_000_000)

    address_book.handle(contact_event("create_user", 1_800_000_100, UserID="newbie", Name="New Bie",
                                      Department="12", MainDepartment="12", Status="1"))
    assert org.store_of(CORP, "newbie") == {"store_id": "12", "region_id": "4", "branch_id": "2"}
    # since 2022 an update carries only UserID and Department: the main department follows
    address_book.handle(contact_event("update_user", 1_800_000_200, UserID="newbie", Department="11"))
    assert org.store_of(CORP, "newbie")["store_id"] == "11"
    assert [s["userid"] for s in org.list_staff(CORP, store_id="11", limit=10)[0]].count("newbie") == 1


def test_a_new_store_from_a_party_event_places_its_staff_in_either_order(client):
    org.full_sync(client, CORP, now=1_800_000_000)
    address_book.handle(contact_event("create_party", 1_800_000_100, Id="13", ParentId="3", Name="Pudong store"))
    address_book.handle(contact_event("create_user", 1_800_000_110, UserID="pudong1", Department="13",
                                      MainDepartment="13"))
    assert org.store_of(CORP, "pudong1") == {"store_id": "13", "region_id": "3", "branch_id": "2"}

    # the member's event handled before the department's: unassigned, then placed by the party event
    address_book.handle(contact_event("create_user", 1_800_000_200, UserID="early", Department="14",
                                      MainDepartment="14"))
    assert org.store_of(CORP, "early") is None
    address_book.handle(contact_event("create_party", 1_800_000_190, Id="14", ParentId="4"))
    assert org.store_of(CORP, "early") == {"store_id": "14", "region_id": "4", "branch_id": "2"}


def test_delete_user_records_the_customers_left_behind(client):
    org.full_sync(client, CORP, now=1_800_000_000)
    follow("zhaoliu", "wm_1")
    follow("zhaoliu", "wm_2")
    follow("zhaoliu", "wm_3", status="deleted_by_staff")

    assert address_book.handle(contact_event("delete_user", 1_800_000_300, UserID="zhaoliu")) == "applied"

    row = staff("zhaoliu")
    assert (row.status, row.resigned_at, row.customers_left_behind, row.store_id) == (
        "resigned", 1_800_000_300, 2, "12")
    # an older update delivered late does not bring the member back
    assert address_book.handle(contact_event("update_user", 1_800_000_250, UserID="zhaoliu",
                                             Department="12")) == "stale"
    assert staff("zhaoliu").status == "resigned"


# --- every corp, nightly: a job each ------------------------------------------------------------
@pytest.fixture
def registered(simulated_wecom):
    """Two corps with their secrets, in the simulator the jobs' own clients reach."""
    for corp_id in (CORP, "wworgtest0002"):
        seed(simulated_wecom, corp_id)
        corps.register(CorpCredentials(**{**CREDS.__dict__, "corp_id": corp_id}))
    return simulated_wecom


def test_the_schedule_starts_a_sync_job_per_corp_and_each_runs_alone(registered, monkeypatch):
    from tests.support.functions import LambdaContext, load_function
    from tests.support.jobs import JobsQueue

    jobs = JobsQueue(monkeypatch)
    register("wwbrokencorp")  # a Corp row without a secret: its job fails, the others do not
    event = json.loads((Path(__file__).resolve().parents[2] / "events/org_sync/schedule.json").read_text())

    started = load_function("org_sync").handler(event, LambdaContext())
    again = load_function("org_sync").handler(event, LambdaContext())  # the schedule firing twice
    jobs.run()

    assert started["failed"] == [] and again["jobs"][0]["job_id"] == started["jobs"][0]["job_id"]
    assert {j["job_id"] for j in again["jobs"]} == {j["job_id"] for j in started["jobs"]}
    views = {j["corp_id"]: runner.view(runner.get_job(j["corp_id"], j["job_id"])) for j in started["jobs"]}
    assert sorted(views) == ["wwbrokencorp", CORP, "wworgtest0002"]
    for corp_id in (CORP, "wworgtest0002"):
        view = views[corp_id]
        assert (view["state"], view["total"], view["done"]) == ("done", 1, 1)
        assert (view["result"]["stores"], view["result"]["staff"], view["result"]["unassigned_staff_count"]) == (
            3, 7, 2)
        assert sorted(view["result"]["unassigned_staff"]) == ["boss", "hq_admin"]
    assert (views["wwbrokencorp"]["state"], views["wwbrokencorp"]["error"]) == ("failed", "unknown_corp")
    assert org.store_of("wworgtest0002", "zhangsan")["store_id"] == "10"
    # the second firing found each job queued and sent its plan again: planned once all the same
    assert all(runner.get_job(j["corp_id"], j["job_id"]).chunks == 1 for j in started["jobs"])


def test_a_wecom_answer_without_departments_fails_the_sync_job(registered, monkeypatch):
    from tests.support.jobs import JobsQueue

    jobs = JobsQueue(monkeypatch)
    registered.block_api("department/list", 60011)
    job = runner.start(CORP, org.SYNC_KIND)
    jobs.run()
    view = runner.view(runner.get_job(CORP, job.job_id))
    assert (view["state"], view["failed"], view["result"]["error"]) == ("failed", 1, "wecom_60011")


def test_a_deleted_department_leaves_the_store_list_at_once(client):
    org.full_sync(client, CORP, now=1_800_000_000)
    address_book.handle(contact_event("delete_party", 1_800_000_100, Id="12"))
    assert [s["store_id"] for s in org.list_stores(CORP, limit=10)[0]] == ["10", "11"]
