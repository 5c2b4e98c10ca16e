"""/ops/contact-ways: 渠道活码 of the corp; creating, changing and deleting them goes through WeCom."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.contact_ways import bulk
from scrm.domain.contact_ways import ways as contact_ways
from scrm.domain.contact_ways.ways import way_dict
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import body, listing, page_args, path, query
from scrm.jobs import runner
from scrm.wecom.apis.client import for_corp

router = APIGatewayHttpRouter()


@router.get("/contact-ways")
def list_contact_ways() -> dict:
    params = query(router)
    ways, cursor = contact_ways.list_contact_ways(current_corp(router), owner_kind=params.get("owner_kind"),
                                                  owner_id=params.get("owner_id"), **page_args(params))
    return listing([way_dict(w) for w in ways], cursor)


@router.post("/contact-ways")
def create_contact_way() -> tuple[dict, int]:
    fields = body(router)
    corp_id = current_corp(router)
    # a store code without users takes every active staff member of the store
    way = contact_ways.create_contact_way(for_corp(corp_id), corp_id, users=fields.pop("users", []), **fields)
    return way_dict(way), 201


@router.post("/contact-ways/bulk")
def bulk_create() -> tuple[dict, int]:
    """A job (GET /ops/jobs/{job_id}); its result is the report of what was created."""
    corp_id = current_corp(router)
    job = runner.start(corp_id, bulk.KIND, bulk.request(corp_id, **body(router)))
    return {"job_id": job.job_id}, 202


@router.get("/contact-ways/<config_id>")
def get_contact_way(config_id: str) -> dict:
    return way_dict(contact_ways.get_contact_way(current_corp(router), path(config_id)))


@router.patch("/contact-ways/<config_id>")
def update_contact_way(config_id: str) -> dict:
    corp_id = current_corp(router)
    return way_dict(contact_ways.update_contact_way(for_corp(corp_id), corp_id, path(config_id), **body(router)))


@router.delete("/contact-ways/<config_id>")
def delete_contact_way(config_id: str) -> dict:
    corp_id = current_corp(router)
    return way_dict(contact_ways.delete_contact_way(for_corp(corp_id), corp_id, path(config_id)))
