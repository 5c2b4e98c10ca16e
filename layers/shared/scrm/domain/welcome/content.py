"""Which welcome a new customer gets, and the message it makes with or without a coupon.

The first of these that has a welcome, in this order:
1. the contact way the customer came through (its `state`), its own welcome;
2. the way's campaign, while the campaign runs (scrm.domain.contact_ways.campaigns.running);
3. the default of the customer's store (the way's store, else the one the state spells out,
   else the staff member's store), then the corp's default (scrm.domain.welcome.defaults).
Only a running campaign gives a coupon, and only with a welcome configured for it (1 or 2): a
campaign whose dates are over gives neither its coupon nor its welcome, so the customer gets
the way's own welcome without a coupon, or the defaults. The dates are compared with the time
of the add (the event's CreateTime), not with when a worker got to it.

The coupon code fills `{coupon_code}` in the text, the link's url and the miniprogram's page;
a link or page without the placeholder gets `coupon=<code>` added to its query. Without a
coupon the welcome's `without_coupon` variant is sent (scrm.domain.welcome.spec makes one
exist whenever the placeholder is used).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from scrm.domain.contact_ways import campaigns
from scrm.domain.contact_ways import state as states
from scrm.domain.org import tree as org
from scrm.domain.welcome import defaults
from scrm.domain.welcome.spec import PLACEHOLDER, WITHOUT_COUPON, placeholders
from scrm.platform.errors import NotFound


@dataclass(frozen=True)
class Choice:
    welcome: dict  # as configured (scrm.domain.welcome.spec), its without_coupon variant included
    source: str  # way | campaign | store_default | corp_default
    campaign_id: str | None  # the running campaign that gives the coupon
    template_id: str | None  # its coupon template; None: no coupon with this welcome
    store_id: str | None


def choose(corp_id: str, userid: str, state: str | None, at: float) -> Choice | None:
    """The welcome for a customer who added `userid` through `state` at `at`; None if none applies."""
    way = states.resolve_state(corp_id, state) if state else None
    campaign = None
    if way is not None and way.campaign_id:
        try:
            campaign = campaigns.get_campaign(corp_id, way.campaign_id)
        except NotFound:
            campaign = None
    if campaign is not None and not campaigns.running(campaign, at):
        campaign = None
    coupon = (campaign.campaign_id, campaign.coupon_template_id) if campaign is not None else (None, None)
    store_id = _store(corp_id, userid, state, way)
    if way is not None and way.welcome:
        return Choice(way.welcome, "way", *coupon, store_id)
    if campaign is not None and campaign.welcome:
        return Choice(campaign.welcome, "campaign", *coupon, store_id)
    found = defaults.for_store(corp_id, store_id)
    if found is None:
        return None
    welcome, source = found
    return Choice(welcome, source, None, None, store_id)


def _store(corp_id: str, userid: str, state: str | None, way) -> str | None:
    if way is not None and way.store_id:
        return str(way.store_id)
    ref = states.decode_state(state) if state else None
    if ref is not None and ref.store_id:
        return ref.store_id
    return (org.store_of(corp_id, userid) or {}).get("store_id")


def render(welcome: dict, code: str | None) -> tuple[str | None, list[dict]]:
    """(text, attachments) to send: with the code filled in, or the variant without a coupon.

    A welcome stored before variants were required may use the placeholder without one: then
    the parts that hold it are left out, so that no customer ever reads `{coupon_code}`."""
    if code is None:
        message = welcome.get(WITHOUT_COUPON) or {k: v for k, v in welcome.items() if k != WITHOUT_COUPON}
        used = {path[0] for path in placeholders(message)}
        message = {k: v for k, v in message.items() if k not in used}
    else:
        message = {k: copy.deepcopy(v) for k, v in welcome.items() if k != WITHOUT_COUPON}
    text = message.get("text")
    attachments = []
    if message.get("link"):
        link = dict(message["link"])
        if code is not None:
            link["url"] = _with_code(link["url"], code)
        attachments.append({"msgtype": "link", "link": link})
    if message.get("miniprogram"):
        mini = dict(message["miniprogram"])
        if code is not None:
            mini["page"] = _with_code(mini["page"], code)
        attachments.append({"msgtype": "miniprogram", "miniprogram": mini})
    if code is not None and text is not None:
        text = text.replace(PLACEHOLDER, code)
    return text, attachments


def _with_code(target: str, code: str) -> str:
    if PLACEHOLDER in target:
        return target.replace(PLACEHOLDER, code)
    parts = urlsplit(target)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"coupon": code})))
