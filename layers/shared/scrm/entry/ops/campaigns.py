"""/ops/campaigns: campaigns group contact ways and carry a welcome and a coupon template."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.contact_ways import campaigns
from scrm.domain.contact_ways.campaigns import campaign_dict
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import body, listing, page_args, path, query

router = APIGatewayHttpRouter()


@router.get("/campaigns")
def list_campaigns() -> dict:
    rows, cursor = campaigns.list_campaigns(current_corp(router), **page_args(query(router)))
    return listing([campaign_dict(r) for r in rows], cursor)


@router.post("/campaigns")
def create_campaign() -> tuple[dict, int]:
    return campaign_dict(campaigns.create_campaign(current_corp(router), **body(router))), 201


@router.get("/campaigns/<campaign_id>")
def get_campaign(campaign_id: str) -> dict:
    return campaign_dict(campaigns.get_campaign(current_corp(router), path(campaign_id)))


@router.patch("/campaigns/<campaign_id>")
def update_campaign(campaign_id: str) -> dict:
    # null clears a value; a campaign keeps its name
    return campaign_dict(campaigns.update_campaign(current_corp(router), path(campaign_id), **body(router)))
