"""The welcome message (欢迎语), inside WeCom's 20-second window, with a new-customer coupon.

The WelcomeCode in an add event is single-use and dies 20 s after the event (FACTS §6). The
lane runs before anything else the event means (scrm.entry.welcome) and touches nothing
shared with other customers but the coupon's stock:

1. content (scrm.domain.welcome.content): the way's or its running campaign's welcome, else
   the store's or the corp's default; read once per event (scrm.store.read_cache);
2. claim (scrm.domain.welcome.claim), with the coupon (scrm.domain.welcome.coupon) in the same
   transaction when the campaign has one and at least COUPON_MIN_SECONDS of the window are
   left: one worker, once, the code on the claim before sending;
3. send (scrm.domain.welcome.send) until the deadline;
4. record the outcome, as the claim's holder only.

An event past its window, or with no welcome to send, is claimed with its outcome at once.
Daily figures (welcomes sent, coupons issued) are derived from the rows' changes on the
stream, never counted here.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from scrm.domain.event_fields import text
from scrm.domain.welcome import claim, content
from scrm.domain.welcome.coupon import claim_with_coupon
from scrm.domain.welcome.send import send
from scrm.platform.observability import log
from scrm.store.models import Welcome
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.callback.events import CallbackEvent

SAFETY_SECONDS = 1.5  # our clock and WeCom's differ a little; keep the last stretch free
COUPON_MIN_SECONDS = 6  # try the coupon only with at least this much of the window left


def deadline_of(event: CallbackEvent) -> float:
    return event.create_time + claim.WINDOW_SECONDS - SAFETY_SECONDS


def send_for(event: CallbackEvent, client: WeComClient, now: Callable[[], float] = time.time) -> str:
    """Send the welcome an add event asks for; returns the outcome (`welcome_<status>[:<reason>]`)."""
    fields = event.fields
    code = text(fields, "WelcomeCode")
    userid, external_userid = text(fields, "UserID"), text(fields, "ExternalUserID")
    if not code or not userid or not external_userid:
        return "no_welcome_code"
    deadline = deadline_of(event)
    row = claim.new(event.corp_id, external_userid, userid, code, create_time=event.create_time, now=now())
    if now() >= deadline:
        return _settled_at_once(event, row, "failed", "window_closed", now)
    choice = content.choose(event.corp_id, userid, text(fields, "State"), event.create_time)
    if choice is None:
        return _settled_at_once(event, row, "skipped", "no_welcome_configured", now)
    row.source, row.campaign_id = choice.source, choice.campaign_id
    if choice.template_id and deadline - now() >= COUPON_MIN_SECONDS:
        claimed = claim_with_coupon(event.corp_id, row, choice)
    else:
        row.coupon_reason = "no_time" if choice.template_id else None
        claimed = claim.put(row)
    if not claimed:
        return _claimed_before(event, row, now)
    message, attachments = content.render(choice.welcome, row.coupon_code)
    if not message and not attachments:
        status, reason = "skipped", "nothing_to_send_without_coupon"
    else:
        status, reason = send(client, code, message, attachments, deadline, now=now)
    recorded = claim.record(row, status, reason)
    return _outcome(event, row, status, reason, recorded)


def _settled_at_once(event: CallbackEvent, row: Welcome, status: str, reason: str, now) -> str:
    row.status, row.reason = status, reason
    if not claim.put(row):
        return _claimed_before(event, row, now)
    return _outcome(event, row, status, reason, True)


def _claimed_before(event: CallbackEvent, row: Welcome, now) -> str:
    """Another worker claimed this welcome: it is at work, done, or died without recording."""
    settled = claim.settle_abandoned(row, now())
    if settled is None:
        return "welcome_already_handled"
    return _outcome(event, settled, "unknown", settled.reason, True)


def _outcome(event: CallbackEvent, row: Welcome, status: str, reason: str | None, recorded: bool) -> str:
    outcome = f"welcome_{status}" + (f":{reason}" if reason else "")
    log.info("welcome", extra={"event_id": event.event_id, "outcome": outcome, "source": row.source,
                               "coupon": row.coupon_reason, "recorded": recorded})
    return outcome if recorded else f"{outcome}:not_recorded"
