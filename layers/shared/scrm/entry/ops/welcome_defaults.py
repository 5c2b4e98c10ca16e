"""/ops/welcome-defaults: the welcome a customer gets when the contact way and its campaign
have none (a phone search or a card share brings no contact way): one for the corp, one per
store. PUT names what changes (a welcome sets it, null clears it; stores not named keep
theirs), all or nothing; GET answers in the same shape, the stores a page at a time."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.welcome import defaults
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import body, page_args, query

router = APIGatewayHttpRouter()


@router.get("/welcome-defaults")
def get_welcome_defaults() -> dict:
    found, cursor = defaults.get_defaults(current_corp(router), **page_args(query(router)))
    return {**found, "next_cursor": cursor}


@router.put("/welcome-defaults")
def put_welcome_defaults() -> dict:
    return defaults.set_defaults(current_corp(router), **body(router))
