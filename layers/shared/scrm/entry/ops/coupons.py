"""/ops/coupon-templates and /ops/coupons: templates with their stock, lookup and redemption at the till."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain import coupons
from scrm.domain.org import tree as org
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import body, listing, page_args, path, query
from scrm.platform.errors import Invalid
from scrm.store.models import Coupon, CouponTemplate

router = APIGatewayHttpRouter()

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
    """The till must be a store of the caller's corp and the clerk active staff of that store:
    both are credited in the corp's figures, which must not fill with ids nobody can trace."""
    placement = org.department_placement(corp_id, int(store_id))
    if placement is None or placement.level != "store":
        raise Invalid("is not a store of this corp", "store_id")
    if not org.works_at(corp_id, staff_userid, store_id):
        raise Invalid(f"is not active staff of store {store_id}", "staff_userid")


@router.get("/coupon-templates")
def list_templates() -> dict:
    rows, cursor = coupons.list_templates(current_corp(router), **page_args(query(router)))
    return listing([template_dict(r) for r in rows], cursor)


@router.post("/coupon-templates")
def create_template() -> tuple[dict, int]:
    corp_id = current_corp(router)
    row = coupons.create_template(corp_id, **body(router))
    return {**template_dict(row), "stock": coupons.stock(corp_id, row.template_id)}, 201


@router.get("/coupon-templates/<template_id>")
def get_template(template_id: str) -> dict:
    template_id, corp_id = path(template_id), current_corp(router)
    return {**template_dict(coupons.get_template(corp_id, template_id)), "stock": coupons.stock(corp_id, template_id)}


@router.post("/coupons/redeem")
def redeem() -> dict:
    fields = body(router)
    corp_id = current_corp(router)
    check_till(corp_id, fields["store_id"], fields["staff_userid"])
    return coupon_dict(coupons.redeem(corp_id, fields.pop("code"), **fields))


@router.get("/coupons/<code>")
def get_coupon(code: str) -> dict:
    return coupon_dict(coupons.get_coupon(current_corp(router), path(code)))
