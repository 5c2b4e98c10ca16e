"""Nightly reconciliation: lost callbacks (the simulator's deliver=False) are found through
batch/get_by_user, repaired, written to the timeline and reported; a second run finds
nothing; rate limits, per-staff failures and deadlines end a run early but tidily. At night
it runs as a job per corp: staff groups as chunks, continued where they stopped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from scrm.domain.customers import reconcile as reconciliation
from scrm.jobs import runner
from scrm.store import keys
from scrm.store.models import Customer, Follow, TimelineEntry
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import RateLimited, WeComError

from tests.integration.test_customers import CORP, WeCom, channel_tag, process, wecom  # noqa: F401
from tests.support.functions import LambdaContext, load_function
from tests.support.jobs import JobsQueue


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


def test_many_staff_failing_alike_stop_the_run_after_max_errors(wecom, monkeypatch):
    monkeypatch.setattr(reconciliation, "MAX_ERRORS", 2)
    for n in range(4):
        wecom.sim.add_staff(CORP, f"s{n}")
    wecom.sim.block_api("externalcontact/batch/get_by_user", 60011)  # outside the app's visible range

    report = reconcile(wecom)

    assert (report["stopped"], len(report["errors"])) == ("errors", 2)
    assert {e["errcode"] for e in report["errors"]} == {60011}


def test_a_corp_wide_refusal_is_raised_at_once(wecom):
    wecom.sim.block_api("externalcontact/batch/get_by_user", 48002)  # the app lost 客户联系 rights
    with pytest.raises(WeComError) as raised:
        reconcile(wecom)
    assert raised.value.errcode == 48002
    assert wecom.sim.stats()["outcomes"]["externalcontact/batch/get_by_user"] == {"48002": 1}


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


# --- the nightly job ---------------------------------------------------------------------------
@pytest.fixture
def jobs(wecom, monkeypatch) -> JobsQueue:
    """Jobs on a clock a minute past the simulator's (the night comes after the day's events)."""
    queue = JobsQueue(monkeypatch)
    queue.advance(max(0.0, wecom.sim.now() + 60 - queue.now))
    return queue


def nightly(jobs: JobsQueue, event: dict | None = None) -> dict:
    started = load_function("reconcile").handler(event or SCHEDULE, LambdaContext())
    jobs.run()
    [job] = started["jobs"]
    return runner.view(runner.get_job(CORP, job["job_id"]))


SCHEDULE = json.loads((Path(__file__).resolve().parents[2] / "events/reconcile/schedule.json").read_text())


def test_the_schedule_starts_a_job_per_corp_whose_chunks_are_staff_groups(wecom, jobs, monkeypatch):
    monkeypatch.setattr(reconciliation, "STAFF_PER_CHUNK", 2)
    for n in range(5):
        wecom.sim.add_staff(CORP, f"s{n}")
    lost = [wecom.add(f"s{n}", deliver=False)[0] for n in range(5)]
    jobs.advance(max(0.0, wecom.sim.now() + 60 - jobs.now))

    job = nightly(jobs)

    assert job["job_id"] == "reconcile-2026-11-26"  # the schedule's day, China time
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", 7, 7, 0)  # 7 staff
    result = job["result"]
    assert (result["corp_id"], result["staff"], result["checked"], result["created"]) == (CORP, 7, 5, 5)
    assert result["by_kind"] == {"customer_created": 5, "follow_added": 5} and not result["partial"]
    assert result["tags"]["groups"] == 0
    assert all(follow(ext, f"s{n}").status == "active" for n, ext in enumerate(lost))
    chunks = list(runner.chunks_of(runner.get_job(CORP, job["job_id"])))
    assert [c.payload.get("staff") for c in chunks] == [None, ["lisi", "s0"], ["s1", "s2"], ["s3", "s4"],
                                                        ["zhangsan"]]


def test_the_schedule_firing_twice_starts_one_job(wecom, jobs):
    first = load_function("reconcile").handler(SCHEDULE, LambdaContext())
    again = load_function("reconcile").handler(SCHEDULE, LambdaContext())
    assert first["jobs"][0]["job_id"] == again["jobs"][0]["job_id"]
    jobs.run()
    plans = [m for m in jobs.sent if m["step"] == "plan"]
    assert len(plans) == 2 and runner.get_job(CORP, first["jobs"][0]["job_id"]).chunks == 2  # planned once
    late = load_function("reconcile").handler(SCHEDULE, LambdaContext())
    assert late["jobs"][0]["state"] == "done" and jobs.pending == 0  # nothing started again


def test_a_chunk_out_of_time_goes_on_from_the_staff_group_it_stopped_at(wecom, jobs, monkeypatch):
    monkeypatch.setattr(reconciliation, "STAFF_PER_CALL", 1)
    lost = {userid: wecom.add(userid, deliver=False)[0] for userid in ("lisi", "zhangsan")}
    jobs.advance(max(0.0, wecom.sim.now() + 60 - jobs.now))
    group = reconciliation._reconcile_group
    calls: list[list[str]] = []

    def out_of_time_at_the_second_group(client, corp_id, staff, *args):
        calls.append(staff)
        if len(calls) == 2:
            raise reconciliation._OutOfTime
        return group(client, corp_id, staff, *args)

    monkeypatch.setattr(reconciliation, "_reconcile_group", out_of_time_at_the_second_group)

    job = nightly(jobs)

    assert calls == [["lisi"], ["zhangsan"], ["zhangsan"]]  # lisi's group is not read again
    assert (job["state"], job["result"]["created"], job["result"]["checked"]) == ("done", 2, 2)
    assert all(follow(ext, userid).status == "active" for userid, ext in lost.items())


def test_a_rate_limit_mid_chunk_waits_for_the_block_and_counts_each_repair_once(wecom, jobs, monkeypatch):
    monkeypatch.setattr(reconciliation, "PAGE_LIMIT", 2)
    monkeypatch.setattr(reconciliation, "STAFF_PER_CALL", 1)
    for _ in range(3):
        wecom.add("zhangsan", deliver=False)
    wecom.add("lisi", deliver=False)
    jobs.advance(max(0.0, wecom.sim.now() + 60 - jobs.now))
    original = WeComClient.batch_get_by_user
    blocked = []

    def zhangsan_blocked_once(self, userids, cursor="", limit=100):
        if userids == ["zhangsan"] and not blocked:
            blocked.append(True)
            wecom.sim.block_api("externalcontact/batch/get_by_user", 45009)
        try:
            return original(self, userids, cursor, limit)
        finally:
            wecom.sim.block_api("externalcontact/batch/get_by_user", None)

    monkeypatch.setattr(WeComClient, "batch_get_by_user", zhangsan_blocked_once)
    night = jobs.now

    job = nightly(jobs)

    assert (job["state"], job["result"]["created"], job["result"]["partial"]) == ("done", 4, False)
    assert job["result"]["by_kind"] == {"customer_created": 4, "follow_added": 4}
    assert jobs.now - night >= 60  # it waited out the minute's block


def test_a_corp_wide_refusal_fails_the_job_after_one_call(wecom, jobs, monkeypatch):
    monkeypatch.setattr(reconciliation, "STAFF_PER_CHUNK", 1)
    for n in range(4):
        wecom.sim.add_staff(CORP, f"s{n}")
    wecom.sim.block_api("externalcontact/batch/get_by_user", 48002)  # the app lost 客户联系 rights

    job = nightly(jobs)

    assert (job["state"], job["error"]) == ("failed", "wecom_48002")
    assert wecom.sim.stats()["outcomes"]["externalcontact/batch/get_by_user"] == {"48002": 1}
    assert job["result"]["partial"] and len(job["result"]["errors"]) == 6


def test_rate_limited_before_the_staff_list_reports_partial(wecom):
    wecom.sim.block_api("externalcontact/get_follow_user_list", 45009)

    report = reconcile(wecom)

    assert (report["stopped"], report["partial"], report["checked"]) == ("rate_limited", True, 0)
    with pytest.raises(RateLimited):
        wecom.client.get_follow_user_list()  # the block is shared: nobody calls before it ends
