"""/ops/coupon-templates and /ops/coupons: templates with their stock, lookup and redemption at the till."""
from __future__ import annotations

import re

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain import coupons
from scrm.domain.org import tree as org
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import (
    PAGE,
    REQUEST_ID,
    STORE_ID,
    TEMPLATE_ID,
    USERID,
    body,
    epoch,
    integer,
    listing,
    page_args,
    path,
    query,
    string,
)
from scrm.platform.errors import Invalid
from scrm.store.models import Coupon, CouponTemplate

router = APIGatewayHttpRouter()

# A code as a till may type it: any case, grouped with '-' or spaces (coupons.normalize_code).
TYPED_CODE = re.compile(r"[A-Za-z0-9 -]{1,64}")
TEMPLATE_NAME_MAX = 64
TEMPLATE = {
    "name": string(TEMPLATE_NAME_MAX, required=True),
    "kind": string(16, required=True, choices=("amount", "discount")),
    "amount": integer(1, 10**9),  # fen
    "discount": integer(1, 99),  # percent paid
    "threshold": integer(0, 10**10),  # fen
    "valid_days": integer(0, 3650),
    "valid_from": epoch(),
    "valid_until": epoch(),
    "per_customer_limit": integer(1, 1000),
    "total_stock": integer(0, 10**8, required=True),
    "template_id": string(64, pattern=TEMPLATE_ID),
}
REDEEM = {
    "code": string(64, required=True, pattern=TYPED_CODE),
    "store_id": string(10, required=True, pattern=STORE_ID),
    "staff_userid": string(64, required=True, pattern=USERID),
    "request_id": string(64, required=True, pattern=REQUEST_ID),
}
_TEMPLATE_FIELDS = ("template_id", "name", "kind", "amount", "discount", "threshold", "valid_days", "valid_from",
                    "valid_until", "per_customer_limit", "total_stock", "created_at")
_COUPON_FIELDS = ("code", "template_id", "campaign_id", "external_userid", "kind", "amount", "discount",
                  "threshold", "status", "issued_at", "valid_from", "valid_until", "staff_userid", "store_id",
                  "redeemed_at", "redeemed_store_id", "redeemed_by")


def template_dict(row: CouponTemplate) -> dict:
    return {name: getattr(row, name) for name in _TEMPLATE_FIELDS}


def coupon_dict(row: Coupon) -> dict:
    return {name: getattr(row, name) for name in _COUPON_FIELDS}


def check_till(corp_id: str, store_id: str, staff_userid: str) -> None:
    """The till must be a store of the caller's corp and the clerk its staff: both are
    credited in the corp's counters, which must not fill with ids nobody can trace."""
    placement = org.department_placement(corp_id, int(store_id))
    if placement is None or placement.level != "store":
        raise Invalid("is not a store of this corp", "store_id")
    if org.store_of(corp_id, staff_userid) is None:
        raise Invalid("is not staff of a store of this corp", "staff_userid")


def _template_id(raw: str) -> str:
    return path(raw, "template_id", TEMPLATE_ID)


@router.get("/coupon-templates")
def list_templates() -> dict:
    params = query(router.current_event.raw_event, PAGE)
    rows, cursor = coupons.list_templates(current_corp(router), **page_args(params))
    return listing([template_dict(r) for r in rows], cursor)


@router.post("/coupon-templates")
def create_template() -> tuple[dict, int]:
    fields = body(router.current_event.raw_event, TEMPLATE)
    corp_id = current_corp(router)
    row = coupons.create_template(corp_id, **fields)
    return {**template_dict(row), "stock": coupons.stock(corp_id, row.template_id)}, 201


@router.get("/coupon-templates/<template_id>")
def get_template(template_id: str) -> dict:
    template_id, corp_id = _template_id(template_id), current_corp(router)
    return {**template_dict(coupons.get_template(corp_id, template_id)), "stock": coupons.stock(corp_id, template_id)}


@router.post("/coupons/redeem")
def redeem() -> dict:
    fields = body(router.current_event.raw_event, REDEEM)
    corp_id = current_corp(router)
    check_till(corp_id, fields["store_id"], fields["staff_userid"])
    return coupon_dict(coupons.redeem(corp_id, fields.pop("code"), **fields))


@router.get("/coupons/<code>")
def get_coupon(code: str) -> dict:
    return coupon_dict(coupons.get_coupon(current_corp(router), path(code, "code", TYPED_CODE)))
