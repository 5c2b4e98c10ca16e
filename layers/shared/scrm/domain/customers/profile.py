"""Customers: profile, follow relations, attribution and timeline, as callbacks report them.

For an add (on_add), everything is written once, after the one WeCom fetch it needs:

* the timeline entry, with where the customer came from (its key names the event, so a
  redelivery writes nothing: the conditional put also tells a redelivery from a first time);
* the channel tags of the contact way: mark_tag first, then the marker (at least once);
* the follow: the event's facts (status, version-guarded) and the fetched remark,
  description, state, add_way and tags (fetch-guarded: `synced_at`), in one write;
* the customer: first seen, attribution (`first_touch` written only by an older add,
  `latest_touch` only by a newer one) and the profile (fetch-guarded: `profile_at`), in one
  write for a customer seen for the first time.
When a guard refuses the combined write (a newer event or fetch came first, a returning
customer), each part is written on its own under its own guard, so out-of-order events and
fetches end the same way whatever the order.

Other events (edit, msg_audit_approved) have their raw facts recorded by the handler
(scrm.domain.customers.events) and then on_contact_event refreshes the profile and follow.

Statuses are never taken from a fetch: WeCom may still list a relation for a while after it
was deleted (FACTS §3.2), and after del_follow_user a one-way relation stays listed for good.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from pynamodb.exceptions import PutError

from scrm.domain.contact_ways import state as states
from scrm.domain.event_fields import Permanent, text
from scrm.domain.org import tree as org
from scrm.domain.tags import corp_tags
from scrm.store import keys
from scrm.store.models import (
    ContactWay,
    Customer,
    Follow,
    TimelineEntry,
    Touch,
    apply_versioned,
    condition_failed,
    update_if,
)
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import GoneError, RateLimited, WeComError
from scrm.wecom.callback.events import CallbackEvent

ADDS = ("add_external_contact", "add_half_external_contact")
FETCHES = ("edit_external_contact", "msg_audit_approved")  # besides the adds
LIVE = ("active", "half")
PROFILE_FIELDS = ("name", "unionid", "type", "gender", "avatar", "corp_name")
FOLLOW_FIELDS = ("remark", "description", "state", "add_way", "tag_ids")


# --- small helpers -----------------------------------------------------------------------
def note(corp_id: str, external_userid: str, at: int, entry_id: str, what: str, userid: str | None,
          detail: dict | None = None) -> bool:
    """A timeline entry; its key names its cause, so it is written once. True if written now."""
    try:
        TimelineEntry(*keys.timeline(corp_id, external_userid, at, entry_id), external_userid=external_userid,
                      at=at, what=what, userid=userid, detail=detail or None).save(
            condition=TimelineEntry.PK.does_not_exist())
    except PutError as err:
        if condition_failed(err):
            return False
        raise
    return True


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

    def named_actions(self) -> dict[str, Any]:
        """The follow's update actions for what WeCom listed, by attribute name."""
        actions = {name: getattr(Follow, name).set(value) if value is not None else getattr(Follow, name).remove()
                   for name, value in (("add_way", self.add_way), ("remark", self.remark),
                                       ("description", self.description), ("state", self.state))}
        actions["tag_ids"] = Follow.tag_ids.set(set(self.tag_ids)) if self.tag_ids else Follow.tag_ids.remove()
        if self.added_at:
            actions["added_at"] = Follow.added_at.set(self.added_at)
        return actions

    def actions(self) -> list:
        return list(self.named_actions().values())


def identity(corp_id: str, external_userid: str, userid: str) -> dict[str, Any]:
    """The follow's identity actions (and its place in the staff member's list), by name."""
    return {"entity": Follow.entity.set(Follow), "external_userid": Follow.external_userid.set(external_userid),
            "userid": Follow.userid.set(userid), "GSI1PK": Follow.GSI1PK.set(keys.follows_of_staff(corp_id, userid)),
            "GSI1SK": Follow.GSI1SK.set(f"{keys.FOLLOW_PREFIX}{external_userid}")}


def identity_actions(corp_id: str, external_userid: str, userid: str) -> list:
    return list(identity(corp_id, external_userid, userid).values())


def _profile_actions(contact: dict, fetched_at: float) -> list:
    """unionid only when WeCom gives one (it is omitted when no WeChat developer account is
    bound, which says nothing about it); likewise the other fields."""
    return [Customer.profile_at.set(fetched_at), *(getattr(Customer, name).set(contact[name])
                                                   for name in PROFILE_FIELDS if contact.get(name) not in (None, ""))]


def _profile_guard(fetched_at: float):
    return Customer.profile_at.does_not_exist() | (Customer.profile_at <= fetched_at)


def store_profile(corp_id: str, contact: dict, fetched_at: float, seen_at: int | None = None) -> bool:
    """Write the profile unless a later fetch already did."""
    external_userid = str(contact["external_userid"])
    actions = [Customer.entity.set(Customer), Customer.external_userid.set(external_userid),
               *_profile_actions(contact, fetched_at)]
    if seen_at:
        actions.append(Customer.first_seen_at.set(Customer.first_seen_at | seen_at))
    return update_if(Customer(*keys.customer(corp_id, external_userid)), actions, _profile_guard(fetched_at))


def _fetched(corp_id: str, external_userid: str, facts: FollowFacts, fetched_at: float) -> dict[str, Any]:
    return {**identity(corp_id, external_userid, facts.userid), **facts.named_actions(),
            "status": Follow.status.set(Follow.status | "active"), "synced_at": Follow.synced_at.set(fetched_at)}


def _fetch_guard(fetched_at: float):
    return Follow.synced_at.does_not_exist() | (Follow.synced_at <= fetched_at)


def store_follow(corp_id: str, external_userid: str, facts: FollowFacts, fetched_at: float) -> bool:
    """Remark, description, state, add_way and tags as fetched; the status is left alone."""
    return update_if(Follow(*keys.follow(corp_id, external_userid, facts.userid)),
                     list(_fetched(corp_id, external_userid, facts, fetched_at).values()), _fetch_guard(fetched_at))


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


def attribute_new(corp_id: str, external_userid: str, touch: Touch, contact: dict | None,
                  fetched_at: float) -> tuple[bool, bool, bool | None]:
    """(became first, became latest, profile stored: None without a fetch) for an add.

    A customer seen for the first time gets both touches and the profile in one write; any
    other takes `attribute` and `store_profile`, each under its own guard."""
    customer = Customer(*keys.customer(corp_id, external_userid))
    actions = [Customer.entity.set(Customer), Customer.external_userid.set(external_userid),
               Customer.first_seen_at.set(Customer.first_seen_at | touch.at),
               Customer.first_touch.set(touch), Customer.latest_touch.set(touch)]
    condition = Customer.first_touch.does_not_exist() & Customer.latest_touch.does_not_exist()
    if contact is not None:
        actions += _profile_actions(contact, fetched_at)
        condition = condition & _profile_guard(fetched_at)
    if update_if(customer, actions, condition):
        return True, True, None if contact is None else True
    first, latest = attribute(corp_id, external_userid, touch)
    return first, latest, None if contact is None else store_profile(corp_id, contact, fetched_at)


def record_follow(corp_id: str, external_userid: str, userid: str, version: int, event_actions: dict[str, Any],
                  facts: FollowFacts | None, fetched_at: float) -> tuple[bool, bool | None]:
    """(the event applied, the fetch stored: None without one): the event's facts under the
    version guard and the fetched ones under the fetch guard, in one write when both hold.
    Where both set an attribute (state, added_at) the fetch, WeCom's latest word, wins."""
    row = Follow(*keys.follow(corp_id, external_userid, userid))
    if facts is None:
        return apply_versioned(row, version, list(event_actions.values())), None
    fetched = _fetched(corp_id, external_userid, facts, fetched_at)
    merged = {**fetched, **{k: v for k, v in event_actions.items() if k not in facts.named_actions()}}
    guard = (Follow.version.does_not_exist() | (Follow.version <= version)) & _fetch_guard(fetched_at)
    if update_if(row, [*merged.values(), Follow.version.set(version)], guard):
        return True, True
    applied = apply_versioned(Follow(*keys.follow(corp_id, external_userid, userid)), version,
                              list(event_actions.values()))
    return applied, store_follow(corp_id, external_userid, facts, fetched_at)


def touch_detail(touch: Touch) -> dict:
    """A timeline entry's detail: the event's State (as the handler names it) and where it led."""
    names = {"state": "State"}
    return {names.get(k, k): v for k, v in touch.attribute_values.items() if k not in ("at", "userid") and v}


# --- callbacks ---------------------------------------------------------------------------------
def _listed(data: dict, userid: str) -> FollowFacts | None:
    listed = next((f for f in data.get("follow_user") or [] if f.get("userid") == userid), None)
    return FollowFacts.parse(listed) if listed is not None else None


def on_add(event: CallbackEvent, client: WeComClient, version: int, event_actions: dict[str, Any]) -> tuple[bool, str]:
    """Record an add (module docstring); (the event's follow facts applied, a short outcome).

    84061 on the fetch means the relation is gone again (or still half-added): noted, not
    raised. A 45009 leaves the profile to the nightly reconciliation. Any other WeCom failure
    is raised after the event's own facts are written, so that its redelivery only adds the fetch."""
    corp_id, fields, change = event.corp_id, event.fields, event.change_type
    userid, external_userid = text(fields, "UserID"), text(fields, "ExternalUserID")
    touch, way = touch_of(corp_id, userid, text(fields, "State"), event.create_time)
    first_time = note(corp_id, external_userid, event.create_time, event.event_id, change, userid,
                      touch_detail(touch))
    wanted = sorted(set(way.tag_ids)) if change == "add_external_contact" and way is not None and way.tag_ids else []
    tagged = bool(wanted) and corp_tags.mark_channel_tags(client, corp_id, userid, external_userid, wanted,
                                                          occasion=event.event_id, first_time=first_time)
    outcome: list[str] = []
    data = None
    try:
        data = client.get_external_contact(external_userid)
    except GoneError as err:
        if change != "add_half_external_contact":  # the APIs answer 84061 until the member adds back
            note(corp_id, external_userid, event.create_time, f"{event.event_id}:gone", "relation_gone", userid,
                 {"errcode": err.errcode})
        outcome.append("half" if change == "add_half_external_contact" else "gone")
    except RateLimited:
        outcome.append("profile_deferred")
    except WeComError:
        attribute_new(corp_id, external_userid, touch, None, 0)
        record_follow(corp_id, external_userid, userid, version, event_actions, None, 0)
        raise
    fetched_at = round(time.time(), 3)
    facts = _listed(data, userid) if data is not None else None
    if facts is not None and tagged:
        facts = replace(facts, tag_ids=facts.tag_ids | set(wanted))  # the fetch may predate mark_tag
    first, latest, _ = attribute_new(corp_id, external_userid, touch,
                                     data["external_contact"] if data is not None else None, fetched_at)
    applied, synced = record_follow(corp_id, external_userid, userid, version, event_actions, facts, fetched_at)
    if tagged:
        if not synced:  # no fetch of ours stored them
            corp_tags.record_channel_tags(corp_id, userid, external_userid, wanted)
        corp_tags.remember_channel_tags(corp_id, userid, external_userid, wanted, occasion=event.event_id)
    if data is not None:
        outcome.append("not_listed" if facts is None else "synced" if synced else "older_fetch")
    parts = ["first" if first else "latest" if latest else "attributed", *(["tagged"] if tagged else []), *outcome]
    return applied, "+".join(parts)


def on_contact_event(event: CallbackEvent, client: WeComClient) -> str:
    """What an edit or msg_audit_approved needs beyond its raw facts (the handler recorded them):
    the profile and the follow's details, fetched; a short outcome. Other events need nothing."""
    if event.change_type not in FETCHES:
        return "recorded"
    corp_id, fields = event.corp_id, event.fields
    userid, external_userid = text(fields, "UserID"), text(fields, "ExternalUserID")
    if not userid or not external_userid:
        raise Permanent("missing_ids")
    try:
        data = client.get_external_contact(external_userid)
    except GoneError as err:
        note(corp_id, external_userid, event.create_time, f"{event.event_id}:gone", "relation_gone", userid,
             {"errcode": err.errcode})
        return "gone"
    except RateLimited:
        return "profile_deferred"
    fetched_at = round(time.time(), 3)
    store_profile(corp_id, data["external_contact"], fetched_at)
    facts = _listed(data, userid)
    if facts is None:
        return "not_listed"
    return "synced" if store_follow(corp_id, external_userid, facts, fetched_at) else "older_fetch"
