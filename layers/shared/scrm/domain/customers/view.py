"""The customer view: profile, follows with tag names, attribution, timeline and coupons."""
from __future__ import annotations

from scrm.domain import coupons
from scrm.domain.customers.profile import PROFILE_FIELDS
from scrm.domain.tags.corp_tags import describe_tags
from scrm.store import keys
from scrm.store.models import Customer, Follow, TimelineEntry, Touch


def _touch_view(touch: Touch | None) -> dict | None:
    return dict(touch.attribute_values) if touch is not None else None


def _coupons(corp_id: str, external_userid: str) -> list[dict]:
    return [{"code": c.code, "template_id": c.template_id, "status": c.status, "issued_at": c.issued_at,
             "valid_until": c.valid_until, "redeemed_at": c.redeemed_at}
            for c in coupons.customer_coupons(corp_id, external_userid)]


def customer_view(corp_id: str, external_userid: str, *, timeline_limit: int = 50) -> dict | None:
    """Everything about one customer: three reads of its partition plus the tag names."""
    pk = keys.customer_pk(corp_id, external_userid)
    try:
        customer: Customer | None = Customer.get(*keys.customer(corp_id, external_userid))
    except Customer.DoesNotExist:
        customer = None
    follows = list(Follow.query(pk, Follow.SK.startswith(keys.FOLLOW_PREFIX)))
    if customer is None and not follows:
        return None
    timeline = TimelineEntry.query(pk, TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX),
                                   scan_index_forward=False, limit=timeline_limit)
    names = {t["tag_id"]: t for t in describe_tags(corp_id, {t for f in follows for t in f.tag_ids or ()})}
    profile = {"external_userid": external_userid, **{n: getattr(customer, n, None) for n in PROFILE_FIELDS},
               "first_seen_at": getattr(customer, "first_seen_at", None),
               "profile_at": getattr(customer, "profile_at", None)}
    return {
        "profile": profile,
        "attribution": {"first": _touch_view(getattr(customer, "first_touch", None)),
                        "latest": _touch_view(getattr(customer, "latest_touch", None))},
        "follows": [{"userid": f.userid, "status": f.status, "added_at": f.added_at, "state": f.state,
                     "add_way": f.add_way, "remark": f.remark, "description": f.description,
                     "tags": [names[t] for t in names if t in (f.tag_ids or ())]}
                    for f in follows],
        "timeline": [{"at": e.at, "what": e.what, "userid": e.userid, "detail": e.detail} for e in timeline],
        "coupons": _coupons(corp_id, external_userid),
    }
