"""change_external_contact: follow relations, the customer's timeline and profile.

The welcome an add asks for is not sent here: events carrying a WelcomeCode go to the
welcome lane first (scrm.entry.welcome), which then hands the event to this handler. Daily
figures (new, lost, deleted customers) are derived from the follow's changes on the table's
stream, never counted here: nothing in this handler touches an item shared with other
customers.
"""
from __future__ import annotations

from typing import Any

from scrm.domain.customers import profile
from scrm.domain.event_fields import Permanent, text, version_of
from scrm.store import keys
from scrm.store.models import Customer, Follow, TimelineEntry, apply_versioned
from scrm.wecom.apis.client import for_corp
from scrm.wecom.callback.events import CallbackEvent

RANK = {
    "add_external_contact": 1,
    "add_half_external_contact": 1,
    "edit_external_contact": 1,
    "msg_audit_approved": 1,
    "transfer_fail": 1,
    "del_external_contact": 2,
    "del_follow_user": 2,
}
STATUS = {
    "add_external_contact": "active",
    "add_half_external_contact": "half",
    "del_external_contact": "deleted_by_staff",
    "del_follow_user": "deleted_by_customer",
}


def handle(event: CallbackEvent) -> str:
    change = event.change_type
    if change not in RANK:
        return "stored"
    fields = event.fields
    userid, external_userid = text(fields, "UserID"), text(fields, "ExternalUserID")
    if not userid or not external_userid:
        raise Permanent("missing_ids")
    corp_id = event.corp_id
    version = version_of(event.create_time, RANK[change])
    actions = _follow_actions(event, corp_id, external_userid, userid)
    if change in profile.ADDS:
        applied, outcome = profile.on_add(event, for_corp(corp_id), version, actions)
        return f"{'applied' if applied else 'stale'},{outcome}"

    TimelineEntry(*keys.timeline(corp_id, external_userid, event.create_time, event.event_id),
                  external_userid=external_userid, at=event.create_time, what=change, userid=userid,
                  detail={k: v for k, v in fields.items() if k in ("State", "Source", "FailReason")}).save()
    Customer(*keys.customer(corp_id, external_userid)).update(actions=[
        Customer.entity.set(Customer),
        Customer.external_userid.set(external_userid),
        Customer.first_seen_at.set(Customer.first_seen_at | event.create_time),
    ])
    applied = apply_versioned(Follow(*keys.follow(corp_id, external_userid, userid)), version, list(actions.values()))
    outcomes = ["applied" if applied else "stale"]
    if change in profile.FETCHES:
        outcomes.append(profile.on_contact_event(event, for_corp(corp_id)))
    return ",".join(outcomes)


def _follow_actions(event: CallbackEvent, corp_id: str, external_userid: str, userid: str) -> dict[str, Any]:
    """The follow's update actions for what the event says, by attribute name."""
    change, fields = event.change_type, event.fields
    actions = {k: v for k, v in profile.identity(corp_id, external_userid, userid).items() if k != "entity"}
    actions["status"] = Follow.status.set(STATUS[change]) if change in STATUS else Follow.status.set(
        Follow.status | "active")
    if change in ("add_external_contact", "add_half_external_contact"):
        actions["added_at"] = Follow.added_at.set(event.create_time)
        actions["delete_source"] = Follow.delete_source.remove()
        state = text(fields, "State")
        actions["state"] = Follow.state.set(state) if state else Follow.state.remove()
    if change == "del_external_contact":
        actions["delete_source"] = Follow.delete_source.set(text(fields, "Source") or "staff")
    if change == "transfer_fail":
        actions["transfer_fail_reason"] = Follow.transfer_fail_reason.set(text(fields, "FailReason") or "unknown")
    return actions
