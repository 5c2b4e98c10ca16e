"""/ops/campaigns: campaigns group contact ways and carry a welcome and a coupon template."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.contact_ways import campaigns
from scrm.domain.contact_ways.campaigns import CAMPAIGN_NAME_MAX, campaign_dict
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import (
    CAMPAIGN_ID,
    PAGE,
    TEMPLATE_ID,
    body,
    changes,
    epoch,
    json_object,
    listing,
    page_args,
    path,
    query,
    string,
)

router = APIGatewayHttpRouter()

CREATE = {
    "name": string(CAMPAIGN_NAME_MAX, required=True),
    "welcome": json_object(),
    "coupon_template_id": string(64, pattern=TEMPLATE_ID),
    "starts_at": epoch(),
    "ends_at": epoch(),
    "campaign_id": string(32, pattern=CAMPAIGN_ID),
}
UPDATE = {  # null clears a value; a campaign keeps its name
    "name": string(CAMPAIGN_NAME_MAX),
    "welcome": json_object(nullable=True),
    "coupon_template_id": string(64, pattern=TEMPLATE_ID, nullable=True),
    "starts_at": epoch(nullable=True),
    "ends_at": epoch(nullable=True),
}


def _campaign_id(raw: str) -> str:
    return path(raw, "campaign_id", CAMPAIGN_ID, max_length=32)


@router.get("/campaigns")
def list_campaigns() -> dict:
    params = query(router.current_event.raw_event, PAGE)
    rows, cursor = campaigns.list_campaigns(current_corp(router), **page_args(params))
    return listing([campaign_dict(r) for r in rows], cursor)


@router.post("/campaigns")
def create_campaign() -> tuple[dict, int]:
    fields = body(router.current_event.raw_event, CREATE)
    return campaign_dict(campaigns.create_campaign(current_corp(router), **fields)), 201


@router.get("/campaigns/<campaign_id>")
def get_campaign(campaign_id: str) -> dict:
    return campaign_dict(campaigns.get_campaign(current_corp(router), _campaign_id(campaign_id)))


@router.patch("/campaigns/<campaign_id>")
def update_campaign(campaign_id: str) -> dict:
    campaign_id = _campaign_id(campaign_id)
    fields = changes(router.current_event.raw_event, UPDATE)
    return campaign_dict(campaigns.update_campaign(current_corp(router), campaign_id, **fields))
