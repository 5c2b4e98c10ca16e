"""/ops/stats: daily figures of a staff member, store, region, branch or the corp, and rankings.

Days are China business days (`YYYY-MM-DD`, UTC+8). The corp scope is always the caller's:
it takes no id, as no route names a corp.
"""
from __future__ import annotations

import datetime as dt
import re
import time

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.domain.stats import figures
from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import query
from scrm.platform.config import business_day
from scrm.platform.errors import Invalid

router = APIGatewayHttpRouter()

# What docs/openapi.yaml cannot say, checked here (a 422 naming the parameter).
DEPARTMENT_ID = re.compile(r"[1-9][0-9]{0,9}")
DEFAULT_RANKING = 20


def _day(value: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid("is not a day of the calendar", field) from None


def _scope_id(corp_id: str, scope: str, given: str | None) -> str:
    if scope == "corp":
        if given is not None:
            raise Invalid("must not be given for scope corp: it is the caller's corp", "scope_id")
        return corp_id
    if given is None:
        raise Invalid(f"is required for scope {scope}", "scope_id")
    if scope != "staff" and not DEPARTMENT_ID.fullmatch(given):
        raise Invalid(f"must be a department id for scope {scope}", "scope_id")
    return given


@router.get("/stats/daily")
def daily() -> dict:
    params = query(router)
    corp_id, scope = current_corp(router), params["scope"]
    scope_id = _scope_id(corp_id, scope, params.get("scope_id"))
    first, last = _day(params["from"], "from"), _day(params["to"], "to")
    items = figures.daily(corp_id, scope, scope_id, first, last)
    return {"scope": scope, "scope_id": scope_id, "name": figures.name_of(corp_id, scope, scope_id),
            "from": first.isoformat(), "to": last.isoformat(), "items": items}


@router.get("/stats/ranking")
def ranking() -> dict:
    params = query(router)
    corp_id = current_corp(router)
    parent_scope, _, parent_id = params["parent"].partition(":")
    parent_id = parent_id or corp_id
    day = _day(params["day"], "day").isoformat() if "day" in params else business_day(time.time())
    items = figures.ranking(corp_id, params["scope"], parent_scope, parent_id, day, params["metric"],
                            params.get("limit", DEFAULT_RANKING))
    return {"scope": params["scope"], "parent": params["parent"],
            "parent_name": figures.name_of(corp_id, parent_scope, parent_id, field="parent"),
            "day": day, "metric": params["metric"], "items": items}
