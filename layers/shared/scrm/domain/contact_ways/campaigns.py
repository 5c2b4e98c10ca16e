"""Campaigns: a name, a welcome, a coupon template and dates; contact ways belong to one.

Outside its dates (`running`) a campaign gives nothing: neither its coupon nor its welcome
(scrm.domain.welcome.content says what the customer gets instead)."""
from __future__ import annotations

import re
import secrets
import time
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from scrm.domain.contact_ways.state import TOKEN_ALPHABET
from scrm.domain.welcome.spec import validate_welcome
from scrm.platform.errors import Conflict, Invalid, NotFound
from scrm.store import keys, paging, read_cache
from scrm.store.models import Campaign, CouponTemplate, condition_failed

CAMPAIGN_ID_LEN = 4  # generated ids are short so that a typical staff code's state fits whole
CAMPAIGN_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
CAMPAIGN_NAME_MAX = 64
MAX_ID_TRIES = 8


def check_campaign(corp_id: str, campaign_id: Any) -> str:
    """`campaign_id` if it names a campaign of the corp; Invalid otherwise."""
    if not isinstance(campaign_id, str) or not CAMPAIGN_ID.fullmatch(campaign_id):
        raise Invalid("not a campaign id", "campaign_id")
    try:
        Campaign.get(*keys.campaign(corp_id, campaign_id))
    except Campaign.DoesNotExist:
        raise Invalid("no such campaign", "campaign_id") from None
    return campaign_id


def _window(starts_at: Any, ends_at: Any) -> tuple[int | None, int | None]:
    for field, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise Invalid("must be epoch seconds", field)
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise Invalid("must be after starts_at", "ends_at")
    return starts_at, ends_at


def _coupon_template(corp_id: str, template_id: Any) -> str | None:
    if template_id is None:
        return None
    try:
        CouponTemplate.get(*keys.coupon_template(corp_id, str(template_id)))
    except CouponTemplate.DoesNotExist:
        raise Invalid("no such coupon template", "coupon_template_id") from None
    return str(template_id)


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > CAMPAIGN_NAME_MAX:
        raise Invalid(f"must be 1-{CAMPAIGN_NAME_MAX} characters", "name")
    return name


def create_campaign(corp_id: str, *, name: str, welcome: dict | None = None, coupon_template_id: str | None = None,
                    starts_at: int | None = None, ends_at: int | None = None, campaign_id: str | None = None,
                    now: float | None = None) -> Campaign:
    """A campaign; without campaign_id a short one is generated, so that it fits in states."""
    attrs = {"name": _name(name), "welcome": validate_welcome(welcome),
             "coupon_template_id": _coupon_template(corp_id, coupon_template_id)}
    attrs["starts_at"], attrs["ends_at"] = _window(starts_at, ends_at)
    if campaign_id is not None and (not isinstance(campaign_id, str) or not CAMPAIGN_ID.fullmatch(campaign_id)):
        raise Invalid("must be 1-32 characters of [A-Za-z0-9_-]", "campaign_id")
    created_at = int(time.time() if now is None else now)
    for _ in range(MAX_ID_TRIES if campaign_id is None else 1):
        cid = campaign_id or "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(CAMPAIGN_ID_LEN))
        row = Campaign(*keys.campaign(corp_id, cid), campaign_id=cid, created_at=created_at,
                       GSI1PK=keys.campaigns(corp_id), GSI1SK=cid, **attrs)
        try:
            row.save(condition=Campaign.PK.does_not_exist())
            return row
        except PutError as err:
            if not condition_failed(err):
                raise
    raise Conflict("a campaign with this id exists", "campaign_id")


def get_campaign(corp_id: str, campaign_id: str) -> Campaign:
    """One campaign; read once per unit of work (scrm.store.read_cache)."""
    try:
        return read_cache.cached("campaign", (corp_id, campaign_id),
                                 lambda: Campaign.get(*keys.campaign(corp_id, campaign_id)))
    except Campaign.DoesNotExist:
        raise NotFound("no such campaign", "campaign_id") from None


def running(campaign: Campaign, at: float) -> bool:
    """Whether `at` (epoch seconds) falls within the campaign's dates: from starts_at, before ends_at."""
    return (campaign.starts_at is None or campaign.starts_at <= at) and (campaign.ends_at is None
                                                                         or at < campaign.ends_at)


def list_campaigns(corp_id: str, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Campaign], str | None]:
    return paging.page(Campaign.gsi1.query, keys.campaigns(corp_id), hash_attr="GSI1PK", limit=limit, cursor=cursor)


def update_campaign(corp_id: str, campaign_id: str, **changes: Any) -> Campaign:
    """Change name, welcome, coupon_template_id, starts_at or ends_at (None clears all but name)."""
    unknown = set(changes) - {"name", "welcome", "coupon_template_id", "starts_at", "ends_at"}
    if unknown:
        raise Invalid("cannot be changed", sorted(unknown)[0])
    row = get_campaign(corp_id, campaign_id)
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _name(changes["name"])
    if "welcome" in changes:
        values["welcome"] = validate_welcome(changes["welcome"])
    if "coupon_template_id" in changes:
        values["coupon_template_id"] = _coupon_template(corp_id, changes["coupon_template_id"])
    if {"starts_at", "ends_at"} & set(changes):
        values["starts_at"], values["ends_at"] = _window(changes.get("starts_at", row.starts_at),
                                                         changes.get("ends_at", row.ends_at))
    if values:
        try:
            row.update(actions=[getattr(Campaign, k).set(v) if v is not None else getattr(Campaign, k).remove()
                                for k, v in values.items()], condition=Campaign.PK.exists())
        except UpdateError as err:
            if condition_failed(err):
                raise NotFound("no such campaign", "campaign_id") from None
            raise
    return row


def campaign_dict(row: Campaign) -> dict:
    return {k: getattr(row, k) for k in ("campaign_id", "name", "welcome", "coupon_template_id", "starts_at",
                                         "ends_at", "created_at")}
