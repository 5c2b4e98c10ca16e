"""Customers: profile, follow relations, attribution, timeline, the customer view, and the
nightly reconciliation that repairs what lost callbacks left wrong.

The worker's handler (handlers/external_contact.py) records each callback's raw facts first:
the follow's status under the event-version guard, and a timeline entry. on_contact_event
then adds what needs WeCom or other modules:

* the profile and the follow's remark/description/state/add_way/tags from one
  externalcontact/get. These describe WeCom at the time of the fetch, not of the event, so
  they carry their own guard: `profile_at` / `synced_at` = fetch time, only moving forward.
* attribution: `first_touch` is written only by an older add and `latest_touch` only by a
  newer one (conditional writes), so out-of-order adds end with the right pair.
* the contact way's channel tags, marked once.

Statuses are never taken from a fetch: WeCom may still list a relation for a while after it
was deleted (FACTS §3.2), and after del_follow_user a one-way relation stays listed for good.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from scrm import keys
from scrm.corps import UnknownCorp, registered
from scrm.events import CallbackEvent
from scrm.handlers import Permanent, text
from scrm.models import Customer, Follow, TimelineEntry, Touch, update_if
from scrm.observability import log
from scrm.tags import apply_channel_tags, describe_tags, sync_corp_tags
from scrm.wecom.client import WeComClient, for_corp
from scrm.wecom.errors import GoneError, RateLimited, WeComError

__all__ = ["apply_channel_tags", "customer_view", "nightly", "on_contact_event", "reconcile"]

ADDS = ("add_external_contact", "add_half_external_contact")
FETCHES = (*ADDS, "edit_external_contact", "msg_audit_approved")
LIVE = ("active", "half")
PROFILE_FIELDS = ("name", "unionid", "type", "gender", "avatar", "corp_name")
FOLLOW_FIELDS = ("remark", "description", "state", "add_way", "tag_ids")
# Staff per batch/get_by_user call (WeCom allows 100). Deletions can only be detected once a
# call's every page is read, and a run cut short resumes at a call boundary, so a smaller
# group wastes less on a resume while adding at most one short page per group.
STAFF_PER_CALL = 25
PAGE_LIMIT = 100
SAMPLE_LIMIT = 20
# Per-staff failures before a run gives up on the corp: a corp-wide refusal (48002, say)
# would otherwise cost one failing call per staff member every night.
MAX_ERRORS = 50
MAX_HOPS = 24  # continuations of one nightly run (each up to a Lambda's 15 minutes)


# --- small helpers -----------------------------------------------------------------------
def _note(corp_id: str, external_userid: str, at: int, entry_id: str, what: str, userid: str | None,
          detail: dict | None = None) -> None:
    """A timeline entry; its key names its cause, so writing it again changes nothing."""
    TimelineEntry(*keys.timeline(corp_id, external_userid, at, entry_id), external_userid=external_userid,
                  at=at, what=what, userid=userid, detail=detail or None).save()


@dataclass(frozen=True)
class FollowFacts:
    """A follow relation as WeCom lists it (externalcontact/get or batch/get_by_user)."""

    userid: str
    added_at: int | None
    remark: str | None
    description: str | None
    state: str | None
    add_way: int | None
    tag_ids: frozenset[str]

    @classmethod
    def parse(cls, data: dict) -> "FollowFacts":
        if "tag_id" in data:  # batch/get_by_user lists ids only
            tag_ids = data.get("tag_id") or []
        else:  # personal tags (type 2) have no id: they are the member's, not the corp's
            tag_ids = [t["tag_id"] for t in data.get("tags") or [] if t.get("tag_id")]
        add_way = data.get("add_way")
        return cls(userid=str(data["userid"]), added_at=int(data["createtime"]) if data.get("createtime") else None,
                   remark=data.get("remark") or None, description=data.get("description") or None,
                   state=data.get("state") or None, add_way=int(add_way) if add_way is not None else None,
                   tag_ids=frozenset(map(str, tag_ids)))

    def drift(self, row: Follow) -> dict[str, tuple[Any, Any]]:
        """Fields where our row differs: name -> (ours, WeCom's)."""
        ours = {"remark": row.remark or None, "description": row.description or None, "state": row.state or None,
                "add_way": int(row.add_way) if row.add_way is not None else None,
                "tag_ids": frozenset(row.tag_ids or ())}
        theirs = {name: getattr(self, name) for name in FOLLOW_FIELDS}
        return {name: (ours[name], theirs[name]) for name in FOLLOW_FIELDS if ours[name] != theirs[name]}

    def actions(self) -> list:
        actions = [Follow.add_way.set(self.add_way) if self.add_way is not None else Follow.add_way.remove(),
                   Follow.tag_ids.set(set(self.tag_ids)) if self.tag_ids else Follow.tag_ids.remove()]
        for attr, value in ((Follow.remark, self.remark), (Follow.description, self.description),
                            (Follow.state, self.state)):
            actions.append(attr.set(value) if value is not None else attr.remove())
        if self.added_at:
            actions.append(Follow.added_at.set(self.added_at))
        return actions


def _identity(corp_id: str, external_userid: str, userid: str) -> list:
    return [Follow.entity.set(Follow), Follow.external_userid.set(external_userid), Follow.userid.set(userid),
            Follow.GSI1PK.set(keys.follows_of_staff(corp_id, userid)),
            Follow.GSI1SK.set(f"{keys.FOLLOW_PREFIX}{external_userid}")]


def _store_profile(corp_id: str, contact: dict, fetched_at: float, seen_at: int | None = None) -> bool:
    """Write the profile unless a later fetch already did; unionid only when WeCom gives one
    (it is omitted when no WeChat developer account is bound, which says nothing about it)."""
    external_userid = str(contact["external_userid"])
    actions = [Customer.entity.set(Customer), Customer.external_userid.set(external_userid),
               Customer.profile_at.set(fetched_at)]
    if seen_at:
        actions.append(Customer.first_seen_at.set(Customer.first_seen_at | seen_at))
    for name in PROFILE_FIELDS:
        if contact.get(name) not in (None, ""):
            actions.append(getattr(Customer, name).set(contact[name]))
    return update_if(Customer(*keys.customer(corp_id, external_userid)), actions,
                      Customer.profile_at.does_not_exist() | (Customer.profile_at <= fetched_at))


def _store_follow(corp_id: str, external_userid: str, facts: FollowFacts, fetched_at: float) -> bool:
    """Remark, description, state, add_way and tags as fetched; the status is left alone."""
    actions = [*_identity(corp_id, external_userid, facts.userid), *facts.actions(),
               Follow.status.set(Follow.status | "active"), Follow.synced_at.set(fetched_at)]
    return update_if(Follow(*keys.follow(corp_id, external_userid, facts.userid)), actions,
                      Follow.synced_at.does_not_exist() | (Follow.synced_at <= fetched_at))


# --- attribution -----------------------------------------------------------------------------
def _touch(corp_id: str, userid: str, state: str | None, at: int) -> tuple[Touch, Any]:
    """Who, where and through what a customer was added; also the contact way, if ours.

    Each field comes from our stored way, else from what the state spells out (a way of
    another deployment, or one whose row is missing); the store last from the staff member."""
    from scrm import contact_ways, org  # lazily: acquisition modules, not needed for deletes

    way = contact_ways.resolve_state(corp_id, state) if state else None
    ref = contact_ways.decode_state(state) if state else None

    def pick(name: str) -> str | None:
        return getattr(way, name, None) or getattr(ref, name, None)

    store_id = pick("store_id") or (org.store_of(corp_id, userid) or {}).get("store_id")
    return Touch(at=at, userid=userid, state=state, channel=pick("channel"),
                 store_id=str(store_id) if store_id else None, campaign_id=pick("campaign_id"),
                 config_id=getattr(way, "config_id", None)), way


def _attribute(corp_id: str, external_userid: str, touch: Touch) -> tuple[bool, bool]:
    """(became first, became latest). Adds in the same second are ordered by userid, so the
    outcome never depends on processing order; the same add again changes nothing."""
    customer = Customer(*keys.customer(corp_id, external_userid))
    base = [Customer.entity.set(Customer), Customer.external_userid.set(external_userid),
            Customer.first_seen_at.set(Customer.first_seen_at | touch.at)]
    first, latest = Customer.first_touch, Customer.latest_touch
    became_first = update_if(customer, [*base, first.set(touch)],
                              first.at.does_not_exist() | (first.at > touch.at)
                              | ((first.at == touch.at) & (first.userid > touch.userid)))
    became_latest = update_if(customer, [*base, latest.set(touch)],
                               latest.at.does_not_exist() | (latest.at < touch.at)
                               | ((latest.at == touch.at) & (latest.userid < touch.userid)))
    return became_first, became_latest


def _touch_detail(touch: Touch) -> dict:
    """A timeline entry's detail: the event's State (as the handler names it) and where it led."""
    names = {"state": "State"}
    return {names.get(k, k): v for k, v in touch.attribute_values.items() if k not in ("at", "userid") and v}


# --- callbacks ---------------------------------------------------------------------------------
def on_contact_event(event: CallbackEvent, client: WeComClient) -> str:
    """What a change_external_contact event needs beyond its raw facts; a short outcome.

    Deletions and transfer_fail need nothing more (the handler recorded them). 84061 on the
    fetch means the relation is gone again (or still half-added): noted, not raised. A 45009
    leaves the profile to the nightly reconciliation instead of failing the event.
    """
    change = event.change_type
    if change not in FETCHES:
        return "recorded"
    corp_id, fields = event.corp_id, event.fields
    userid, external_userid = text(fields, "UserID"), text(fields, "ExternalUserID")
    if not userid or not external_userid:
        raise Permanent("missing_ids")
    outcome: list[str] = []
    if change in ADDS:
        state = text(fields, "State")
        touch, way = _touch(corp_id, userid, state, event.create_time)
        first, latest = _attribute(corp_id, external_userid, touch)
        outcome.append("first" if first else "latest" if latest else "attributed")
        # The handler's timeline entry for this add, now with where the customer came from.
        _note(corp_id, external_userid, event.create_time, event.event_id, change, userid, _touch_detail(touch))
        if change == "add_external_contact" and way is not None and way.tag_ids:
            if apply_channel_tags(client, corp_id, userid, external_userid, list(way.tag_ids),
                                  occasion=event.event_id):
                outcome.append("tagged")
    try:
        data = client.get_external_contact(external_userid)
    except GoneError as err:
        if change == "add_half_external_contact":
            return "+".join([*outcome, "half"])  # the APIs answer 84061 until the member adds back
        _note(corp_id, external_userid, event.create_time, f"{event.event_id}:gone", "relation_gone", userid,
              {"errcode": err.errcode})
        return "+".join([*outcome, "gone"])
    except RateLimited:
        return "+".join([*outcome, "profile_deferred"])
    fetched_at = round(time.time(), 3)
    _store_profile(corp_id, data["external_contact"], fetched_at)
    listed = next((f for f in data.get("follow_user") or [] if f.get("userid") == userid), None)
    if listed is None:
        return "+".join([*outcome, "not_listed"])
    stored = _store_follow(corp_id, external_userid, FollowFacts.parse(listed), fetched_at)
    return "+".join([*outcome, "synced" if stored else "older_fetch"])


# --- the customer view -------------------------------------------------------------------------
def _touch_view(touch: Touch | None) -> dict | None:
    return dict(touch.attribute_values) if touch is not None else None


def _coupons(corp_id: str, external_userid: str) -> list[dict]:
    from scrm import coupons  # lazily: the worker's paths never need it

    return [{"code": c.code, "template_id": c.template_id, "status": c.status, "issued_at": c.issued_at,
             "valid_until": c.valid_until, "redeemed_at": c.redeemed_at}
            for c in coupons.customer_coupons(corp_id, external_userid)]


def customer_view(corp_id: str, external_userid: str, *, timeline_limit: int = 50) -> dict | None:
    """Everything about one customer: three reads of its partition plus the tag names."""
    pk = keys.customer_pk(corp_id, external_userid)
    try:
        customer: Customer | None = Customer.get(*keys.customer(corp_id, external_userid))
    except Customer.DoesNotExist:
        customer = None
    follows = list(Follow.query(pk, Follow.SK.startswith(keys.FOLLOW_PREFIX)))
    if customer is None and not follows:
        return None
    timeline = TimelineEntry.query(pk, TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX),
                                   scan_index_forward=False, limit=timeline_limit)
    names = {t["tag_id"]: t for t in describe_tags(corp_id, {t for f in follows for t in f.tag_ids or ()})}
    profile = {"external_userid": external_userid, **{n: getattr(customer, n, None) for n in PROFILE_FIELDS},
               "first_seen_at": getattr(customer, "first_seen_at", None),
               "profile_at": getattr(customer, "profile_at", None)}
    return {
        "profile": profile,
        "attribution": {"first": _touch_view(getattr(customer, "first_touch", None)),
                        "latest": _touch_view(getattr(customer, "latest_touch", None))},
        "follows": [{"userid": f.userid, "status": f.status, "added_at": f.added_at, "state": f.state,
                     "add_way": f.add_way, "remark": f.remark, "description": f.description,
                     "tags": [names[t] for t in names if t in (f.tag_ids or ())]}
                    for f in follows],
        "timeline": [{"at": e.at, "what": e.what, "userid": e.userid, "detail": e.detail} for e in timeline],
        "coupons": _coupons(corp_id, external_userid),
    }


# --- nightly reconciliation -------------------------------------------------------------------
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
        _note(corp_id, external_userid, at, f"reconcile{keys.SEP}{userid or ''}{keys.SEP}{what}",
              f"reconciled:{what}", userid, detail)

    def report(self, staff: int) -> dict:
        return {"corp_id": self.corp_id, "staff": staff, "checked": self.checked, "created": self.created,
                "marked_deleted": self.marked_deleted, "updated": self.updated,
                "customers_created": self.customers_created, "profiles_refreshed": self.profiles_refreshed,
                "by_kind": dict(self.by_kind), "samples": self.samples, "errors": self.errors,
                "partial": self.stopped is not None or bool(self.errors), "stopped": self.stopped,
                "resume_from": self.resume_from, "blocked_until": self.blocked_until}


def reconcile(client: WeComClient, corp_id: str, *, now: float | None = None, deadline: float | None = None,
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

    A 45009 stops the run (`stopped="rate_limited"`); `deadline` (epoch seconds) stops it at
    a group boundary with `resume_from` set for the next call; other errors are reported
    per staff member and the run goes on, up to MAX_ERRORS (`stopped="errors"`). A second
    run finds nothing to repair. `now` fixes
    the observation time (tests); by default each page is stamped when it arrives.
    """
    clock: Callable[[], float] = (lambda: now) if now is not None else time.time  # noqa: E731
    tally = _Tally(corp_id)
    try:
        staff = sorted(set(client.get_follow_user_list().get("follow_user") or []))
    except RateLimited as err:
        tally.stopped, tally.blocked_until = "rate_limited", err.blocked_until
        return tally.report(0)
    todo = [u for u in staff if resume_from is None or u >= resume_from]
    for start in range(0, len(todo), STAFF_PER_CALL):
        group = todo[start:start + STAFF_PER_CALL]
        try:
            _reconcile_group(client, corp_id, group, tally, clock, deadline)
        except RateLimited as err:
            tally.stopped, tally.blocked_until = "rate_limited", err.blocked_until
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
        if deadline is not None and time.time() >= deadline:
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
            tally.profiles_refreshed += _store_profile(corp_id, contact, fetched_at)
        return
    if _store_profile(corp_id, contact, fetched_at, seen_at=facts.added_at):
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
                             [*_identity(corp_id, external_userid, userid), *facts.actions(),
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
    touch, way = _touch(corp_id, facts.userid, facts.state, facts.added_at or at)
    _attribute(corp_id, external_userid, touch)
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


# --- the scheduled run over every corp ------------------------------------------------------------
def nightly(continuation: dict | None, *, deadline: float, continue_later: Callable[[dict], None],
            clients: Callable[[str], WeComClient] = for_corp, metrics: Metrics | None = None) -> dict:
    """Full tag sync and reconciliation of every registered corp, one after the other.

    A run that reaches `deadline` hands the rest (the remaining corps, where the current one
    stopped) to `continue_later`, which starts another invocation; MAX_HOPS bounds the chain.
    One corp's failure (unknown corp, wrong secret, rate limit) never stops the others.
    """
    continuation = continuation or {}
    corp_ids: list[str] = continuation.get("corps") or registered()
    resume_from: str | None = continuation.get("resume_from")
    hop = int(continuation.get("hop") or 0)
    reports: list[dict] = []
    for index, corp_id in enumerate(corp_ids):
        if time.time() >= deadline:
            _hand_over(corp_ids[index:], resume_from, hop, continue_later, reports)
            break
        try:
            client = clients(corp_id)
            tag_report = None
            if resume_from is None:  # a resumed corp had its tags synced by the earlier hop
                try:
                    tag_report = sync_corp_tags(client, corp_id)
                except RateLimited:
                    tag_report = {"stopped": "rate_limited"}
            report = {**reconcile(client, corp_id, deadline=deadline, resume_from=resume_from), "tags": tag_report}
        except (UnknownCorp, WeComError) as err:
            log.error("nightly run of a corp failed", extra={"corp_id": corp_id, "error": type(err).__name__,
                                                            "errcode": getattr(err, "errcode", None)})
            report = {"corp_id": corp_id, "error": type(err).__name__, "errcode": getattr(err, "errcode", None)}
        reports.append(report)
        if metrics is not None:
            _count(metrics, report)
        if report.get("stopped") == "deadline":
            _hand_over(corp_ids[index:], report["resume_from"], hop, continue_later, reports)
            break
        resume_from = None
    return {"hop": hop, "corps": reports}


def _count(metrics: Metrics, report: dict) -> None:
    if "error" in report:
        metrics.add_metric(name="ReconcileCorpsFailed", unit=MetricUnit.Count, value=1)
        return
    for name, key in (("ReconcileChecked", "checked"), ("ReconcileCreated", "created"),
                      ("ReconcileMarkedDeleted", "marked_deleted"), ("ReconcileUpdated", "updated")):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=report[key])
    if report["partial"]:
        metrics.add_metric(name="ReconcilePartial", unit=MetricUnit.Count, value=1)


def _hand_over(corp_ids: list[str], resume_from: str | None, hop: int, continue_later: Callable[[dict], None],
               reports: list[dict]) -> None:
    if hop + 1 >= MAX_HOPS:
        log.error("nightly run gave up: too many continuations", extra={"left": corp_ids[:10]})
        return
    continue_later({"corps": corp_ids, "resume_from": resume_from, "hop": hop + 1})
    reports.append({"continued": len(corp_ids), "resume_from": resume_from})
