"""GET /ops/stores and /ops/staff: the corp's stores and staff as the org sync placed them."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.org import tree as org
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import listing, page_args, query

router = APIGatewayHttpRouter()


@router.get("/stores")
def list_stores() -> dict:
    params = query(router)
    items, cursor = org.list_stores(current_corp(router), branch_id=params.get("branch_id"), **page_args(params))
    return listing(items, cursor)


@router.get("/staff")
def list_staff() -> dict:
    params = query(router)
    items, cursor = org.list_staff(current_corp(router), store_id=params.get("store_id"),
                                   status=params.get("status"), **page_args(params))
    return listing(items, cursor)
