"""/ops/welcome-defaults: the welcome a customer gets when the contact way and its campaign
have none (a phone search or a card share brings no contact way): one for the corp, one per
store. PUT names what changes (a welcome sets it, null clears it; stores not named keep
theirs), all or nothing; GET answers in the same shape, the stores a page at a time."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.welcome import defaults
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import PAGE, changes, json_object, page_args, query

router = APIGatewayHttpRouter()

PUT = {
    "corp": json_object(nullable=True),
    "stores": json_object(),
}


@router.get("/welcome-defaults")
def get_welcome_defaults() -> dict:
    params = query(router.current_event.raw_event, PAGE)
    found, cursor = defaults.get_defaults(current_corp(router), **page_args(params))
    return {**found, "next_cursor": cursor}


@router.put("/welcome-defaults")
def put_welcome_defaults() -> dict:
    fields = changes(router.current_event.raw_event, PUT)
    return defaults.set_defaults(current_corp(router), **fields)
