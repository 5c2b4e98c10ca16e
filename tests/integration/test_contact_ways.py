"""Contact ways through the WeCom simulator: CRUD with config_id kept, state resolution, bulk
creation per store and branch as a job (per-staff failures, rate limits, crashes), retry
safety, and campaigns.

The org is the one of test_org (stores 10 and 11 in region 3, store 12 in region 4, all in
branch 2), synced before each test.
"""
from __future__ import annotations

import time
from typing import Iterator

import pytest
from scrm.domain.contact_ways import bulk, ways
from scrm.domain.contact_ways.campaigns import (
    create_campaign,
    get_campaign,
    list_campaigns,
    update_campaign,
)
from scrm.domain.contact_ways.state import decode_state, resolve_state
from scrm.domain.contact_ways.ways import (
    create_contact_way,
    delete_contact_way,
    get_contact_way,
    list_contact_ways,
    update_contact_way,
)
from scrm.domain.org import tree as org
from scrm.jobs import runner
from scrm.platform.config import settings
from scrm.platform.credentials import CorpCredentials
from scrm.platform.errors import Conflict, Invalid, NotFound
from scrm.store import corps, keys
from scrm.store.models import CouponTemplate
from scrm.wecom.apis.client import WeComClient, forget_caches
from scrm.wecom.apis.errors import WeComError

from infra.local.wecom_sim import WeComSimulator
from tests.integration.test_org import CORP, CREDS, client_for, seed
from tests.support.jobs import Crash, JobsQueue

LONG_USERID = "x" * 64


@pytest.fixture
def sim(aws) -> Iterator[WeComSimulator]:
    forget_caches()
    simulator = WeComSimulator()
    simulator.start(host="127.0.0.1", port=0)
    seed(simulator)
    simulator.add_staff(CORP, LONG_USERID, department=[12])
    yield simulator
    simulator.stop()
    forget_caches()


@pytest.fixture
def client(sim: WeComSimulator) -> WeComClient:
    client = client_for(sim)
    org.full_sync(client, CORP)
    return client


def wecom_ways(sim: WeComSimulator) -> dict[str, dict]:
    return {w["config_id"]: w for w in sim.state(CORP)["corps"][CORP]["contact_ways"]}


def add_calls(sim: WeComSimulator) -> int:
    return sim.stats()["calls"].get("externalcontact/add_contact_way", 0)


def add_outcomes(sim: WeComSimulator) -> dict[str, int]:
    """add_contact_way answers by errcode ("0": made), leaving out a token another test's
    simulator issued (40014, answered by a refresh)."""
    outcomes = dict(sim.stats()["outcomes"].get("externalcontact/add_contact_way", {}))
    outcomes.pop("40014", None)
    return outcomes


# --- create, read, list ---------------------------------------------------------------------
def test_a_staff_code_keeps_its_config_id_and_its_state_resolves(sim, client):
    campaign = create_campaign(CORP, name="Spring")
    way = create_contact_way(client, CORP, owner_kind="staff", users=["zhangsan"], campaign_id=campaign.campaign_id,
                             remark="spring poster", tag_ids=["et_spring"])

    in_wecom = wecom_ways(sim)[way.config_id]
    assert (in_wecom["type"], in_wecom["scene"], in_wecom["user"], in_wecom["state"]) == (
        1, 2, ["zhangsan"], way.state)
    assert way.qr_code == in_wecom["qr_code"]
    assert len(way.state) <= 30
    ref = decode_state(way.state)
    assert (ref.staff, ref.store_id, ref.campaign_id, ref.channel, ref.complete) == (
        "zhangsan", "10", campaign.campaign_id, "qr", True)  # the staff member's store rides along
    assert resolve_state(CORP, way.state).config_id == way.config_id
    stored = get_contact_way(CORP, way.config_id)
    assert (stored.owner_kind, stored.owner_id, stored.store_id, stored.tag_ids) == (
        "staff", "zhangsan", "10", ["et_spring"])


def test_a_store_code_takes_the_stores_staff_and_a_campaign_code_its_users(sim, client):
    store_way = create_contact_way(client, CORP, owner_kind="store", users=[], store_id="11", channel="window")
    assert sorted(wecom_ways(sim)[store_way.config_id]["user"]) == ["multi", "wangwu"]
    assert wecom_ways(sim)[store_way.config_id]["type"] == 2
    assert decode_state(store_way.state).store_id == "11"

    campaign = create_campaign(CORP, name="Double 11", campaign_id="d11")
    campaign_way = create_contact_way(client, CORP, owner_kind="campaign", users=["zhangsan", "zhaoliu"],
                                      campaign_id="d11", channel="flyer")
    ref = decode_state(campaign_way.state)
    assert (ref.kind, ref.campaign_id, ref.channel) == ("campaign", campaign.campaign_id, "flyer")
    assert resolve_state(CORP, campaign_way.state).users == ["zhangsan", "zhaoliu"]


def test_a_64_character_userid_still_resolves_through_the_table(sim, client):
    way = create_contact_way(client, CORP, owner_kind="staff", users=[LONG_USERID])
    ref = decode_state(way.state)
    assert len(way.state) <= 30 and ref.staff is None and not ref.complete and ref.store_id == "12"
    assert resolve_state(CORP, way.state).users == [LONG_USERID]
    assert resolve_state(CORP, "not-one-of-ours") is None
    assert resolve_state(CORP, way.state.replace(way.state[1:6], "zzzzz")) is None


def test_listing_by_owner_with_paging(client):
    for userid in ("zhangsan", "lisi", "wangwu"):
        create_contact_way(client, CORP, owner_kind="staff", users=[userid])
    create_contact_way(client, CORP, owner_kind="store", users=["zhangsan", "lisi"], store_id="10")

    first, cursor = list_contact_ways(CORP, owner_kind="staff", limit=2)
    rest, end = list_contact_ways(CORP, owner_kind="staff", limit=2, cursor=cursor)
    assert end is None and sorted(w.owner_id for w in first + rest) == ["lisi", "wangwu", "zhangsan"]
    assert [w.owner_id for w in list_contact_ways(CORP, owner_kind="staff", owner_id="lisi")[0]] == ["lisi"]
    assert [w.owner_id for w in list_contact_ways(CORP, owner_kind="store")[0]] == ["10"]
    assert len(list_contact_ways(CORP)[0]) == 4
    with pytest.raises(Invalid) as err:
        list_contact_ways(CORP, owner_id="lisi")
    assert err.value.field == "owner_id"


def test_the_same_request_twice_makes_one_wecom_way(sim, client):
    first = create_contact_way(client, CORP, owner_kind="staff", users=["lisi"], channel="counter")
    again = create_contact_way(client, CORP, owner_kind="staff", users=["lisi"], channel="counter")
    assert again.config_id == first.config_id
    assert add_calls(sim) == 1


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(("request_args", "field"), [
    ({"owner_kind": "desk", "users": ["zhangsan"]}, "owner_kind"),
    ({"owner_kind": "staff", "users": ["zhangsan", "lisi"]}, "users"),
    ({"owner_kind": "staff", "users": ["nobody"]}, "users"),
    ({"owner_kind": "staff", "users": []}, "users"),
    ({"owner_kind": "staff", "users": ["zhangsan"], "remark": "r" * 31}, "remark"),
    ({"owner_kind": "staff", "users": ["zhangsan"], "channel": "bad channel"}, "channel"),
    ({"owner_kind": "staff", "users": ["zhangsan"], "tag_ids": "et_1"}, "tag_ids"),
    ({"owner_kind": "staff", "users": ["zhangsan"], "store_id": "3"}, "store_id"),  # a region, not a store
    ({"owner_kind": "store", "users": ["zhangsan"]}, "store_id"),
    ({"owner_kind": "campaign", "users": ["zhangsan"]}, "campaign_id"),
    ({"owner_kind": "campaign", "users": ["zhangsan"], "campaign_id": "nope"}, "campaign_id"),
    ({"owner_kind": "staff", "users": ["zhangsan"], "welcome": {"text": "嗨" * 1400}}, "welcome.text"),
    ({"owner_kind": "staff", "users": ["zhangsan"], "welcome": {"link": {"title": "t", "url": "ftp://x"}}},
     "welcome.link.url"),
])
def test_a_bad_request_is_refused_before_wecom_is_called(sim, client, request_args, field):
    with pytest.raises(Invalid) as err:
        create_contact_way(client, CORP, **request_args)
    assert err.value.field == field
    assert add_calls(sim) == 0


def test_resigned_staff_and_more_than_100_staff_are_refused(sim, client):
    sim.delete_user(CORP, "wangwu", deliver=False)
    org.full_sync(client, CORP)
    with pytest.raises(Invalid, match="wangwu"):
        create_contact_way(client, CORP, owner_kind="store", users=["wangwu", "multi"], store_id="11")
    create_campaign(CORP, name="Crowd", campaign_id="crowd")
    with pytest.raises(Invalid) as err:
        create_contact_way(client, CORP, owner_kind="campaign", users=[f"s{n:03d}" for n in range(101)],
                           campaign_id="crowd")
    assert err.value.field == "users" and "100" in err.value.reason


# --- update and delete ----------------------------------------------------------------------
def test_update_changes_wecom_and_our_row(sim, client):
    way = create_contact_way(client, CORP, owner_kind="store", users=["zhangsan"], store_id="10")

    updated = update_contact_way(client, CORP, way.config_id, remark="front door", users=["zhangsan", "lisi"],
                                 welcome={"text": "欢迎光临"})

    in_wecom = wecom_ways(sim)[way.config_id]
    assert (in_wecom["remark"], in_wecom["user"]) == ("front door", ["zhangsan", "lisi"])
    stored = get_contact_way(CORP, way.config_id)
    assert (stored.remark, stored.users, stored.welcome) == ("front door", ["zhangsan", "lisi"], {"text": "欢迎光临"})
    assert updated.remark == "front door"
    staff_way = create_contact_way(client, CORP, owner_kind="staff", users=["lisi"])
    with pytest.raises(Invalid) as err:
        update_contact_way(client, CORP, staff_way.config_id, users=["zhangsan"])
    assert err.value.field == "users"
    with pytest.raises(Invalid) as err:
        update_contact_way(client, CORP, way.config_id, state="x")
    assert err.value.field == "state"
    with pytest.raises(NotFound):
        update_contact_way(client, CORP, "no-such-config", remark="x")


def test_delete_removes_the_wecom_way_and_keeps_the_state_resolvable(sim, client):
    way = create_contact_way(client, CORP, owner_kind="staff", users=["zhaoliu"])

    delete_contact_way(client, CORP, way.config_id)

    assert way.config_id not in wecom_ways(sim)
    assert get_contact_way(CORP, way.config_id).deleted
    assert resolve_state(CORP, way.state).config_id == way.config_id  # customers who came through it
    assert list_contact_ways(CORP)[0] == []
    assert delete_contact_way(client, CORP, way.config_id).deleted  # again: nothing to do
    # the same request afterwards makes a new way with a new state: states are never reused
    again = create_contact_way(client, CORP, owner_kind="staff", users=["zhaoliu"])
    assert again.config_id != way.config_id and again.state != way.state


def test_a_delete_retried_after_wecom_already_deleted_completes(sim, client):
    way = create_contact_way(client, CORP, owner_kind="staff", users=["zhaoliu"])
    client.del_contact_way(way.config_id)  # the first attempt's WeCom call, then a crash
    delete_contact_way(client, CORP, way.config_id)
    assert get_contact_way(CORP, way.config_id).deleted


# --- retry safety ---------------------------------------------------------------------------
def test_a_crash_between_wecom_and_our_write_makes_one_wecom_way(sim, client, monkeypatch):
    complete = ways._complete

    def crash(*args, **kwargs):
        raise RuntimeError("lambda timed out")

    monkeypatch.setattr(ways, "_complete", crash)
    started = time.time()
    with pytest.raises(RuntimeError):
        create_contact_way(client, CORP, owner_kind="staff", users=["zhangsan"], channel="poster", now=started)
    monkeypatch.setattr(ways, "_complete", complete)
    assert len(wecom_ways(sim)) == 1  # WeCom made it; we hold no config_id

    with pytest.raises(Conflict):  # a retry while the first attempt may still be running
        create_contact_way(client, CORP, owner_kind="staff", users=["zhangsan"], channel="poster",
                           now=started + 10)
    way = create_contact_way(client, CORP, owner_kind="staff", users=["zhangsan"], channel="poster",
                             now=started + ways.LEASE_SECONDS + 1)

    assert add_calls(sim) == 1
    assert list(wecom_ways(sim)) == [way.config_id]
    assert resolve_state(CORP, way.state).config_id == way.config_id


def test_a_crash_before_wecom_was_called_creates_on_retry(sim, client, monkeypatch):
    add = client.add_contact_way

    def crash(**body):
        raise RuntimeError("lambda timed out")

    monkeypatch.setattr(client, "add_contact_way", crash)
    started = time.time()
    with pytest.raises(RuntimeError):
        create_contact_way(client, CORP, owner_kind="staff", users=["lisi"], now=started)
    monkeypatch.setattr(client, "add_contact_way", add)

    way = create_contact_way(client, CORP, owner_kind="staff", users=["lisi"],
                             now=started + ways.LEASE_SECONDS + 1)

    assert list(wecom_ways(sim)) == [way.config_id]


def test_a_wecom_refusal_frees_the_state_for_a_retry(sim, client):
    sim.add_staff(CORP, "inactive", department=[11], status=4)  # not activated: WeCom answers 41054
    org.full_sync(client, CORP)
    with pytest.raises(WeComError) as err:
        create_contact_way(client, CORP, owner_kind="staff", users=["inactive"])
    assert err.value.errcode == 41054
    sim.add_staff(CORP, "inactive", department=[11], status=1)  # activated meanwhile
    way = create_contact_way(client, CORP, owner_kind="staff", users=["inactive"])  # no Conflict: claim freed
    assert list(wecom_ways(sim)) == [way.config_id]


# --- bulk, as a job -------------------------------------------------------------------------
@pytest.fixture
def jobs(sim, client, monkeypatch) -> JobsQueue:
    """The corp registered with its secret and the clients pointed at the simulator, so that
    the job's own clients (made from the corp's credentials) reach it."""
    corps.register(CorpCredentials(**{**CREDS.__dict__, "corp_id": CORP}))
    monkeypatch.setenv("WECOM_API_BASE", f"{sim.base_url}/cgi-bin")
    settings.cache_clear()
    yield JobsQueue(monkeypatch)
    settings.cache_clear()


def bulk_create(jobs: JobsQueue, **request) -> dict:
    job = runner.start(CORP, bulk.KIND, bulk.request(CORP, **request))
    jobs.run()
    return runner.view(runner.get_job(CORP, job.job_id))


def test_bulk_for_a_store_then_its_branch_creates_each_code_once(sim, jobs):
    campaign = create_campaign(CORP, name="Opening")

    store = bulk_create(jobs, store_id="10", campaign_id=campaign.campaign_id)
    assert (store["state"], store["total"], store["done"], store["failed"]) == ("done", 2, 2, 0)
    assert store["result"] == {"created": 2, "existing": 0, "failed": [], "not_attempted": []}
    branch = bulk_create(jobs, branch_id="2", campaign_id=campaign.campaign_id)
    assert branch["result"] == {"created": 4, "existing": 2, "failed": [], "not_attempted": []}  # 11: 2, 12: 2
    again = bulk_create(jobs, branch_id="2", campaign_id=campaign.campaign_id)
    assert again["result"] == {"created": 0, "existing": 6, "failed": [], "not_attempted": []}

    assert len(wecom_ways(sim)) == 6
    ways, _ = list_contact_ways(CORP, owner_kind="staff", limit=100)
    assert sorted(w.owner_id for w in ways) == sorted(["zhangsan", "lisi", "wangwu", "multi", "zhaoliu",
                                                       LONG_USERID])
    assert all(w.campaign_id == campaign.campaign_id and w.channel == "qr" for w in ways)
    # another channel of the same campaign is another set of codes
    assert bulk_create(jobs, store_id="10", campaign_id=campaign.campaign_id, channel="flyer")["result"][
        "created"] == 2


def test_a_branch_of_many_stores_is_planned_page_by_page_in_chunks(sim, client, jobs, monkeypatch):
    monkeypatch.setattr(bulk, "STORES_PER_PAGE", 2)
    monkeypatch.setattr(bulk, "STAFF_PER_CHUNK", 1)
    for store in (13, 14, 15):
        sim.add_department(CORP, store, f"store {store}", parentid=4)
        sim.add_staff(CORP, f"clerk{store}", department=[store])
    org.full_sync(client, CORP)

    report = bulk_create(jobs, branch_id="2")

    assert (report["total"], report["result"]["created"]) == (9, 9)  # six stores, nine staff, a chunk each
    assert len(wecom_ways(sim)) == 9


def test_bulk_goes_on_past_one_staff_members_wecom_error(sim, client, jobs):
    sim.add_staff(CORP, "inactive", department=[11], status=4)
    org.full_sync(client, CORP)

    report = bulk_create(jobs, store_id="11")

    assert report["result"]["failed"] == [{"userid": "inactive", "error": "wecom_41054"}]
    assert report["result"]["created"] == 2
    assert (report["state"], report["done"], report["failed"]) == ("done", 2, 1)


def test_a_rate_limit_pauses_the_job_until_the_block_ends(sim, jobs):
    sim.block_api("externalcontact/add_contact_way", 45009)
    job = runner.start(CORP, bulk.KIND, bulk.request(CORP, store_id="10"))
    waiting = lambda: any(c.state == "waiting" for c in runner.chunks_of(runner.get_job(CORP, job.job_id)))  # noqa: E731
    jobs.run(until=waiting)
    assert add_outcomes(sim) == {"45009": 1}  # the first refusal blocks the API for every worker
    [chunk] = runner.chunks_of(runner.get_job(CORP, job.job_id))
    assert chunk.not_before >= jobs.now + 60  # the minute's window

    sim.block_api("externalcontact/add_contact_way", None)
    jobs.run()

    report = runner.view(runner.get_job(CORP, job.job_id))
    assert report["result"] == {"created": 2, "existing": 0, "failed": [], "not_attempted": []}
    assert add_outcomes(sim) == {"45009": 1, "0": 2}  # refused once, then each code made once


def test_a_crash_mid_chunk_after_wecom_made_the_way_makes_no_second_one(sim, jobs, monkeypatch):
    complete = ways._complete
    crashed = []

    def crash_once(*args, **kwargs):
        if not crashed:
            crashed.append(True)
            raise Crash  # the Lambda dies: WeCom made the way, we hold no config_id yet
        return complete(*args, **kwargs)

    monkeypatch.setattr(ways, "_complete", crash_once)

    report = bulk_create(jobs, store_id="10")

    assert report["result"] == {"created": 2, "existing": 0, "failed": [], "not_attempted": []}
    assert add_outcomes(sim) == {"0": 2} and len(wecom_ways(sim)) == 2  # the resumed chunk found its way


def test_a_revoked_permission_fails_the_job_and_lists_who_was_not_attempted(sim, jobs, monkeypatch):
    monkeypatch.setattr(bulk, "STAFF_PER_CHUNK", 1)
    sim.block_api("externalcontact/add_contact_way", 48002)

    report = bulk_create(jobs, branch_id="2")

    assert (report["state"], report["error"]) == ("failed", "wecom_48002")
    failed, not_attempted = report["result"]["failed"], report["result"]["not_attempted"]
    assert [f["error"] for f in failed] == ["wecom_48002"] and len(failed) + len(not_attempted) == 6
    assert add_outcomes(sim) == {"48002": 1}


def test_bulk_needs_exactly_one_of_store_and_branch(client):
    for args in ({}, {"store_id": "10", "branch_id": "2"}):
        with pytest.raises(Invalid):
            bulk.request(CORP, **args)
    with pytest.raises(Invalid) as err:
        bulk.request(CORP, branch_id="3")  # a region
    assert err.value.field == "branch_id"
    with pytest.raises(Invalid) as err:
        bulk.request(CORP, store_id="10", campaign_id="nosuch")
    assert err.value.field == "campaign_id"


# --- campaigns ------------------------------------------------------------------------------
def test_campaign_create_read_list_update(aws):
    CouponTemplate(*keys.coupon_template(CORP, "tpl1"), template_id="tpl1", name="10 off", kind="amount",
                   amount=1000, total_stock=100, created_at=0).save()
    welcome = {"text": "欢迎!", "miniprogram": {"title": "领券", "appid": "wx123", "page": "/coupon/index.html",
                                              "pic_media_id": "media1"}}
    generated = create_campaign(CORP, name="Spring", welcome=welcome, coupon_template_id="tpl1",
                                starts_at=1_800_000_000, ends_at=1_802_592_000)
    assert len(generated.campaign_id) == 4
    named = create_campaign(CORP, name="Autumn", campaign_id="autumn")
    assert get_campaign(CORP, generated.campaign_id).welcome == welcome

    first, cursor = list_campaigns(CORP, limit=1)
    rest, end = list_campaigns(CORP, limit=1, cursor=cursor)
    assert end is None and {c.campaign_id for c in first + rest} == {generated.campaign_id, "autumn"}

    update_campaign(CORP, "autumn", name="Autumn sale", welcome={"link": {"title": "Sale", "url": "https://x.cn/s"}},
                    ends_at=1_900_000_000)
    stored = get_campaign(CORP, "autumn")
    assert (stored.name, stored.welcome["link"]["url"], stored.ends_at) == ("Autumn sale", "https://x.cn/s",
                                                                            1_900_000_000)
    with pytest.raises(Conflict):
        create_campaign(CORP, name="Again", campaign_id="autumn")
    with pytest.raises(NotFound):
        get_campaign(CORP, "nope")
    with pytest.raises(NotFound):
        update_campaign(CORP, "nope", name="x")
    assert named.created_at > 0


@pytest.mark.parametrize(("args", "field"), [
    ({"name": ""}, "name"),
    ({"name": "x", "campaign_id": "has space"}, "campaign_id"),
    ({"name": "x", "coupon_template_id": "missing"}, "coupon_template_id"),
    ({"name": "x", "starts_at": 2, "ends_at": 1}, "ends_at"),
    ({"name": "x", "welcome": {}}, "welcome"),
    ({"name": "x", "welcome": {"text": "a" * 4001}}, "welcome.text"),
    ({"name": "x", "welcome": {"text": "hi", "video": {}}}, "welcome"),
    ({"name": "x", "welcome": {"link": {"title": "标" * 43, "url": "https://x.cn"}}}, "welcome.link.title"),
    ({"name": "x", "welcome": {"link": {"title": "t"}}}, "welcome.link.url"),
    ({"name": "x", "welcome": {"miniprogram": {"title": "标" * 22, "appid": "wx1", "page": "/p",
                                               "pic_media_id": "m"}}}, "welcome.miniprogram.title"),
    ({"name": "x", "welcome": {"miniprogram": {"title": "t", "appid": "wx1", "page": "/p"}}},
     "welcome.miniprogram.pic_media_id"),
    ({"name": "x", "welcome": {"link": {"title": "t", "url": "https://x.cn"},
                               "miniprogram": {"title": "t", "appid": "wx1", "page": "/p", "pic_media_id": "m"}}},
     "welcome"),
])
def test_a_bad_campaign_is_refused_naming_the_field(aws, args, field):
    with pytest.raises(Invalid) as err:
        create_campaign(CORP, **args)
    assert err.value.field == field


def test_a_bad_campaign_update_is_refused(aws):
    create_campaign(CORP, name="Spring", campaign_id="spring", starts_at=100)
    with pytest.raises(Invalid) as err:
        update_campaign(CORP, "spring", ends_at=50)  # before the stored start
    assert err.value.field == "ends_at"
    with pytest.raises(Invalid) as err:
        update_campaign(CORP, "spring", created_at=1)
    assert err.value.field == "created_at"
