"""The nightly reconciliation: every follow relation WeCom lists compared with ours, and the
difference repaired (lost callbacks, drifted remarks and tags, missing profiles).

It runs as a job per corp (KIND; the schedule starts one a day): the plan lists the staff
with 客户联系 and makes a chunk of the corp tag sync and one chunk per STAFF_PER_CHUNK staff;
a chunk that runs out of time or meets a rate limit goes on later from the staff group it
stopped at (`resume_from`), carrying what it repaired so far."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from scrm.domain.customers.profile import (
    LIVE,
    PROFILE_FIELDS,
    FollowFacts,
    attribute,
    identity_actions,
    note,
    store_profile,
    touch_of,
)
from scrm.domain.tags.corp_tags import apply_channel_tags, sync_corp_tags
from scrm.jobs.kinds import Chunk, ChunkReport, Context, Done, Kind, Page, Wait
from scrm.platform.observability import log
from scrm.store import keys
from scrm.store.models import Customer, Follow, update_if
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import RateLimited, WeComError, corp_wide

# Staff per batch/get_by_user call (WeCom allows 100). Deletions can only be detected once a
# call's every page is read, and a run cut short resumes at a call boundary, so a smaller
# group wastes less on a resume while adding at most one short page per group.
STAFF_PER_CALL = 25
STAFF_PER_CHUNK = 100  # a chunk's staff: four calls' worth, so a chunk cut short resumes part-way
PAGE_LIMIT = 100
SAMPLE_LIMIT = 20
# Per-staff failures before a run gives up on the corp: a corp-wide refusal (48002, say)
# would otherwise cost one failing call per staff member every night.
MAX_ERRORS = 50
COUNTS = ("checked", "created", "marked_deleted", "updated", "customers_created", "profiles_refreshed")


class _OutOfTime(Exception):
    pass


class _TooManyErrors(Exception):
    pass


@dataclass
class _Tally:
    corp_id: str
    checked: int = 0
    created: int = 0
    marked_deleted: int = 0
    updated: int = 0
    customers_created: int = 0
    profiles_refreshed: int = 0
    by_kind: Counter = field(default_factory=Counter)
    samples: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    stopped: str | None = None
    resume_from: str | None = None
    blocked_until: float | None = None

    def repair(self, corp_id: str, external_userid: str, userid: str | None, what: str, at: int,
               detail: dict | None = None) -> None:
        self.by_kind[what] += 1
        if len(self.samples) < SAMPLE_LIMIT:
            self.samples.append({"what": what, "userid": userid, "external_userid": external_userid})
        note(corp_id, external_userid, at, f"reconcile{keys.SEP}{userid or ''}{keys.SEP}{what}",
              f"reconciled:{what}", userid, detail)

    def report(self, staff: int) -> dict:
        return {"corp_id": self.corp_id, "staff": staff, "checked": self.checked, "created": self.created,
                "marked_deleted": self.marked_deleted, "updated": self.updated,
                "customers_created": self.customers_created, "profiles_refreshed": self.profiles_refreshed,
                "by_kind": dict(self.by_kind), "samples": self.samples, "errors": self.errors,
                "partial": self.stopped is not None or bool(self.errors), "stopped": self.stopped,
                "resume_from": self.resume_from, "blocked_until": self.blocked_until}


def reconcile(client: WeComClient, corp_id: str, *, staff: list[str] | None = None, now: float | None = None,
              clock: Callable[[], float] | None = None, deadline: float | None = None,
              resume_from: str | None = None) -> dict:
    """Compare every follow relation WeCom lists with ours and repair the difference.

    For each group of staff with 客户联系 (get_follow_user_list), batch/get_by_user is paged to
    the end: relations we lack are created (a lost add, with its attribution and channel
    tags), half-added ones now listed become active, deleted ones listed with a newer
    createtime are re-added, and remark/description/state/add_way/tags drift is fixed;
    customers we have no profile of get one. Once a group's pages are all read, relations we
    hold active that WeCom no longer lists are marked deleted by the staff member (a lost
    del_external_contact; a lost del_follow_user cannot be seen, as WeCom keeps listing a
    one-way relation). Each repair goes to the customer's timeline as `reconciled:<what>`.

    `staff` limits the run to those staff (a job's chunk); by default every staff member
    get_follow_user_list names. A 45009 stops the run (`stopped="rate_limited"`) and
    `deadline` (epoch seconds) stops it (`stopped="deadline"`), both at a group boundary
    with `resume_from` set for the next call; corp-wide configuration errors are raised;
    other errors are reported per staff member and the run goes on, up to MAX_ERRORS
    (`stopped="errors"`). A second run finds nothing to repair. `now` fixes the
    observation time (tests); by default each page is stamped when it arrives, by `clock`
    (the job's) or the system's.
    """
    if clock is None:
        clock = (lambda: now) if now is not None else time.time  # noqa: E731
    tally = _Tally(corp_id)
    if staff is None:
        try:
            staff = follow_users(client)
        except RateLimited as err:
            tally.stopped, tally.blocked_until = "rate_limited", err.blocked_until
            return tally.report(0)
    staff = sorted(set(staff))
    todo = [u for u in staff if resume_from is None or u >= resume_from]
    for start in range(0, len(todo), STAFF_PER_CALL):
        group = todo[start:start + STAFF_PER_CALL]
        try:
            _reconcile_group(client, corp_id, group, tally, clock, deadline)
        except RateLimited as err:
            tally.stopped, tally.blocked_until, tally.resume_from = "rate_limited", err.blocked_until, group[0]
            break
        except _OutOfTime:
            tally.stopped, tally.resume_from = "deadline", group[0]
            break
        except _TooManyErrors:
            tally.stopped = "errors"
            break
    report = tally.report(len(staff))
    # nested: `created` is a LogRecord attribute and cannot be an extra key
    log.info("reconciled", extra={"reconcile": {k: v for k, v in report.items() if k != "samples"}})
    return report


def _reconcile_group(client: WeComClient, corp_id: str, group: list[str], tally: _Tally,
                     clock: Callable[[], float], deadline: float | None) -> None:
    started = clock()
    try:
        seen = _read_pages(client, corp_id, group, tally, clock, deadline)
    except (RateLimited, _OutOfTime):
        raise
    except WeComError as err:
        if corp_wide(err):
            raise  # every other staff member would fail alike
        if len(group) == 1:
            tally.errors.append({"userid": group[0], "errcode": err.errcode, "api": err.api})
            if len(tally.errors) >= MAX_ERRORS:
                raise _TooManyErrors from None
            return
        for userid in group:  # one bad member (left since the list was read...) fails the call
            _reconcile_group(client, corp_id, [userid], tally, clock, deadline)
        return
    _mark_unlisted(corp_id, group, seen, started, tally, clock)


def _read_pages(client: WeComClient, corp_id: str, group: list[str], tally: _Tally,
                clock: Callable[[], float], deadline: float | None) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    cursor = ""
    while True:
        if deadline is not None and clock() >= deadline:
            raise _OutOfTime
        page = client.batch_get_by_user(group, cursor, PAGE_LIMIT)
        items = page.get("external_contact_list") or []
        _apply_page(client, corp_id, items, tally, clock())
        seen.update((str(i["follow_info"]["userid"]), str(i["external_contact"]["external_userid"])) for i in items)
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return seen


def _apply_page(client: WeComClient, corp_id: str, items: list[dict], tally: _Tally, fetched_at: float) -> None:
    pairs = [(str(i["external_contact"]["external_userid"]), str(i["follow_info"]["userid"])) for i in items]
    follows = {(f.external_userid, f.userid): f for f in Follow.batch_get([keys.follow(corp_id, e, u)
                                                                          for e, u in set(pairs)])}
    customers = {c.external_userid: c for c in Customer.batch_get([keys.customer(corp_id, e)
                                                                   for e in {e for e, _ in pairs}])}
    done: set[str] = set()
    for item, (external_userid, userid) in zip(items, pairs):
        tally.checked += 1
        facts = FollowFacts.parse(item["follow_info"])
        if external_userid not in done:
            done.add(external_userid)
            _check_profile(corp_id, item["external_contact"], customers.get(external_userid), facts, tally,
                           fetched_at)
        _check_follow(client, corp_id, external_userid, follows.get((external_userid, userid)), facts, tally,
                      fetched_at)


def _check_profile(corp_id: str, contact: dict, row: Customer | None, facts: FollowFacts, tally: _Tally,
                   fetched_at: float) -> None:
    external_userid = str(contact["external_userid"])
    if row is not None and row.profile_at is not None:
        if any(contact.get(n) not in (None, "") and contact.get(n) != getattr(row, n) for n in PROFILE_FIELDS):
            # name or avatar changed in WeChat: no callback exists for that, so not a repair
            tally.profiles_refreshed += store_profile(corp_id, contact, fetched_at)
        return
    if store_profile(corp_id, contact, fetched_at, seen_at=facts.added_at):
        what = "customer_created" if row is None else "profile_filled"
        tally.customers_created += row is None
        tally.repair(corp_id, external_userid, None, what, int(fetched_at))


def _check_follow(client: WeComClient, corp_id: str, external_userid: str, row: Follow | None,
                  facts: FollowFacts, tally: _Tally, fetched_at: float) -> None:
    at, userid = int(fetched_at), facts.userid
    # A repair observed at `fetched_at` ranks like an event of that second: events created
    # before it are already reflected in what WeCom listed, so they must not undo it.
    version = at * 10 + 1
    if row is None:
        created = update_if(Follow(*keys.follow(corp_id, external_userid, userid)),
                             [*identity_actions(corp_id, external_userid, userid), *facts.actions(),
                              Follow.status.set("active"), Follow.version.set(version),
                              Follow.synced_at.set(fetched_at)],
                             Follow.PK.does_not_exist())  # else an event created it meanwhile
        if created:
            tally.created += 1
            tally.repair(corp_id, external_userid, userid, "follow_added", at, {"added_at": facts.added_at})
            _restore_add(client, corp_id, external_userid, facts, at)
        return
    unchanged = ((Follow.version.does_not_exist() | (Follow.version <= (row.version or 0)))
                 & (Follow.status == row.status))
    if row.status not in LIVE:
        deleted_at = int(row.version or 0) // 10
        if facts.added_at and facts.added_at > deleted_at:  # added again after the deletion we know of
            if update_if(row, [Follow.status.set("active"), Follow.delete_source.remove(),
                                Follow.version.set(version), Follow.synced_at.set(fetched_at), *facts.actions()],
                          unchanged):
                tally.created += 1
                tally.repair(corp_id, external_userid, userid, "follow_readded", at, {"added_at": facts.added_at})
                _restore_add(client, corp_id, external_userid, facts, at)
        return
    if row.status == "half":
        if update_if(row, [Follow.status.set("active"), Follow.version.set(version)], unchanged):
            tally.updated += 1
            tally.repair(corp_id, external_userid, userid, "follow_activated", at)
    drift = facts.drift(row)
    if not drift:
        return
    if update_if(row, [*facts.actions(), Follow.synced_at.set(fetched_at)],
                  Follow.synced_at.does_not_exist() | (Follow.synced_at <= fetched_at)):
        tally.updated += 1
        for name, (ours, theirs) in drift.items():
            if name == "tag_ids":
                detail = {"added": sorted(theirs - ours), "removed": sorted(ours - theirs)}
                name = "tags"
            else:
                detail = {"old": ours, "new": theirs}
            tally.repair(corp_id, external_userid, userid, name, at, detail)


def _restore_add(client: WeComClient, corp_id: str, external_userid: str, facts: FollowFacts, at: int) -> None:
    """What the lost add callback would have done: attribution and the channel tags."""
    touch, way = touch_of(corp_id, facts.userid, facts.state, facts.added_at or at)
    attribute(corp_id, external_userid, touch)
    wanted = set(way.tag_ids or ()) if way is not None else set()
    if wanted - facts.tag_ids:
        apply_channel_tags(client, corp_id, facts.userid, external_userid, sorted(wanted),
                           occasion=f"reconcile{keys.SEP}{facts.added_at}")


def _mark_unlisted(corp_id: str, group: list[str], seen: set[tuple[str, str]], started: float, tally: _Tally,
                   clock: Callable[[], float]) -> None:
    """Active relations of these staff that WeCom did not list: deleted by the member.

    Only rows no event touched since before the listing began (version below its second)
    are marked; a half-added relation is never listed, so it is left alone."""
    floor = int(started) * 10
    for userid in group:
        query = Follow.gsi1.query(keys.follows_of_staff(corp_id, userid),
                                  Follow.GSI1SK.startswith(keys.FOLLOW_PREFIX),
                                  filter_condition=Follow.status == "active")
        for row in query:
            if (row.userid, row.external_userid) in seen or (row.version or 0) >= floor:
                continue
            at = int(clock())
            if update_if(row, [Follow.status.set("deleted_by_staff"), Follow.delete_source.set("reconcile"),
                                Follow.version.set(at * 10 + 2)],
                          (Follow.status == "active") & (Follow.version.does_not_exist() | (Follow.version < floor))):
                tally.marked_deleted += 1
                tally.repair(corp_id, row.external_userid, userid, "follow_deleted", at)


# --- the nightly job ----------------------------------------------------------------------------
def follow_users(client: WeComClient) -> list[str]:
    """Staff with 客户联系, sorted."""
    return sorted(set(client.get_follow_user_list().get("follow_user") or []))


def plan(ctx: Context, cursor: object) -> Page:
    staff = follow_users(ctx.client())
    groups = [staff[i:i + STAFF_PER_CHUNK] for i in range(0, len(staff), STAFF_PER_CHUNK)]
    return Page([Chunk({"tags": True}, size=0), *(Chunk({"staff": g}, size=len(g)) for g in groups)])


def run(ctx: Context, payload: dict) -> Done | Wait:
    client = ctx.client()
    if payload.get("tags"):
        return Done(result={"tags": sync_corp_tags(client, ctx.corp_id)})
    report = reconcile(client, ctx.corp_id, staff=payload["staff"], clock=ctx.clock, deadline=ctx.deadline,
                       resume_from=payload.get("resume_from"))
    carried = merge(payload.get("carry"), report)
    if report["stopped"] in ("deadline", "rate_limited"):
        wait = max(0.0, (report["blocked_until"] or 0) - ctx.clock())
        return Wait(wait, payload={**payload, "resume_from": report["resume_from"], "carry": carried},
                    reason=report["stopped"])
    # MAX_ERRORS ends the run early: the group's remaining staff were not reconciled either
    failed = len(payload["staff"]) if report["stopped"] == "errors" else len({e["userid"] for e in carried["errors"]})
    return Done(result=carried, failed=failed)


def _empty() -> dict:
    return {**{name: 0 for name in COUNTS}, "by_kind": {}, "samples": [], "errors": []}


def merge(earlier: dict | None, report: dict) -> dict:
    """Two runs' repairs as one report (the samples and errors capped as in one run)."""
    earlier = earlier or _empty()
    return {**{name: earlier[name] + report[name] for name in COUNTS},
            "by_kind": dict(Counter(earlier["by_kind"]) + Counter(report["by_kind"])),
            "samples": (earlier["samples"] + report["samples"])[:SAMPLE_LIMIT],
            "errors": (earlier["errors"] + report["errors"])[:MAX_ERRORS]}


def finish(ctx: Context, reports: list[ChunkReport]) -> dict:
    """The corp's nightly report: every chunk's repairs added up, and the tag sync's report."""
    total, tags, staff = _empty(), None, 0
    for chunk in reports:
        if chunk.payload.get("tags"):
            tags = chunk.result["tags"] if chunk.state == "done" else {"error": chunk.error or chunk.state}
            continue
        staff += chunk.size
        if chunk.state == "done":
            total = merge(total, chunk.result)
        else:  # failed as a whole, or skipped: each of its staff is an error
            total = merge(total, {**_empty(), "errors": [{"userid": u, "error": chunk.error or chunk.state}
                                                         for u in chunk.payload["staff"]]})
    partial = bool(total["errors"]) or any(chunk.state != "done" for chunk in reports)
    return {"corp_id": ctx.corp_id, "staff": staff, **total, "partial": partial, "tags": tags}


KIND = Kind("reconcile", plan=plan, run=run, finish=finish, chunk_seconds=300, window=20)
