"""Bulk creation of staff codes (一人一码) for a store or a whole branch, as a job.

`request` checks what the operator asked for (a 400 names the field) and gives the job's
params; the job's plan walks the stores page by page and makes one chunk per
STAFF_PER_CHUNK active staff members; each chunk creates the codes its staff lack for the
campaign and channel (scrm.domain.contact_ways.ways.create_contact_way, which claims each
state before calling WeCom, so a chunk run twice creates nothing twice). The result is
the report the operator reads: created, existing, failed (userid and reason) and
not_attempted (when the job stopped early: a corp-wide refusal such as a revoked permission).

A code counts as created when this job made it (the way keeps the job's id), so a chunk
run again after a crash or a rate-limit wait reports the codes its first run made as
created, not as existing. A rate limit no longer ends the run: the chunk waits for the
block to end.
"""
from __future__ import annotations

from typing import Any

from scrm.domain.contact_ways import ways
from scrm.domain.contact_ways.campaigns import check_campaign
from scrm.domain.contact_ways.state import DEFAULT_CHANNEL, STORE_ID
from scrm.domain.org import tree as org
from scrm.jobs.kinds import Chunk, ChunkReport, Context, Done, Kind, Page, Wait
from scrm.platform.errors import Invalid, ScrmError
from scrm.store import keys
from scrm.store.models import ContactWay, Department
from scrm.wecom.apis.errors import RateLimited, TransientError, WeComError, corp_wide

STAFF_PER_CHUNK = 10
STORES_PER_PAGE = 20
LIST_CAP = 1000  # failed / not_attempted entries kept in the result (the job's counts are complete)
MEMBER_SECONDS = 20  # what one member may take (add_contact_way with the client's retries)
CONFLICT_WAITS = 3  # runs that wait for another attempt's claim before reporting the member failed


def request(corp_id: str, *, store_id: str | None = None, branch_id: str | None = None,
            campaign_id: str | None = None, channel: str = DEFAULT_CHANNEL) -> dict:
    """The job's params, once the request is known to make sense."""
    if (store_id is None) == (branch_id is None):
        raise Invalid("give either a store_id or a branch_id", "store_id")
    channel = ways.check_channel(channel)
    if campaign_id is not None:
        check_campaign(corp_id, campaign_id)
    if store_id is not None:
        ways.check_store(corp_id, store_id)
    else:
        placement = org.department_placement(corp_id, int(branch_id)) if STORE_ID.fullmatch(str(branch_id)) else None
        if placement is None or placement.level != "branch":
            raise Invalid("not a branch", "branch_id")
    return {"store_id": store_id, "branch_id": branch_id, "campaign_id": campaign_id, "channel": channel}


def plan(ctx: Context, cursor: Any) -> Page:
    """One store's staff per page for a store, STORES_PER_PAGE stores per page for a branch
    (the cursor is the last store's id)."""
    params = ctx.params
    if params.get("store_id"):
        stores, cursor = [params["store_id"]], None
    else:
        after = keys.store_sort(cursor) if cursor else None
        rows = Department.gsi1.query(keys.stores(ctx.corp_id),
                                     Department.GSI1SK > after if after else None,
                                     filter_condition=Department.branch_id == params["branch_id"],
                                     limit=STORES_PER_PAGE)
        stores = [str(row.dept_id) for row in rows]
        cursor = stores[-1] if len(stores) == STORES_PER_PAGE else None
    chunks = []
    for store_id in stores:
        staff = [member.userid for member in ways.store_staff(ctx.corp_id, store_id)]
        chunks += [Chunk({"store_id": store_id, "users": staff[i:i + STAFF_PER_CHUNK]},
                         size=len(staff[i:i + STAFF_PER_CHUNK])) for i in range(0, len(staff), STAFF_PER_CHUNK)]
    return Page(chunks, cursor)


def run(ctx: Context, payload: dict) -> Done | Wait:
    params, client = ctx.params, ctx.client()
    report: dict[str, Any] = {"created": 0, "existing": 0, "failed": []}
    for userid in payload["users"]:
        if ctx.time_left() < MEMBER_SECONDS:
            return Wait(0, reason="out_of_time")  # again from the start: codes made so far count as created
        way = _staff_way(ctx.corp_id, userid, params.get("campaign_id"), params["channel"])
        if way is None:
            try:
                way = ways.create_contact_way(client, ctx.corp_id, owner_kind="staff", users=[userid],
                                              store_id=payload["store_id"], campaign_id=params.get("campaign_id"),
                                              channel=params["channel"], now=ctx.clock(), made_by=ctx.job_id)
            except (RateLimited, TransientError):
                raise  # the chunk waits and runs again
            except WeComError as err:
                if corp_wide(err):
                    raise  # the job stops: every other member would fail alike
                report["failed"].append({"userid": userid, "error": f"wecom_{err.errcode}"})
                continue
            except ways.BeingCreated as err:
                if ctx.attempt <= CONFLICT_WAITS:
                    # an earlier run of this chunk died mid-create: its claim's lease runs out first
                    return Wait(ways.LEASE_SECONDS, reason="being_created")
                report["failed"].append({"userid": userid, "error": f"{err.field}: {err.reason}"})
                continue
            except ScrmError as err:
                report["failed"].append({"userid": userid, "error": f"{err.field}: {err.reason}"})
                continue
        report["created" if way.made_by == ctx.job_id else "existing"] += 1
    return Done(result=report, failed=len(report["failed"]))


def _staff_way(corp_id: str, userid: str, campaign_id: str | None, channel: str) -> ContactWay | None:
    """The staff member's live code for this campaign and channel, if there is one."""
    campaign = ContactWay.campaign_id == campaign_id if campaign_id else ContactWay.campaign_id.does_not_exist()
    found = ContactWay.gsi1.query(keys.contact_ways(corp_id),
                                  ContactWay.GSI1SK.startswith(keys.contact_way_owner("staff", userid)),
                                  filter_condition=campaign & (ContactWay.channel == channel), limit=1, page_size=50)
    return next(iter(found), None)


def finish(ctx: Context, reports: list[ChunkReport]) -> dict:
    result: dict[str, Any] = {"created": 0, "existing": 0, "failed": [], "not_attempted": []}
    for report in reports:
        if report.state == "done":
            result["created"] += report.result["created"]
            result["existing"] += report.result["existing"]
            result["failed"] += report.result["failed"]
        elif report.state == "failed":  # the chunk as a whole: each of its staff, with its reason
            result["failed"] += [{"userid": u, "error": report.error} for u in report.payload["users"]]
        else:
            result["not_attempted"] += report.payload["users"]
    result["failed"] = result["failed"][:LIST_CAP]
    result["not_attempted"] = result["not_attempted"][:LIST_CAP]
    return result


KIND = Kind("contact-ways-bulk", plan=plan, run=run, finish=finish, chunk_seconds=180, window=20)
