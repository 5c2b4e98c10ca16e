"""Nightly reconciliation: lost callbacks (the simulator's deliver=False) are found through
batch/get_by_user, repaired, written to the timeline and reported; a second run finds
nothing; rate limits, per-staff failures and deadlines end a run early but tidily.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from scrm.domain.customers import reconcile as reconciliation
from scrm.store import keys
from scrm.store.models import Customer, Follow, TimelineEntry
from scrm.wecom.apis.errors import RateLimited, WeComError

from tests.integration.test_customers import CORP, WeCom, channel_tag, process, wecom  # noqa: F401
from tests.support.functions import LambdaContext, load_function


def follow(ext: str, userid: str) -> Follow:
    return Follow.get(*keys.follow(CORP, ext, userid))


def repairs(ext: str) -> list[str]:
    return [e.what for e in TimelineEntry.query(keys.customer_pk(CORP, ext),
                                                TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX))
            if e.what.startswith("reconciled:")]


def reconcile(wecom: WeCom, **kwargs: object) -> dict:
    wecom.sim.advance(60)  # the night comes after the day's events
    return reconciliation.reconcile(wecom.client, CORP, now=wecom.sim.now(), **kwargs)


@dataclass
class Day:
    kept: str
    lost_add: str
    lost_delete: str
    lost_edit: str
    readded: str


def a_day_with_lost_callbacks(wecom: WeCom) -> Day:
    """Five customers; callbacks of four of them partly lost."""
    vip = wecom.client.add_corp_tag(group_name="Level", tag=[{"name": "VIP"}])["tag_group"]["tag"][0]["id"]
    wecom.way("poster", channel="poster", store_id="S1", campaign_id="spring")
    ids = []
    for _ in range(4):
        ext, add = wecom.add("zhangsan", state="poster")
        process(add)
        ids.append(ext)
    kept, lost_delete, lost_edit, readded = ids
    lost_add, event = wecom.add("lisi", state="poster", name="Lost Add", unionid="oLost", deliver=False)
    assert event is None
    assert wecom.act("staff_deletes_customer", "zhangsan", lost_delete, deliver=False) is None
    assert wecom.act("edit_customer", "zhangsan", lost_edit, remark="moved to Shanghai", add_tag=[vip],
                     deliver=False) is None
    process(wecom.act("staff_deletes_customer", "zhangsan", readded))
    wecom.add("zhangsan", state="poster", external_userid=readded, deliver=False)
    return Day(kept, lost_add, lost_delete, lost_edit, readded)


def test_reconcile_repairs_exactly_what_the_lost_callbacks_left_wrong(wecom):
    day = a_day_with_lost_callbacks(wecom)

    report = reconcile(wecom)

    assert (report["checked"], report["created"], report["marked_deleted"], report["updated"]) == (4, 2, 1, 1)
    assert report["by_kind"] == {"customer_created": 1, "follow_added": 1, "follow_readded": 1,
                                 "follow_deleted": 1, "remark": 1, "tags": 1}
    assert report["customers_created"] == 1 and not report["partial"] and report["errors"] == []
    assert {(s["what"], s["external_userid"]) for s in report["samples"]} >= {
        ("follow_added", day.lost_add), ("follow_deleted", day.lost_delete), ("remark", day.lost_edit)}

    added = follow(day.lost_add, "lisi")
    assert (added.status, added.state, added.add_way) == ("active", "poster", 1)
    lost = Customer.get(*keys.customer(CORP, day.lost_add))
    assert (lost.name, lost.unionid, lost.first_touch.channel, lost.first_touch.store_id) == (
        "Lost Add", "oLost", "poster", "S1")
    deleted = follow(day.lost_delete, "zhangsan")
    assert (deleted.status, deleted.delete_source) == ("deleted_by_staff", "reconcile")
    edited = follow(day.lost_edit, "zhangsan")
    assert edited.remark == "moved to Shanghai" and len(edited.tag_ids) == 1
    assert follow(day.readded, "zhangsan").status == "active"
    assert follow(day.kept, "zhangsan").status == "active"

    assert repairs(day.lost_add) == ["reconciled:customer_created", "reconciled:follow_added"]
    assert repairs(day.lost_delete) == ["reconciled:follow_deleted"]
    assert sorted(repairs(day.lost_edit)) == ["reconciled:remark", "reconciled:tags"]
    assert repairs(day.readded) == ["reconciled:follow_readded"]
    assert repairs(day.kept) == []


def test_a_second_run_repairs_nothing(wecom):
    a_day_with_lost_callbacks(wecom)
    reconcile(wecom)

    again = reconcile(wecom)

    assert (again["checked"], again["created"], again["marked_deleted"], again["updated"]) == (4, 0, 0, 0)
    assert again["by_kind"] == {} and again["samples"] == []


def test_a_lost_add_through_a_way_with_channel_tags_gets_them(wecom):
    tag = channel_tag(wecom)
    wecom.way("poster", channel="poster", tag_ids=[tag])
    ext, _ = wecom.add("zhangsan", state="poster", deliver=False)

    assert reconcile(wecom)["created"] == 1

    [listed] = wecom.sim.state(CORP)["corps"][CORP]["follows"]
    assert listed["tag_ids"] == [tag]
    assert follow(ext, "zhangsan").tag_ids == {tag}
    assert reconcile(wecom)["by_kind"] == {}  # the tags WeCom now lists match ours


def test_half_added_and_customer_deleted_relations_are_left_alone(wecom):
    ext, add = wecom.add("zhangsan")
    process(add)
    process(wecom.act("delete_follow", "zhangsan", ext))  # one-way: still listed
    half = Follow(*keys.follow(CORP, "wmHalf", "lisi"), external_userid="wmHalf", userid="lisi", status="half",
                  version=int(wecom.sim.now()) * 10 + 1, GSI1PK=keys.follows_of_staff(CORP, "lisi"),
                  GSI1SK=f"{keys.FOLLOW_PREFIX}wmHalf")
    half.save()  # WeCom lists no half-added relation

    report = reconcile(wecom)

    assert report["by_kind"] == {}
    assert follow(ext, "zhangsan").status == "deleted_by_customer"
    assert follow("wmHalf", "lisi").status == "half"


def test_many_staff_and_pages(wecom, monkeypatch):
    monkeypatch.setattr(reconciliation, "STAFF_PER_CALL", 2)
    monkeypatch.setattr(reconciliation, "PAGE_LIMIT", 2)
    for n in range(5):
        wecom.sim.add_staff(CORP, f"s{n}")
    lost = [wecom.add(f"s{n % 5}", deliver=False)[0] for n in range(7)]

    report = reconcile(wecom)

    assert (report["staff"], report["checked"], report["created"]) == (7, 7, 7)
    assert all(follow(ext, f"s{n % 5}").status == "active" for n, ext in enumerate(lost))


def test_a_rate_limit_mid_run_stops_and_reports_partial(wecom, monkeypatch):
    monkeypatch.setattr(reconciliation, "PAGE_LIMIT", 2)
    for _ in range(5):
        wecom.add("zhangsan", deliver=False)
    original = wecom.client.batch_get_by_user

    def first_page_then_45009(*args, **kwargs):
        page = original(*args, **kwargs)
        wecom.sim.block_api("externalcontact/batch/get_by_user", 45009)
        return page

    monkeypatch.setattr(wecom.client, "batch_get_by_user", first_page_then_45009)

    report = reconcile(wecom)

    assert (report["partial"], report["stopped"], report["checked"], report["created"]) == (
        True, "rate_limited", 2, 2)
    assert report["blocked_until"] > time.time()


def test_one_staff_members_failure_does_not_stop_the_others(wecom, monkeypatch):
    lost = wecom.add("lisi", deliver=False)[0]
    kept, add = wecom.add("zhangsan")
    process(add)
    original = wecom.client.batch_get_by_user

    def zhangsan_fails(userids, cursor="", limit=100):
        if "zhangsan" in userids:
            raise WeComError(60011, "outside the app's visible range", "externalcontact/batch/get_by_user")
        return original(userids, cursor, limit)

    monkeypatch.setattr(wecom.client, "batch_get_by_user", zhangsan_fails)
    wecom.act("staff_deletes_customer", "zhangsan", kept, deliver=False)

    report = reconcile(wecom)

    assert report["errors"] == [{"userid": "zhangsan", "errcode": 60011, "api": "externalcontact/batch/get_by_user"}]
    assert report["partial"] and report["created"] == 1
    assert follow(lost, "lisi").status == "active"
    assert follow(kept, "zhangsan").status == "active"  # not listed because its call failed: not deleted


def test_a_corp_wide_refusal_stops_after_max_errors(wecom, monkeypatch):
    monkeypatch.setattr(reconciliation, "MAX_ERRORS", 2)
    for n in range(4):
        wecom.sim.add_staff(CORP, f"s{n}")
    wecom.sim.block_api("externalcontact/batch/get_by_user", 48002)  # the app lost 客户联系 rights

    report = reconcile(wecom)

    assert (report["stopped"], len(report["errors"])) == ("errors", 2)
    assert {e["errcode"] for e in report["errors"]} == {48002}


def test_a_deadline_stops_at_a_group_boundary_and_the_next_call_resumes(wecom, monkeypatch):
    monkeypatch.setattr(reconciliation, "STAFF_PER_CALL", 1)
    lost = {userid: wecom.add(userid, deliver=False)[0] for userid in ("lisi", "zhangsan")}

    stopped = reconcile(wecom, deadline=time.time() - 1)
    assert (stopped["stopped"], stopped["resume_from"], stopped["checked"]) == ("deadline", "lisi", 0)

    resumed = reconcile(wecom, resume_from="zhangsan")
    assert (resumed["created"], resumed["stopped"]) == (1, None)
    assert follow(lost["zhangsan"], "zhangsan").status == "active"
    with pytest.raises(Follow.DoesNotExist):
        follow(lost["lisi"], "lisi")


def test_nightly_walks_every_registered_corp_and_hands_over_when_out_of_time(wecom):
    lost, _ = wecom.add("zhangsan", deliver=False)
    handed: list[dict] = []

    out_of_time = reconciliation.nightly(None, deadline=time.time() - 1, continue_later=handed.append)
    assert handed == [{"corps": [CORP], "resume_from": None, "hop": 1}]
    assert out_of_time["corps"] == [{"continued": 1, "resume_from": None}]

    report = reconciliation.nightly(handed[0], deadline=time.time() + 60, continue_later=handed.append)
    [corp] = report["corps"]
    assert (report["hop"], corp["corp_id"], corp["created"], corp["tags"]["groups"]) == (1, CORP, 1, 0)
    assert follow(lost, "zhangsan").status == "active"


def test_the_scheduled_function_runs_with_its_sample_event(wecom):
    import json
    from pathlib import Path

    lost, _ = wecom.add("zhangsan", deliver=False)
    event = json.loads((Path(__file__).resolve().parents[2] / "events/reconcile/schedule.json").read_text())

    class NightContext(LambdaContext):
        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    result = load_function("reconcile").handler(event, NightContext())

    [corp] = result["corps"]
    assert (corp["corp_id"], corp["created"], corp["partial"]) == (CORP, 1, False)
    assert follow(lost, "zhangsan").status == "active"


def test_rate_limited_before_the_staff_list_reports_partial(wecom):
    wecom.sim.block_api("externalcontact/get_follow_user_list", 45009)

    report = reconcile(wecom)

    assert (report["stopped"], report["partial"], report["checked"]) == ("rate_limited", True, 0)
    with pytest.raises(RateLimited):
        wecom.client.get_follow_user_list()  # the block is shared: nobody calls before it ends
