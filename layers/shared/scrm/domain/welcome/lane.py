"""The welcome message (欢迎语), inside WeCom's 20-second window, with a new-customer coupon.

The WelcomeCode in an add event is single-use and dies 20 s after the event (FACTS §6).
So the order is: claim the welcome (a conditional write: one worker, once), choose the
content from the contact way or its campaign, try the coupon only while there is time to
spare, send, record. The coupon never costs the welcome its window: if it cannot be
issued (out of stock, limit, an error, too little time left) the welcome goes out
without it and the reason is kept on the Welcome row.

WeCom answers that decide the outcome: 41051 means the welcome has reached the customer
(by our earlier attempt, if we had one); 41096 means another app is sending, which may
still fail, so we retry while the window lasts; 41050 means the window has closed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from pynamodb.exceptions import PutError

from scrm.domain import coupons
from scrm.domain.contact_ways import campaigns
from scrm.domain.contact_ways import state as states
from scrm.domain.event_fields import text
from scrm.platform.observability import log
from scrm.store import keys
from scrm.store.models import Welcome, condition_failed
from scrm.wecom.apis.errors import RateLimited, TransientError, WeComError
from scrm.wecom.callback.events import CallbackEvent

WINDOW_SECONDS = 20
SAFETY_SECONDS = 1.5  # our clock and WeCom's differ a little; keep the last stretch free
COUPON_MIN_SECONDS = 6  # try the coupon only with at least this much of the window left
LEASE_SECONDS = 10
RETRY_PAUSE = 0.5
DELIVERED = 41051
EXPIRED = 41050
BEING_SENT_ELSEWHERE = 41096


@dataclass
class Content:
    text: str | None
    attachments: list[dict]
    template_id: str | None
    campaign_id: str | None
    store_id: str | None


def deadline_of(event: CallbackEvent) -> float:
    return event.create_time + WINDOW_SECONDS - SAFETY_SECONDS


def send_for(event: CallbackEvent, client, now=time.time) -> str:
    """Send the welcome an add event asks for; returns the outcome recorded."""
    code = text(event.fields, "WelcomeCode")
    userid, external_userid = text(event.fields, "UserID"), text(event.fields, "ExternalUserID")
    if not code or not userid or not external_userid:
        return "no_welcome_code"
    deadline = deadline_of(event)
    row = _claim(event.corp_id, external_userid, userid, code, now())
    if row is None:
        return "welcome_already_handled"
    if now() >= deadline:
        return _finish(event, row, "failed", reason="window_closed")
    content = _content(event)
    if content is None:
        return _finish(event, row, "skipped", reason="no_welcome_configured")
    if content.template_id:
        _attach_coupon(event, row, content, userid, external_userid, deadline, now)
    return _send(event, client, row, content, code, deadline, now)


def _claim(corp_id: str, external_userid: str, userid: str, code: str, at: float) -> Welcome | None:
    """The right to send this welcome, or None if another worker has (or had) it.

    A claim whose lease ran out while still `sending` belongs to a worker that died
    mid-send; taking it over is the second attempt, whose 41051 then means "ours arrived"."""
    for attempts, condition in ((1, Welcome.PK.does_not_exist()),
                                (2, (Welcome.status == "sending") & (Welcome.lease_until < int(at)))):
        row = Welcome(*keys.welcome(corp_id, external_userid, userid, code), external_userid=external_userid,
                      userid=userid, status="sending", claimed_at=int(at), lease_until=int(at) + LEASE_SECONDS,
                      attempts=attempts)
        try:
            row.save(condition=condition)
            return row
        except PutError as err:
            if not condition_failed(err):
                raise
    return None


def _content(event: CallbackEvent) -> Content | None:
    state = text(event.fields, "State")
    way = states.resolve_state(event.corp_id, state) if state else None
    campaign = None
    campaign_id = way.campaign_id if way else None
    if campaign_id:
        try:
            campaign = campaigns.get_campaign(event.corp_id, campaign_id)
        except LookupError:
            campaign = None
    welcome = (way.welcome if way else None) or (campaign.welcome if campaign else None)
    if not welcome:
        return None
    attachments = []
    if welcome.get("link"):
        attachments.append({"msgtype": "link", "link": dict(welcome["link"])})
    if welcome.get("miniprogram"):
        attachments.append({"msgtype": "miniprogram", "miniprogram": dict(welcome["miniprogram"])})
    return Content(text=welcome.get("text"), attachments=attachments,
                   template_id=campaign.coupon_template_id if campaign else None,
                   campaign_id=campaign_id, store_id=way.store_id if way else None)


def _attach_coupon(event: CallbackEvent, row: Welcome, content: Content, userid: str, external_userid: str,
                   deadline: float, now) -> None:
    if deadline - now() < COUPON_MIN_SECONDS:
        row.coupon_reason = "no_time"
        return
    try:
        result = coupons.issue(event.corp_id, content.template_id, external_userid, occasion="welcome",
                               campaign_id=content.campaign_id, staff_userid=userid, store_id=content.store_id)
    except Exception as err:  # noqa: BLE001 - whatever fails, the welcome still goes out in time
        log.warning("coupon not issued with welcome", extra={"reason": type(err).__name__})
        row.coupon_reason = f"error:{type(err).__name__}"
        return
    if result.code:
        row.coupon_code = result.code
        row.coupon_reason = result.status
        content.text = _with_code(content.text, result.code)
        for attachment in content.attachments:
            _attachment_with_code(attachment, result.code)
    else:
        row.coupon_reason = result.status


def _with_code(value: str | None, code: str) -> str | None:
    if value is None:
        return None
    return value.replace("{coupon_code}", code)


def _add_query(url: str, code: str) -> str:
    if "{coupon_code}" in url:
        return url.replace("{coupon_code}", code)
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"coupon": code})))


def _attachment_with_code(attachment: dict, code: str) -> None:
    if attachment["msgtype"] == "link":
        attachment["link"]["url"] = _add_query(attachment["link"]["url"], code)
    elif attachment["msgtype"] == "miniprogram":
        attachment["miniprogram"]["page"] = _add_query(attachment["miniprogram"]["page"], code)


def _send(event: CallbackEvent, client, row: Welcome, content: Content, code: str, deadline: float, now) -> str:
    retried = False
    while True:
        try:
            client.send_welcome_msg(code, content.text, content.attachments or None, deadline=deadline)
            return _finish(event, row, "sent")
        except RateLimited:
            return _finish(event, row, "failed", reason="rate_limited")
        except TransientError:
            reason = "transient"
        except WeComError as err:
            if err.errcode == DELIVERED:
                # Ours, if an earlier attempt may have gone through; else the customer
                # was already chatting or another app got there first.
                return _finish(event, row, "sent" if retried or row.attempts > 1 else "skipped",
                               reason="already_delivered")
            if err.errcode == EXPIRED:
                return _finish(event, row, "failed", reason="window_closed")
            if err.errcode != BEING_SENT_ELSEWHERE:
                return _finish(event, row, "failed", reason=f"errcode_{err.errcode}")
            reason = "being_sent_elsewhere"
        if now() + RETRY_PAUSE >= deadline:
            return _finish(event, row, "failed", reason=reason)
        retried = True
        time.sleep(RETRY_PAUSE)


def _finish(event: CallbackEvent, row: Welcome, status: str, reason: str | None = None) -> str:
    """Record the outcome (the daily figures count a row that becomes `sent`, from the stream)."""
    actions = [Welcome.status.set(status), Welcome.reason.set(reason) if reason else Welcome.reason.remove()]
    if row.coupon_code:
        actions.append(Welcome.coupon_code.set(row.coupon_code))
    if row.coupon_reason:
        actions.append(Welcome.coupon_reason.set(row.coupon_reason))
    if status == "sent":
        actions.append(Welcome.sent_at.set(int(time.time())))
    row.update(actions=actions)
    outcome = f"welcome_{status}" + (f":{reason}" if reason else "")
    log.info("welcome", extra={"event_id": event.event_id, "outcome": outcome, "coupon": row.coupon_reason})
    return outcome
