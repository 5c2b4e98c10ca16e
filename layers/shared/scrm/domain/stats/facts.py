"""Which changes of the table are facts the daily figures count, and how each one counts.

A stream record is one item's change with its old and new image (NEW_AND_OLD_IMAGES), so a
record says by itself what changed: no other record, and no order between records, is needed
to read it. Each fact carries its own identity (its marker makes it count once however often
the record arrives), its own time (figures are per China business day of when it happened,
not of when it was projected) and who is credited:

| item change | metric | day of | identity | credited |
|---|---|---|---|---|
| a Follow becomes active/half with its add time known, from absent, deleted, or live without an add time | new_customers | `added_at` | customer, staff, `added_at` | the staff member, their store, region and branch, the corp |
| a Follow becomes `deleted_by_customer` | lost_customers | the event's CreateTime (`version` // 10) | customer, staff, `version` | as above |
| a Follow becomes `deleted_by_staff`, unless its `delete_source` is DELETE_BY_TRANSFER | deleted_customers | as above | as above | as above |
| a Welcome becomes `sent` | welcomes_sent | `sent_at` | the welcome (customer, staff, WelcomeCode) | as above |
| a Coupon is inserted | coupons_issued | `issued_at` | code | `staff_userid`, `store_id`, the corp |
| a Coupon goes `issued` -> `redeemed` | coupons_redeemed | `redeemed_at` | code | `redeemed_store_id`, `staff_userid` (who brought the customer), the corp |

Why an add needs its add time: a follow we had never seen can become live through an edit
event or a profile fetch (a customer added before this system ran); the add time WeCom lists
then arrives with the fetch, and the customer counts on the day they really added, not today.
The same identity (customer, staff, add time) also keeps an add from counting twice when the
add event and the reconciliation both report it.

The nightly reconciliation writes the same items, so what it recovers counts the same way:
a lost add counts as new_customers on the day WeCom says the customer added (a past day's
figure can grow overnight); a relation WeCom no longer lists becomes deleted_by_staff
(`delete_source` "reconcile") and counts as deleted_customers on the night it was noticed,
the only time known; a half relation found active counts nothing (it counted when added).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from scrm.platform.config import business_day
from scrm.store import keys

METRICS = ("new_customers", "lost_customers", "deleted_customers", "welcomes_sent", "coupons_issued",
           "coupons_redeemed")
LIVE = ("active", "half")
# del_external_contact's Source when WeCom removed the relation for an on-job transfer (FACTS §3.2)
TRANSFER_SOURCE = "DELETE_BY_TRANSFER"
COUNTED_ENTITIES = ("Follow", "Welcome", "Coupon")

_deserializer = TypeDeserializer()


@dataclass(frozen=True)
class Fact:
    corp_id: str
    metric: str
    key: str  # the fact's identity within its metric
    at: int  # epoch seconds of the fact itself
    staff: str | None = None
    store: str | None = None  # credited as given (coupons)
    placed: bool = False  # credit the staff member's store, region and branch as the org tree places them

    @property
    def day(self) -> str:
        return business_day(self.at)


class BadRecord(ValueError):
    """A stream record of a counted entity that cannot be read (it is retried, then set aside)."""


def _image(raw: dict | None) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in (raw or {}).items()}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, Decimal)) and not isinstance(value, bool) else None


def _at(value: Any) -> int:
    at = _int(value)
    if not at:
        raise ValueError("the fact has no time")
    return at


def facts_of(record: dict) -> list[Fact]:
    """The facts one stream record (Lambda's shape) carries; [] for everything not counted."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return []  # a removal (TTL) is never a fact of the day
    change = record.get("dynamodb") or {}
    entity = ((change.get("NewImage") or {}).get("entity") or {}).get("S")
    if entity not in COUNTED_ENTITIES:
        return []
    try:
        new, old = _image(change.get("NewImage")), _image(change.get("OldImage"))
        corp_id = keys.corp_of(new["PK"])
        return {"Follow": _follow, "Welcome": _welcome, "Coupon": _coupon}[entity](corp_id, new, old)
    except (KeyError, TypeError, ValueError) as err:
        raise BadRecord(f"{entity} record {record.get('eventID')}: {type(err).__name__}") from err


def _follow(corp_id: str, new: dict, old: dict) -> list[Fact]:
    external_userid, userid = str(new["external_userid"]), str(new["userid"])
    status, was = new.get("status"), old.get("status")
    added_at, version = _int(new.get("added_at")), _int(new.get("version")) or 0
    who = {"staff": userid, "placed": True}
    if status in LIVE:
        if added_at and (was not in LIVE or not _int(old.get("added_at"))):
            return [Fact(corp_id, "new_customers", f"{external_userid}{keys.SEP}{userid}{keys.SEP}{added_at}",
                         added_at, **who)]
        return []
    metric = None
    if status == "deleted_by_customer" and was != status:
        metric = "lost_customers"
    elif status == "deleted_by_staff" and was != status and new.get("delete_source") != TRANSFER_SOURCE:
        metric = "deleted_customers"
    if metric is None or not version:
        return []
    return [Fact(corp_id, metric, f"{external_userid}{keys.SEP}{userid}{keys.SEP}{version}", version // 10, **who)]


def _welcome(corp_id: str, new: dict, old: dict) -> list[Fact]:
    if new.get("status") != "sent" or old.get("status") == "sent":
        return []
    at = _int(new.get("sent_at")) or _at(new.get("claimed_at"))
    return [Fact(corp_id, "welcomes_sent", f"{new['external_userid']}{keys.SEP}{new['SK']}", at,
                 staff=str(new["userid"]), placed=True)]


def _coupon(corp_id: str, new: dict, old: dict) -> list[Fact]:
    code, staff = str(new["code"]), new.get("staff_userid") or None
    if not old:
        return [Fact(corp_id, "coupons_issued", code, _at(new.get("issued_at")), staff=staff,
                     store=new.get("store_id") or None)]
    if old.get("status") == "issued" and new.get("status") == "redeemed":
        return [Fact(corp_id, "coupons_redeemed", code, _at(new.get("redeemed_at")), staff=staff,
                     store=new.get("redeemed_store_id") or None)]
    return []
