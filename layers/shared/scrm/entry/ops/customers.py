"""/ops/customers: one customer's profile, follows, tags, attribution, timeline and coupons."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.customers.view import customer_view
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.coupons import coupon_dict
from scrm.entry.ops.inputs import listing, page_args, path, query
from scrm.platform.errors import NotFound
from scrm.store import keys, paging
from scrm.store.models import Coupon

router = APIGatewayHttpRouter()


@router.get("/customers/<external_userid>")
def get_customer(external_userid: str) -> dict:
    view = customer_view(current_corp(router), path(external_userid))
    if view is None:
        raise NotFound("no such customer", "external_userid")
    return view


@router.get("/customers/<external_userid>/coupons")
def list_customer_coupons(external_userid: str) -> dict:
    params = query(router)
    # coupons.customer_coupons has no cursor; the same index, newest first, paged here
    rows, cursor = paging.page(Coupon.gsi1.query, keys.coupons_of_customer(current_corp(router), path(external_userid)),
                               hash_attr="GSI1PK", scan_index_forward=False, **page_args(params))
    return listing([coupon_dict(r) for r in rows], cursor)
