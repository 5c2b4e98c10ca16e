"""GET /ops/stores and /ops/staff: the corp's stores and staff as the org sync placed them."""
from __future__ import annotations

import re

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.org import tree as org
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import PAGE, STORE_ID, listing, page_args, query, string

router = APIGatewayHttpRouter()

STAFF_STATUSES = ("active", "resigned")
# org.NO_STORE lists the staff who are in no store
_STORE_OR_NONE = re.compile(f"{STORE_ID.pattern}|{re.escape(org.NO_STORE)}")
STORES_QUERY = {"branch_id": string(10, pattern=STORE_ID), **PAGE}
STAFF_QUERY = {"store_id": string(10, pattern=_STORE_OR_NONE), "status": string(16, choices=STAFF_STATUSES), **PAGE}


@router.get("/stores")
def list_stores() -> dict:
    params = query(router.current_event.raw_event, STORES_QUERY)
    items, cursor = org.list_stores(current_corp(router), branch_id=params.get("branch_id"), **page_args(params))
    return listing(items, cursor)


@router.get("/staff")
def list_staff() -> dict:
    params = query(router.current_event.raw_event, STAFF_QUERY)
    items, cursor = org.list_staff(current_corp(router), store_id=params.get("store_id"),
                                   status=params.get("status"), **page_args(params))
    return listing(items, cursor)
