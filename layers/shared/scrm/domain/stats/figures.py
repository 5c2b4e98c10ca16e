"""The figures' read side: one scope's days, and the ranking of the scopes under a parent.

Both are one Query of one page: a scope's counters are one partition sorted by day (a range
is bounded by MAX_DAYS), and a ranking is one partition of GSI1 sorted by value (the top
`limit`, at most MAX_RANKING). Names are looked up beside the ids in one BatchGetItem.
"""
from __future__ import annotations

import datetime as dt

from scrm.domain.stats.facts import METRICS
from scrm.platform.errors import Invalid, NotFound
from scrm.store import keys
from scrm.store.models import Corp, DailyCounter, Department, RankEntry, Staff

MAX_DAYS = 366
MAX_RANKING = 100
# scope -> the parents it is ranked in (a scope ranks in the nearest level above it that exists)
RANKED_IN = {
    "staff": ("store", "region", "branch", "corp"),
    "store": ("region", "branch", "corp"),
    "region": ("branch", "corp"),
    "branch": ("corp",),
}


def days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def daily(corp_id: str, scope: str, scope_id: str, first: dt.date, last: dt.date) -> list[dict]:
    """Every day from `first` to `last` (China business days), zeros included."""
    if last < first:
        raise Invalid("must not be before from", "to")
    if (last - first).days >= MAX_DAYS:
        raise Invalid(f"must be at most {MAX_DAYS} days after from, counting both", "to")
    rows = DailyCounter.query(keys.daily_counters(corp_id, scope, scope_id),
                              DailyCounter.SK.between(keys.day_sk(first.isoformat()), keys.day_sk(last.isoformat())))
    by_day = {row.day: row for row in rows}
    return [{"day": day, **{metric: int(getattr(by_day[day], metric) or 0) if day in by_day else 0
                            for metric in METRICS}} for day in days(first, last)]


def ranking(corp_id: str, scope: str, parent_scope: str, parent_id: str, day: str, metric: str,
            limit: int) -> list[dict]:
    """The `scope`s ranked in one parent by `metric` on `day`, highest first; equal values share
    a rank (1, 2, 2, 4) and are listed by id. Scopes with nothing that day are not listed."""
    if parent_scope not in RANKED_IN[scope]:
        raise Invalid(f"a {scope} is ranked in {', '.join(RANKED_IN[scope])}", "parent")
    if not 1 <= limit <= MAX_RANKING:
        raise Invalid(f"must be 1..{MAX_RANKING}", "limit")
    rows = RankEntry.gsi1.query(keys.ranking(corp_id, parent_scope, parent_id, scope, day, metric),
                                scan_index_forward=False, limit=limit)
    items: list[dict] = []
    for row in sorted(rows, key=lambda r: (-int(r.value), r.scope_id)):  # equal values by id
        value = int(row.value)
        rank = items[-1]["rank"] if items and items[-1]["value"] == value else len(items) + 1
        items.append({"scope_id": row.scope_id, "value": value, "rank": rank})
    names = names_of(corp_id, scope, [item["scope_id"] for item in items])
    return [{**item, "name": names.get(item["scope_id"])} for item in items]


def names_of(corp_id: str, scope: str, ids: list[str]) -> dict[str, str | None]:
    """The names of staff members or departments, by id (ids not found are left out)."""
    if not ids:
        return {}
    if scope == "staff":
        return {row.userid: row.name for row in Staff.batch_get([keys.staff(corp_id, i) for i in ids])}
    if scope == "corp":
        return {corp_id: name_of(corp_id, "corp", corp_id)}
    return {str(row.dept_id): row.name for row in Department.batch_get(
        [keys.department(corp_id, i) for i in ids if i.isdigit()])}


def name_of(corp_id: str, scope: str, scope_id: str, field: str = "scope_id") -> str | None:
    """The name of a scope of the corp; NotFound (naming `field`) if the corp has no such staff
    member or department."""
    try:
        if scope == "corp":
            return Corp.get(*keys.corp(corp_id)).name
        if scope == "staff":
            return Staff.get(*keys.staff(corp_id, scope_id)).name
        return Department.get(*keys.department(corp_id, scope_id)).name
    except (Corp.DoesNotExist, Staff.DoesNotExist, Department.DoesNotExist):
        raise NotFound(f"no such {scope} in this corp", field) from None
