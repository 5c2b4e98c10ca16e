"""Customers: profile, follow relations, attribution and timeline, as callbacks report them.

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
from dataclasses import dataclass
from typing import Any

from scrm.domain.contact_ways import state as states
from scrm.domain.event_fields import Permanent, text
from scrm.domain.org import tree as org
from scrm.domain.tags.corp_tags import apply_channel_tags
from scrm.store import keys
from scrm.store.models import (
    ContactWay,
    Customer,
    Follow,
    TimelineEntry,
    Touch,
    update_if,
)
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import GoneError, RateLimited
from scrm.wecom.callback.events import CallbackEvent

ADDS = ("add_external_contact", "add_half_external_contact")
FETCHES = (*ADDS, "edit_external_contact", "msg_audit_approved")
LIVE = ("active", "half")
PROFILE_FIELDS = ("name", "unionid", "type", "gender", "avatar", "corp_name")
FOLLOW_FIELDS = ("remark", "description", "state", "add_way", "tag_ids")


# --- small helpers -----------------------------------------------------------------------
def note(corp_id: str, external_userid: str, at: int, entry_id: str, what: str, userid: str | None,
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


def identity_actions(corp_id: str, external_userid: str, userid: str) -> list:
    return [Follow.entity.set(Follow), Follow.external_userid.set(external_userid), Follow.userid.set(userid),
            Follow.GSI1PK.set(keys.follows_of_staff(corp_id, userid)),
            Follow.GSI1SK.set(f"{keys.FOLLOW_PREFIX}{external_userid}")]


def store_profile(corp_id: str, contact: dict, fetched_at: float, seen_at: int | None = None) -> bool:
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


def store_follow(corp_id: str, external_userid: str, facts: FollowFacts, fetched_at: float) -> bool:
    """Remark, description, state, add_way and tags as fetched; the status is left alone."""
    actions = [*identity_actions(corp_id, external_userid, facts.userid), *facts.actions(),
               Follow.status.set(Follow.status | "active"), Follow.synced_at.set(fetched_at)]
    return update_if(Follow(*keys.follow(corp_id, external_userid, facts.userid)), actions,
                      Follow.synced_at.does_not_exist() | (Follow.synced_at <= fetched_at))


# --- attribution -----------------------------------------------------------------------------
def touch_of(corp_id: str, userid: str, state: str | None, at: int) -> tuple[Touch, ContactWay | None]:
    """Who, where and through what a customer was added; also the contact way, if ours.

    Each field comes from our stored way, else from what the state spells out (a way of
    another deployment, or one whose row is missing); the store last from the staff member."""
    way = states.resolve_state(corp_id, state) if state else None
    ref = states.decode_state(state) if state else None

    def pick(name: str) -> str | None:
        return getattr(way, name, None) or getattr(ref, name, None)

    store_id = pick("store_id") or (org.store_of(corp_id, userid) or {}).get("store_id")
    return Touch(at=at, userid=userid, state=state, channel=pick("channel"),
                 store_id=str(store_id) if store_id else None, campaign_id=pick("campaign_id"),
                 config_id=getattr(way, "config_id", None)), way


def attribute(corp_id: str, external_userid: str, touch: Touch) -> tuple[bool, bool]:
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


def touch_detail(touch: Touch) -> dict:
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
        touch, way = touch_of(corp_id, userid, state, event.create_time)
        first, latest = attribute(corp_id, external_userid, touch)
        outcome.append("first" if first else "latest" if latest else "attributed")
        # The handler's timeline entry for this add, now with where the customer came from.
        note(corp_id, external_userid, event.create_time, event.event_id, change, userid, touch_detail(touch))
        if change == "add_external_contact" and way is not None and way.tag_ids:
            if apply_channel_tags(client, corp_id, userid, external_userid, list(way.tag_ids),
                                  occasion=event.event_id):
                outcome.append("tagged")
    try:
        data = client.get_external_contact(external_userid)
    except GoneError as err:
        if change == "add_half_external_contact":
            return "+".join([*outcome, "half"])  # the APIs answer 84061 until the member adds back
        note(corp_id, external_userid, event.create_time, f"{event.event_id}:gone", "relation_gone", userid,
              {"errcode": err.errcode})
        return "+".join([*outcome, "gone"])
    except RateLimited:
        return "+".join([*outcome, "profile_deferred"])
    fetched_at = round(time.time(), 3)
    store_profile(corp_id, data["external_contact"], fetched_at)
    listed = next((f for f in data.get("follow_user") or [] if f.get("userid") == userid), None)
    if listed is None:
        return "+".join([*outcome, "not_listed"])
    stored = store_follow(corp_id, external_userid, FollowFacts.parse(listed), fetched_at)
    return "+".join([*outcome, "synced" if stored else "older_fetch"])
