"""How every ops answer is written, in one place: the resolver's serializer (scrm.entry.ops.api).

A route returns plain data with ids and epoch seconds; this module adds what a person needs
and writes it, for every route, nested objects and lists included:

* JSON as UTF-8 with Chinese as Chinese (no \\u escapes).
* Times: beside every epoch field, `<field>_iso`, ISO 8601 in China time
  ("2026-12-01T10:00:00+08:00"; null beside null). An epoch field is one whose name ends
  in `_at`, or is `at`, `valid_from` or `valid_until` (EPOCH_FIELD).
* Names beside ids: beside each id field of NAMED, its name field (null if unknown), read
  in one BatchGetItem per answer. An object that has a `name` of its own (a store, a staff
  member, a campaign, a template) is that thing: its own id (the first of SELF it has) is
  not named again. A contact way's `owner_id` is named by its `owner_kind` (`owner_name`),
  a figure's `scope_id` by its `scope` (`scope_name`).

A new route gets all of this by returning data whose fields follow these names.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from scrm.platform.times import iso
from scrm.store.names import names

EPOCH_FIELD = re.compile(r"[a-z_]*_at|at|valid_from|valid_until")
EPOCH_MAX = 4102444800  # 2100-01-01: a larger number in such a field is not epoch seconds
ISO_SUFFIX = "_iso"
NAMED: dict[str, tuple[str, str]] = {  # id field -> (kind, name field)
    "userid": ("staff", "staff_name"),
    "staff_userid": ("staff", "staff_name"),
    "redeemed_by": ("staff", "redeemed_by_name"),
    "store_id": ("department", "store_name"),
    "redeemed_store_id": ("department", "redeemed_store_name"),
    "region_id": ("department", "region_name"),
    "branch_id": ("department", "branch_name"),
    "campaign_id": ("campaign", "campaign_name"),
    "template_id": ("template", "template_name"),
    "coupon_template_id": ("template", "coupon_template_name"),
}
NAMED_LISTS: dict[str, tuple[str, str]] = {"users": ("staff", "user_names")}
KIND_OF = {  # (kind field, id field, name field) -> what each kind's id names
    ("owner_kind", "owner_id", "owner_name"): {"staff": "staff", "store": "department", "campaign": "campaign"},
    ("scope", "scope_id", "scope_name"): {"staff": "staff", "store": "department", "region": "department",
                                          "branch": "department"},
}
SELF = ("userid", "store_id", "campaign_id", "template_id")


def _own_id(obj: dict) -> str | None:
    return next((f for f in SELF if f in obj), None) if "name" in obj else None


def _refs(obj: dict) -> list[tuple[str, str, str]]:
    """(id field, kind, name field) of each single id `obj` carries to be named."""
    own = _own_id(obj)
    refs = [(f, *NAMED[f]) for f in obj if f in NAMED and f != own]
    for (kind_field, id_field, name_field), kinds in KIND_OF.items():
        kind = obj.get(kind_field)
        if isinstance(kind, str) and kind in kinds and id_field in obj:
            refs.append((id_field, kinds[kind], name_field))
    return refs


def _collect(value: Any, wanted: set[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for field, kind, _ in _refs(value):
            if isinstance(value[field], str):
                wanted.add((kind, value[field]))
        for field, (kind, _) in NAMED_LISTS.items():
            if isinstance(value.get(field), list):
                wanted.update((kind, v) for v in value[field] if isinstance(v, str))
        for item in value.values():
            _collect(item, wanted)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, wanted)


def _epoch_iso(value: Any) -> str | None:
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) and 0 <= value <= EPOCH_MAX:
        return iso(float(value))
    return None


def _dress(value: Any, known: dict[tuple[str, str], str | None]) -> Any:
    if isinstance(value, dict):
        named = {field: (kind, name) for field, kind, name in _refs(value)}
        out: dict[str, Any] = {}
        for field, item in value.items():
            out[field] = _dress(item, known)
            if EPOCH_FIELD.fullmatch(field) and f"{field}{ISO_SUFFIX}" not in value:
                out[f"{field}{ISO_SUFFIX}"] = _epoch_iso(item)
            if field in named and named[field][1] not in value:
                kind, name = named[field]
                out[name] = known.get((kind, item)) if isinstance(item, str) else None
            if field in NAMED_LISTS and NAMED_LISTS[field][1] not in value:
                kind, name = NAMED_LISTS[field]
                out[name] = [known.get((kind, v)) for v in item] if isinstance(item, list) else None
        return out
    if isinstance(value, (list, tuple)):
        return [_dress(item, known) for item in value]
    return value


def dress(data: Any, corp_id: str | None) -> Any:
    """`data` with the ISO times and names beside its epoch and id fields."""
    wanted: set[tuple[str, str]] = set()
    if corp_id:
        _collect(data, wanted)
    return _dress(data, names(corp_id, wanted) if wanted and corp_id else {})


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(data: Any, corp_id: str | None) -> str:
    """The answer's JSON text: dressed, Chinese as Chinese."""
    return json.dumps(dress(data, corp_id), ensure_ascii=False, separators=(",", ":"), default=_plain)
