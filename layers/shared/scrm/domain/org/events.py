"""change_contact: staff and departments as the address book reports them.

Staff are placed in a store from the stored department rows at once (scrm.domain.org.tree), so a new
member has a store before the nightly full sync; a party change re-places the departments.
"""
from __future__ import annotations

from scrm.domain.event_fields import Permanent, integer, text, version_of
from scrm.domain.org import tree as org
from scrm.store import keys
from scrm.store.models import Department, Staff, apply_versioned
from scrm.wecom.callback.events import CallbackEvent

USER_RANK = {"create_user": 1, "update_user": 1, "delete_user": 2}
PARTY_RANK = {"create_party": 1, "update_party": 1, "delete_party": 2}
EXITED = "5"  # WeCom member Status 5: the member has left


def handle(event: CallbackEvent) -> str:
    change = event.change_type
    if change in USER_RANK:
        return _user(event)
    if change in PARTY_RANK:
        return _party(event)
    return "stored"


def _departments(fields: dict) -> list[int] | None:
    raw = text(fields, "Department")
    if raw is None:
        return None
    try:
        return [int(d) for d in raw.split(",") if d.strip()]
    except ValueError:
        raise Permanent("bad_Department") from None


def _user(event: CallbackEvent) -> str:
    fields, change = event.fields, event.change_type
    userid = text(fields, "UserID")
    if not userid:
        raise Permanent("missing_user_id")
    version = version_of(event.create_time, USER_RANK[change])
    if change == "delete_user" or text(fields, "Status") == EXITED:
        actions = org.resign_actions(event.corp_id, userid, event.create_time)
        return "applied" if apply_versioned(Staff(*keys.staff(event.corp_id, userid)), version, actions) else "stale"
    new_userid = text(fields, "NewUserID")
    target = new_userid or userid
    actions = [Staff.userid.set(target), Staff.status.set("active"), Staff.resigned_at.remove(),
               Staff.customers_left_behind.remove()]
    for attr, field in ((Staff.name, "Name"), (Staff.mobile, "Mobile")):
        value = text(fields, field)
        if value is not None:
            actions.append(attr.set(value))
    departments = _departments(fields)
    if departments is not None:
        actions.append(Staff.departments.set(departments))
    main = _main_department(event.corp_id, target, integer(fields, "MainDepartment"), departments)
    if main is None:
        actions += org.listed_actions(event.corp_id, target)
    else:
        actions.append(Staff.main_department.set(main))
        actions += org.placement_actions(event.corp_id, target, main)
    applied = apply_versioned(Staff(*keys.staff(event.corp_id, target)), version, actions)
    if new_userid and new_userid != userid:
        apply_versioned(Staff(*keys.staff(event.corp_id, userid)), version,
                        [Staff.userid.set(userid), Staff.status.set("renamed"), Staff.renamed_to.set(new_userid)])
    return "applied" if applied else "stale"


def _main_department(corp_id: str, userid: str, main: int | None, departments: list[int] | None) -> int | None:
    """MainDepartment if sent; else (events since 2022 carry only Department) the stored one
    while the member is still in it, or the first listed department."""
    if main is not None or not departments:
        return main
    try:
        stored = Staff.get(*keys.staff(corp_id, userid)).main_department
    except Staff.DoesNotExist:
        stored = None
    return stored if stored in departments else departments[0]


def _party(event: CallbackEvent) -> str:
    fields, change = event.fields, event.change_type
    dept_id = integer(fields, "Id")
    if dept_id is None:
        raise Permanent("missing_department_id")
    actions = [Department.dept_id.set(dept_id), Department.deleted.set(change == "delete_party")]
    name = text(fields, "Name")
    if name is not None:
        actions.append(Department.name.set(name))
    parent = integer(fields, "ParentId")
    if parent is not None:
        actions.append(Department.parent_id.set(parent))
    order = integer(fields, "Order")
    if order is not None:
        actions.append(Department.order.set(order))
    row = Department(*keys.department(event.corp_id, dept_id))
    if not apply_versioned(row, version_of(event.create_time, PARTY_RANK[change]), actions):
        return "stale"
    org.relevel(event.corp_id)  # levels follow the tree: a new store, a moved region...
    return "applied"
