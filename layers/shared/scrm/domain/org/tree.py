"""The org tree: WeCom departments placed as branch → region → store, staff placed in stores.

Placement rule (per corp, on the Corp row's `org_rule`; DEFAULT_RULE when unset):

* depth mode, `{"mode": "depth", "branch": 2, "region": 3, "store": 4}`: a department's
  level is decided by its depth in the WeCom tree (the root department, the company, is
  depth 1). `branch` and `region` may be left out for flatter companies; `store` is
  required; given depths must increase branch < region < store (≤ 15, WeCom's nesting
  limit). Departments at other depths are `other`: those below a store (counters,
  shifts...) belong to that store.
* explicit mode, `{"mode": "explicit", "branches": [2], "regions": {"3": 2, "9": null},
  "stores": {"10": 3, "11": null}}`: departments are named per level. `regions` and
  `stores` are either lists of department ids or maps id → the department of the level
  above it (a region's branch, a store's region) for trees that do not nest that way;
  `null` (or the list form) means "the nearest such ancestor in the tree".

Every department records its own level and the store / region / branch it sits in (itself
or its nearest ancestor of that level). A staff member takes the placement of their main
department; staff whose main department is in no store are "unassigned": kept, listed
under NO_STORE and reported by every full sync, never dropped.

Writers: `full_sync` (the org-sync job, SYNC_KIND: command and nightly schedule) rewrites what differs from WeCom,
guarded by the same versions as the address-book events (scrm.domain.org.events), so a sync never
undoes a newer event and vice versa; the address-book handler places a new or moved staff
member from the stored department rows at once, and `relevel` re-places departments after
a party event or a rule change. Staff whose department moved keep their old placement until
the next full sync heals it.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pynamodb.exceptions import UpdateError
from pynamodb.models import Model

from scrm.domain.event_fields import version_of
from scrm.jobs.kinds import Chunk, ChunkReport, Context, Done, Kind, Page
from scrm.platform.errors import Invalid, NotFound, ScrmError
from scrm.store import keys, paging, read_cache
from scrm.store.models import (
    Corp,
    Department,
    Follow,
    Staff,
    apply_versioned,
    condition_failed,
)
from scrm.wecom.apis.client import WeComClient

DEFAULT_RULE = {"mode": "depth", "branch": 2, "region": 3, "store": 4}
LEVELS = ("branch", "region", "store")
MAX_DEPTH = 15  # WeCom nests departments at most 15 levels deep
NO_STORE = "none"  # staff_by_store partition of staff outside every store (dept ids are numbers)
ROOT_PARENT = 0  # parentid of the root department
# Full-sync event ranks, as in scrm.domain.org.events: a deletion outranks an edit.
SYNC_RANK, SYNC_DELETE_RANK = 1, 2
_DEPT_ID = re.compile(r"^[1-9][0-9]{0,9}$")


@dataclass(frozen=True)
class Placement:
    level: str = "other"  # branch | region | store | other
    depth: int | None = None
    store_id: str | None = None
    region_id: str | None = None
    branch_id: str | None = None

    def as_dict(self) -> dict:
        return {"store_id": self.store_id, "region_id": self.region_id, "branch_id": self.branch_id}


# --- the rule -------------------------------------------------------------------------------
def validate_rule(rule: Any) -> dict:
    """The rule in its stored form; Invalid names the faulty field."""
    if not isinstance(rule, dict):
        raise Invalid("must be an object", "org_rule")
    if rule.get("mode") == "depth":
        return _depth_rule(rule)
    if rule.get("mode") == "explicit":
        return _explicit_rule(rule)
    raise Invalid("must be 'depth' or 'explicit'", "org_rule.mode")


def _depth_rule(rule: dict) -> dict:
    unknown = set(rule) - {"mode", *LEVELS}
    if unknown:
        raise Invalid(f"unknown keys {sorted(unknown)}", "org_rule")
    depths: dict[str, int] = {}
    for level in LEVELS:
        value = rule.get(level)
        if value is None and level != "store":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DEPTH:
            raise Invalid(f"must be a depth 1..{MAX_DEPTH}", f"org_rule.{level}")
        depths[level] = value
    ordered = list(depths.values())
    if ordered != sorted(set(ordered)):
        raise Invalid("depths must increase: branch < region < store", "org_rule")
    return {"mode": "depth", **depths}


def _dept_id(value: Any, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and _DEPT_ID.match(value):
        return int(value)
    raise Invalid("must be a department id", field)


def _level_map(value: Any, field: str) -> dict[int, int | None]:
    if isinstance(value, list):
        return {_dept_id(v, field): None for v in value}
    if isinstance(value, dict):
        return {_dept_id(k, field): None if v is None else _dept_id(v, f"{field}.{k}") for k, v in value.items()}
    raise Invalid("must be a list of department ids or a map id -> parent id", field)


def _explicit_rule(rule: dict) -> dict:
    unknown = set(rule) - {"mode", "branches", "regions", "stores"}
    if unknown:
        raise Invalid(f"unknown keys {sorted(unknown)}", "org_rule")
    branches = _level_map(rule.get("branches", []), "org_rule.branches")
    regions = _level_map(rule.get("regions", []), "org_rule.regions")
    stores = _level_map(rule.get("stores"), "org_rule.stores")
    if not stores:
        raise Invalid("at least one store is required", "org_rule.stores")
    if branches.keys() & regions.keys() or branches.keys() & stores.keys() or regions.keys() & stores.keys():
        raise Invalid("a department can have one level only", "org_rule")
    for field, level, above in (("regions", regions, branches), ("stores", stores, regions)):
        for dept, parent in level.items():
            if parent is not None and parent not in above:
                raise Invalid("the parent must be listed in the level above", f"org_rule.{field}.{dept}")
    return {"mode": "explicit", "branches": sorted(branches),
            "regions": {str(k): v for k, v in regions.items()}, "stores": {str(k): v for k, v in stores.items()}}


def rule_of(corp_id: str) -> dict:
    try:
        corp = Corp.get(*keys.corp(corp_id))
    except Corp.DoesNotExist:
        return DEFAULT_RULE
    return corp.org_rule or DEFAULT_RULE


def set_rule(corp_id: str, rule: Any) -> None:
    """Store a corp's rule and re-place its stored departments by it (staff: next full sync)."""
    stored = validate_rule(rule)
    try:
        Corp(*keys.corp(corp_id)).update(actions=[Corp.org_rule.set(stored)], condition=Corp.PK.exists())
    except UpdateError as err:
        if condition_failed(err):
            raise NotFound("corp is not registered", "corp_id") from None
        raise
    relevel(corp_id)


# --- placing departments (pure) -------------------------------------------------------------
def place(parents: Mapping[int, int | None], rule: dict) -> dict[int, Placement]:
    """Placement of every department, given each one's parent (ROOT_PARENT for the root,
    None when unknown). A department whose chain does not reach the root has no depth."""
    explicit = rule["mode"] == "explicit"
    if explicit:
        levels = {**{int(d): "branch" for d in rule["branches"]}, **{int(d): "region" for d in rule["regions"]},
                  **{int(d): "store" for d in rule["stores"]}}
        # a store's region / a region's branch when the tree does not say it
        overrides = {int(d): p for d, p in {**rule["regions"], **rule["stores"]}.items() if p is not None}
    else:
        by_depth = {rule[level]: level for level in LEVELS if level in rule}
    placed: dict[int, Placement] = {}

    def visit(dept: int, trail: frozenset[int]) -> Placement:
        if dept in placed:
            return placed[dept]
        if dept in trail:  # a cycle in inconsistent data: place nowhere rather than loop
            return Placement()
        trail = trail | {dept}
        parent = parents[dept]
        above = visit(parent, trail) if parent in parents else Placement()
        depth = 1 if parent == ROOT_PARENT else (above.depth + 1 if above.depth else None)
        level = levels.get(dept, "other") if explicit else by_depth.get(depth, "other")
        context = above
        if explicit and overrides.get(dept) in parents:
            context = visit(overrides[dept], trail)
        ids = context.as_dict()
        if level in LEVELS:
            for lower in LEVELS[LEVELS.index(level) + 1:]:
                ids[f"{lower}_id"] = None
            ids[f"{level}_id"] = str(dept)
        placed[dept] = Placement(level, depth, **ids)
        return placed[dept]

    for dept in parents:
        visit(dept, frozenset())
    return placed


# --- row helpers ----------------------------------------------------------------------------
def _same(row: Model, desired: dict) -> bool:
    return all(getattr(row, name) == value for name, value in desired.items())


def _actions(cls: type[Model], desired: dict) -> list:
    return [getattr(cls, name).set(value) if value is not None else getattr(cls, name).remove()
            for name, value in desired.items()]


def _department_rows(corp_id: str) -> list[Department]:
    return list(Department.query(keys.org(corp_id), Department.SK.startswith(keys.department(corp_id, "")[1]),
                                 consistent_read=True))


def _department_placement(corp_id: str, dept_id: int, p: Placement) -> dict:
    store = p.level == "store"
    return {"level": p.level, "depth": p.depth, **p.as_dict(),
            "GSI1PK": keys.stores(corp_id) if store else None,
            "GSI1SK": keys.store_sort(dept_id) if store else None}


def _staff_placement(corp_id: str, userid: str, p: Placement | None) -> dict:
    ids = p.as_dict() if p else Placement().as_dict()
    return {**ids, "GSI1PK": keys.staff_by_store(corp_id, ids["store_id"] or NO_STORE),
            "GSI1SK": f"{keys.STAFF_PREFIX}{userid}", **_listed(corp_id, userid)}


def _listed(corp_id: str, userid: str) -> dict:
    return {"GSI2PK": keys.staff_of_corp(corp_id), "GSI2SK": userid}


def listed_actions(corp_id: str, userid: str) -> list:
    """Staff update actions keeping `userid` in the corp's staff listing (full sync diffs it)."""
    return _actions(Staff, _listed(corp_id, userid))


def department_placement(corp_id: str, dept_id: int) -> Placement | None:
    """The stored placement of a department (None if unknown or deleted)."""
    try:
        row = Department.get(*keys.department(corp_id, dept_id))
    except Department.DoesNotExist:
        return None
    if row.deleted:
        return None
    return Placement(row.level or "other", row.depth, row.store_id, row.region_id, row.branch_id)


def placement_actions(corp_id: str, userid: str, main_department: int) -> list:
    """Staff update actions placing `userid` by the stored department rows (address-book events)."""
    return _actions(Staff, _staff_placement(corp_id, userid, department_placement(corp_id, main_department)))


def customers_left_behind(corp_id: str, userid: str) -> int:
    """Customers the staff member still has an active follow relation with."""
    return Follow.gsi1.count(keys.follows_of_staff(corp_id, userid), filter_condition=Follow.status == "active")


def resign_actions(corp_id: str, userid: str, at: int) -> list:
    """Staff update actions recording that `userid` left the address book at `at`."""
    return _actions(Staff, {"userid": userid, "status": "resigned", "resigned_at": at,
                            "customers_left_behind": customers_left_behind(corp_id, userid),
                            **_listed(corp_id, userid)})


def relevel(corp_id: str) -> int:
    """Re-place the stored departments by the corp's rule, and give unassigned staff the
    store their main department now has (a create_user handled before its create_party).
    Returns how many rows changed."""
    stored = _department_rows(corp_id)
    rows = {row.dept_id: row for row in stored if not row.deleted}
    placed = place({d: None if r.parent_id is None else int(r.parent_id) for d, r in rows.items()},
                   rule_of(corp_id))
    changed = 0
    for row in stored:
        # a deleted department leaves the store list; the others take their placement
        desired = ({"GSI1PK": None, "GSI1SK": None} if row.deleted
                   else _department_placement(corp_id, row.dept_id, placed[row.dept_id]))
        if not _same(row, desired):
            row.update(actions=_actions(Department, desired), condition=Department.PK.exists())
            changed += 1
    for staff in Staff.gsi1.query(keys.staff_by_store(corp_id, NO_STORE), filter_condition=Staff.status == "active"):
        p = placed.get(staff.main_department) if staff.main_department is not None else None
        if p and p.store_id:
            staff.update(actions=_actions(Staff, _staff_placement(corp_id, staff.userid, p)))
            changed += 1
    return changed


# --- full sync ------------------------------------------------------------------------------
def _main_department(user: dict) -> int | None:
    main = user.get("main_department")
    if main:
        return int(main)
    departments = user.get("department") or []
    return int(departments[0]) if departments else None


def _wecom_users(client: WeComClient, parents: Mapping[int, int | None]) -> dict[str, dict]:
    """Every member: one user/list per top department (an app may see several subtrees)."""
    users: dict[str, dict] = {}
    for dept in sorted(d for d, parent in parents.items() if parent not in parents):
        for user in client.list_users(dept, fetch_child=True).get("userlist") or []:
            users[str(user["userid"])] = user
    return users


def full_sync(client: WeComClient, corp_id: str, now: float | None = None) -> dict:
    """Bring departments and staff in line with WeCom; see the module docstring.

    Report: counts of departments / branches / regions / stores / staff as WeCom has them,
    `unassigned_staff` (userids in no store), `resigned` ([{userid, customers_left_behind}]
    newly marked), `departments_removed`, `written` (rows changed) and `stale` (rows an event
    newer than this sync had already updated, left alone)."""
    started = int(time.time() if now is None else now)
    rule = rule_of(corp_id)
    departments = client.list_departments().get("department") or []
    if not departments:  # a permission problem, not an empty company: resign nobody
        raise ScrmError("wecom_listed_no_departments")
    parents = {int(d["id"]): int(d.get("parentid") or ROOT_PARENT) for d in departments}
    users = _wecom_users(client, parents)
    placed = place(parents, rule)
    levels = [p.level for p in placed.values()]
    report: dict[str, Any] = {"corp_id": corp_id, "departments": len(departments),
                              "branches": levels.count("branch"), "regions": levels.count("region"),
                              "stores": levels.count("store"), "staff": len(users), "unassigned_staff": [], "resigned": [],
                              "departments_removed": [], "written": 0, "stale": 0}

    def write(row: Model, desired: dict, rank: int) -> None:
        if apply_versioned(row, version_of(started, rank), _actions(type(row), desired)):
            report["written"] += 1
        else:
            report["stale"] += 1

    stored_departments = {row.dept_id: row for row in _department_rows(corp_id)}
    for dept in departments:
        dept_id = int(dept["id"])
        desired = {"dept_id": dept_id, "parent_id": parents[dept_id], "deleted": False,
                   **{k: dept[k] for k in ("name", "order") if dept.get(k) is not None},
                   **_department_placement(corp_id, dept_id, placed[dept_id])}
        row = stored_departments.get(dept_id)
        if row is None or not _same(row, desired):
            write(row or Department(*keys.department(corp_id, dept_id)), desired, SYNC_RANK)
    for dept_id, row in stored_departments.items():
        if dept_id not in parents and not row.deleted:
            write(row, {"deleted": True, "GSI1PK": None, "GSI1SK": None}, SYNC_DELETE_RANK)
            report["departments_removed"].append(dept_id)

    stored_staff = {row.userid: row for row in Staff.gsi2.query(keys.staff_of_corp(corp_id))}
    for userid, user in users.items():
        row = stored_staff.get(userid)
        if str(user.get("status")) == "5":  # listed but exited: resigned like a removed member
            if row is None or row.status != "resigned":
                _resign(row, corp_id, userid, started, write, report)
            continue
        main = _main_department(user)
        placement = placed.get(main) if main is not None else None
        desired = {"userid": userid, "status": "active", "resigned_at": None, "customers_left_behind": None,
                   "departments": [int(d) for d in user.get("department") or []], "main_department": main,
                   **{k: user[k] for k in ("name", "mobile") if user.get(k)},
                   **_staff_placement(corp_id, userid, placement)}
        if not desired["store_id"]:
            report["unassigned_staff"].append(userid)
        if row is None or not _same(row, desired):
            write(row or Staff(*keys.staff(corp_id, userid)), desired, SYNC_RANK)
    for userid, row in stored_staff.items():
        if userid not in users and row.status == "active":
            _resign(row, corp_id, userid, started, write, report)
    return report


def _resign(row: Staff | None, corp_id: str, userid: str, at: int, write: Callable, report: dict) -> None:
    left_behind = customers_left_behind(corp_id, userid)
    write(row or Staff(*keys.staff(corp_id, userid)),
          {"userid": userid, "status": "resigned", "resigned_at": at, "customers_left_behind": left_behind,
           **_listed(corp_id, userid)}, SYNC_DELETE_RANK)
    report["resigned"].append({"userid": userid, "customers_left_behind": left_behind})


# --- the full sync as a job (one chunk: resigned staff are only known once all of WeCom is read) ---
LIST_CAP = 1000  # entries of each list kept in a job's result (the counts are complete)


def _plan_sync(ctx: Context, cursor: object) -> Page:
    return Page([Chunk({})])


def _run_sync(ctx: Context, payload: dict) -> Done:
    report = full_sync(ctx.client(), ctx.corp_id)
    counts = {f"{name}_count": len(value) for name, value in report.items() if isinstance(value, list)}
    capped = {name: value[:LIST_CAP] if isinstance(value, list) else value for name, value in report.items()}
    return Done(result={**capped, **counts})


def _finish_sync(ctx: Context, reports: list[ChunkReport]) -> dict:
    [chunk] = reports
    return chunk.result if chunk.state == "done" else {"corp_id": ctx.corp_id, "error": chunk.error or chunk.state}


SYNC_KIND = Kind("org-sync", plan=_plan_sync, run=_run_sync, finish=_finish_sync, chunk_seconds=600, window=1)


# --- reads ----------------------------------------------------------------------------------
def _staff_row(corp_id: str, userid: str) -> Staff | None:
    try:
        return Staff.get(*keys.staff(corp_id, userid))
    except Staff.DoesNotExist:
        return None


def store_of(corp_id: str, userid: str) -> dict | None:
    """{store_id, region_id, branch_id} of a staff member; None if unknown or in no store.
    The staff row is read once per unit of work (scrm.store.read_cache)."""
    staff = read_cache.cached("staff", (corp_id, userid), lambda: _staff_row(corp_id, userid))
    if staff is None or not staff.store_id:
        return None
    return {"store_id": staff.store_id, "region_id": staff.region_id, "branch_id": staff.branch_id}


def works_at(corp_id: str, userid: str, store_id: str) -> bool:
    """Whether `userid` is active staff placed in store `store_id`."""
    try:
        staff = Staff.get(*keys.staff(corp_id, userid))
    except Staff.DoesNotExist:
        return False
    return staff.status == "active" and staff.store_id == store_id


def scopes_of(corp_id: str, userid: str) -> dict[str, str]:
    """Where a staff member's figures roll up: themselves, their store, region, branch, corp."""
    scopes = {"staff": userid, "corp": corp_id}
    try:
        staff = Staff.get(*keys.staff(corp_id, userid))
    except Staff.DoesNotExist:
        return scopes
    scopes.update(store=staff.store_id or "", region=staff.region_id or "", branch=staff.branch_id or "")
    return scopes


def store_dict(row: Department) -> dict:
    return {"store_id": str(row.dept_id), "name": row.name, "region_id": row.region_id,
            "branch_id": row.branch_id, "parent_id": row.parent_id, "depth": row.depth}


def staff_dict(row: Staff) -> dict:
    return {"userid": row.userid, "name": row.name, "status": row.status, "store_id": row.store_id,
            "region_id": row.region_id, "branch_id": row.branch_id, "main_department": row.main_department,
            "departments": row.departments, "resigned_at": row.resigned_at,
            "customers_left_behind": row.customers_left_behind}


def list_stores(corp_id: str, *, branch_id: str | None = None, limit: int = 50,
                cursor: str | None = None) -> tuple[list[dict], str | None]:
    """Stores in department-id order, optionally of one branch."""
    condition = Department.branch_id == branch_id if branch_id else None
    rows, next_cursor = paging.page(Department.gsi1.query, keys.stores(corp_id), hash_attr="GSI1PK",
                                    limit=limit, cursor=cursor, filter_condition=condition)
    return [store_dict(row) for row in rows], next_cursor


def stores_of_branch(corp_id: str, branch_id: str) -> list[str]:
    return [str(row.dept_id) for row in Department.gsi1.query(keys.stores(corp_id),
                                                             filter_condition=Department.branch_id == branch_id)]


def list_staff(corp_id: str, *, store_id: str | None = None, status: str | None = None, limit: int = 50,
               cursor: str | None = None) -> tuple[list[dict], str | None]:
    """Staff of one store (NO_STORE: the unassigned), or of the whole corp; optionally by status."""
    condition = Staff.status == status if status else None
    if store_id is None:
        rows, next_cursor = paging.page(Staff.gsi2.query, keys.staff_of_corp(corp_id), hash_attr="GSI2PK",
                                        limit=limit, cursor=cursor, filter_condition=condition)
    else:
        rows, next_cursor = paging.page(Staff.gsi1.query, keys.staff_by_store(corp_id, store_id),
                                        hash_attr="GSI1PK", limit=limit, cursor=cursor,
                                        filter_condition=condition)
    return [staff_dict(row) for row in rows], next_cursor
