"""Display names of the things an answer refers to by id: staff, departments (stores,
regions, branches), campaigns and coupon templates, in one BatchGetItem."""
from __future__ import annotations

from collections.abc import Iterable

from scrm.store import keys
from scrm.store.models import Campaign, CouponTemplate, Department, Entity, Staff

KINDS = ("staff", "department", "campaign", "template")


def _key(corp_id: str, kind: str, ref: str) -> tuple[str, str] | None:
    if not ref or keys.SEP in ref:
        return None
    if kind == "staff":
        return keys.staff(corp_id, ref)
    if kind == "department":
        return keys.department(corp_id, int(ref)) if ref.isdigit() else None
    if kind == "campaign":
        return keys.campaign(corp_id, ref)
    return keys.coupon_template(corp_id, ref)


_NAMED = (Staff, Department, Campaign, CouponTemplate)


def names(corp_id: str, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """{(kind, id): name} for every ref; None where nothing of that id is stored (or it has no name)."""
    wanted: dict[tuple[str, str], tuple[str, str]] = {}
    found: dict[tuple[str, str], str | None] = {}
    for kind, ref in set(refs):
        key = _key(corp_id, kind, ref)
        found[(kind, ref)] = None
        if key is not None:
            wanted[key] = (kind, ref)
    if wanted:
        for row in Entity.batch_get(list(wanted)):
            ref = wanted.get((row.PK, row.SK))
            if ref is not None and isinstance(row, _NAMED):
                found[ref] = row.name or None
    return found
