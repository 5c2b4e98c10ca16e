"""change_external_contact: follow relations and the customer's timeline (the daily figures
count the follow's changes from the table's stream, scrm.domain.stats)."""
from __future__ import annotations

from scrm.domain.customers import profile
from scrm.domain.event_fields import Permanent, text, version_of
from scrm.domain.welcome import lane as welcome
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
WELCOMED = {"add_external_contact", "add_half_external_contact", "msg_audit_approved"}
# events after which the profile, follow details and attribution are pulled from WeCom
WITH_WECOM_CALLS = WELCOMED | {"edit_external_contact"}


def handle(event: CallbackEvent) -> str:
    change = event.change_type
    if change not in RANK:
        return "stored"
    fields = event.fields
    userid, external_userid = text(fields, "UserID"), text(fields, "ExternalUserID")
    if not userid or not external_userid:
        raise Permanent("missing_ids")
    corp_id = event.corp_id

    TimelineEntry(*keys.timeline(corp_id, external_userid, event.create_time, event.event_id),
                  external_userid=external_userid, at=event.create_time, what=change, userid=userid,
                  detail={k: v for k, v in fields.items() if k in ("State", "Source", "FailReason")}).save()
    Customer(*keys.customer(corp_id, external_userid)).update(actions=[
        Customer.entity.set(Customer),
        Customer.external_userid.set(external_userid),
        Customer.first_seen_at.set(Customer.first_seen_at | event.create_time),
    ])
    applied = apply_versioned(Follow(*keys.follow(corp_id, external_userid, userid)),
                              version_of(event.create_time, RANK[change]),
                              _follow_actions(event, corp_id, external_userid, userid))
    outcomes = ["applied" if applied else "stale"]
    if change in WITH_WECOM_CALLS:
        client = for_corp(corp_id)
        if change in WELCOMED and text(fields, "WelcomeCode"):
            outcomes.append(welcome.send_for(event, client))  # first: it has a 20-second window
        outcomes.append(profile.on_contact_event(event, client))
    return ",".join(outcomes)


def _follow_actions(event: CallbackEvent, corp_id: str, external_userid: str, userid: str) -> list:
    change, fields = event.change_type, event.fields
    actions = [
        Follow.external_userid.set(external_userid),
        Follow.userid.set(userid),
        Follow.GSI1PK.set(keys.follows_of_staff(corp_id, userid)),
        Follow.GSI1SK.set(f"{keys.FOLLOW_PREFIX}{external_userid}"),
    ]
    if change in STATUS:
        actions.append(Follow.status.set(STATUS[change]))
    else:
        actions.append(Follow.status.set(Follow.status | "active"))
    if change in ("add_external_contact", "add_half_external_contact"):
        actions.append(Follow.added_at.set(event.create_time))
        actions.append(Follow.delete_source.remove())
        state = text(fields, "State")
        actions.append(Follow.state.set(state) if state else Follow.state.remove())
    if change == "del_external_contact":
        actions.append(Follow.delete_source.set(text(fields, "Source") or "staff"))
    if change == "transfer_fail":
        actions.append(Follow.transfer_fail_reason.set(text(fields, "FailReason") or "unknown"))
    return actions
