"""/ops/contact-ways: 渠道活码 of the corp; creating, changing and deleting them goes through WeCom."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.contact_ways import bulk
from scrm.domain.contact_ways import ways as contact_ways
from scrm.domain.contact_ways.state import OWNER_KINDS
from scrm.domain.contact_ways.ways import MAX_USERS, REMARK_MAX, way_dict
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import (
    CAMPAIGN_ID,
    CHANNEL,
    PAGE,
    STORE_ID,
    USERID,
    WECOM_ID,
    body,
    changes,
    json_object,
    listing,
    page_args,
    path,
    query,
    string,
    strings,
)
from scrm.jobs import runner
from scrm.wecom.apis.client import for_corp

router = APIGatewayHttpRouter()

TAG_IDS_MAX = 100
LIST_QUERY = {"owner_kind": string(16, choices=OWNER_KINDS), "owner_id": string(64, pattern=USERID), **PAGE}
CREATE = {
    "owner_kind": string(16, required=True, choices=OWNER_KINDS),
    "users": strings(MAX_USERS, 64, pattern=USERID),
    "store_id": string(10, pattern=STORE_ID),
    "campaign_id": string(32, pattern=CAMPAIGN_ID),
    "channel": string(16, pattern=CHANNEL),
    "remark": string(REMARK_MAX),
    "tag_ids": strings(TAG_IDS_MAX, 64, pattern=WECOM_ID),
    "welcome": json_object(),
}
UPDATE = {
    "remark": string(REMARK_MAX, nullable=True),
    "users": strings(MAX_USERS, 64, pattern=USERID),
    "tag_ids": strings(TAG_IDS_MAX, 64, pattern=WECOM_ID, nullable=True),
    "welcome": json_object(nullable=True),
}
BULK = {
    "store_id": string(10, pattern=STORE_ID),
    "branch_id": string(10, pattern=STORE_ID),
    "campaign_id": string(32, pattern=CAMPAIGN_ID),
    "channel": string(16, pattern=CHANNEL),
}


def _config_id(raw: str) -> str:
    return path(raw, "config_id", WECOM_ID)


@router.get("/contact-ways")
def list_contact_ways() -> dict:
    params = query(router.current_event.raw_event, LIST_QUERY)
    ways, cursor = contact_ways.list_contact_ways(current_corp(router), owner_kind=params.get("owner_kind"),
                                                  owner_id=params.get("owner_id"), **page_args(params))
    return listing([way_dict(w) for w in ways], cursor)


@router.post("/contact-ways")
def create_contact_way() -> tuple[dict, int]:
    fields = body(router.current_event.raw_event, CREATE)
    corp_id = current_corp(router)
    # a store code without users takes every active staff member of the store
    way = contact_ways.create_contact_way(for_corp(corp_id), corp_id, users=fields.pop("users", []), **fields)
    return way_dict(way), 201


@router.post("/contact-ways/bulk")
def bulk_create() -> tuple[dict, int]:
    """A job (GET /ops/jobs/{job_id}); its result is the report of what was created."""
    fields = body(router.current_event.raw_event, BULK)
    corp_id = current_corp(router)
    job = runner.start(corp_id, bulk.KIND, bulk.request(corp_id, **fields))
    return {"job_id": job.job_id}, 202


@router.get("/contact-ways/<config_id>")
def get_contact_way(config_id: str) -> dict:
    return way_dict(contact_ways.get_contact_way(current_corp(router), _config_id(config_id)))


@router.patch("/contact-ways/<config_id>")
def update_contact_way(config_id: str) -> dict:
    config_id = _config_id(config_id)
    fields = changes(router.current_event.raw_event, UPDATE)
    corp_id = current_corp(router)
    return way_dict(contact_ways.update_contact_way(for_corp(corp_id), corp_id, config_id, **fields))


@router.delete("/contact-ways/<config_id>")
def delete_contact_way(config_id: str) -> dict:
    config_id = _config_id(config_id)
    corp_id = current_corp(router)
    return way_dict(contact_ways.delete_contact_way(for_corp(corp_id), corp_id, config_id))
