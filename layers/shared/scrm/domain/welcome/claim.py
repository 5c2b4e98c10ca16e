"""The Welcome row: the claim that lets one worker send a welcome, and the outcome it records.

* Claiming is a conditional write of `WELCOME#<userid>#<WelcomeCode>` in the customer's
  partition (a WelcomeCode is single-use, so it names the occasion). With a coupon the claim is
  written inside the coupon's transaction (scrm.domain.welcome.coupon), holding the code:
  the code is on the claim before anything is sent, so no later failure can lose it.
* A claim carries a random `holder`. Every later write of the row is conditional on it and on
  the status still being `sending`: only the worker that claimed records the outcome, and a
  late writer never overwrites another's (no last-writer-wins).
* The lease ends LEASE_AFTER_WINDOW seconds after WeCom's 20 s window, i.e. after the last
  moment the holder can still be sending: a duplicate delivery never takes a claim over while
  a send may be under way. A claim still `sending` after its lease belongs to a worker that
  died or could not record; nobody can send any more, and whether its welcome went out is not
  known, so the one who finds it records `unknown` (never `failed`), the coupon code kept.
* Recording is retried a few times (a throttled or briefly failing table must not turn a sent
  welcome into an unknown one).
"""
from __future__ import annotations

import random
import time
import uuid

from pynamodb.exceptions import PutError, UpdateError

from scrm.platform.observability import log
from scrm.store import keys
from scrm.store.models import Welcome, condition_failed
from scrm.store.once import Write

WINDOW_SECONDS = 20  # FACTS §6: a WelcomeCode works for 20 s after the event
LEASE_AFTER_WINDOW = 10  # time to record the outcome after the last possible send
RECORD_ATTEMPTS = 5
RECORD_BACKOFF = 0.1
_ATTRIBUTES = ("external_userid", "userid", "status", "holder", "claimed_at", "lease_until", "source",
               "campaign_id", "coupon_code", "coupon_reason", "reason")


def new(corp_id: str, external_userid: str, userid: str, welcome_code: str, *, create_time: float,
        now: float) -> Welcome:
    """An unsaved claim, `sending`, leased until after the window."""
    return Welcome(*keys.welcome(corp_id, external_userid, userid, welcome_code), external_userid=external_userid,
                   userid=userid, status="sending", holder=uuid.uuid4().hex, claimed_at=int(now),
                   lease_until=int(create_time) + WINDOW_SECONDS + LEASE_AFTER_WINDOW)


def put(row: Welcome) -> bool:
    """Claim (the row as it is: `sending`, or an outcome already decided); False if claimed before."""
    try:
        row.save(condition=Welcome.PK.does_not_exist())
    except PutError as err:
        if condition_failed(err):
            return False
        raise
    return True


def write(row: Welcome, coupon_code: str) -> Write:
    """The claim, holding `coupon_code`, as one item of the coupon's transaction."""
    values = {**{name: getattr(row, name) for name in _ATTRIBUTES}, "coupon_code": coupon_code,
              "coupon_reason": "issued"}

    def claim(tx) -> None:
        actions = [getattr(Welcome, name).set(value) for name, value in values.items() if value is not None]
        tx.update(Welcome(row.PK, row.SK), actions=[Welcome.entity.set(Welcome), *actions],
                  condition=Welcome.PK.does_not_exist())

    return claim


def settle_abandoned(row: Welcome, now: float) -> Welcome | None:
    """Mark a claim whose lease ran out while `sending` as `unknown` (keeping its coupon code);
    the row as it now is, or None if the claim is live or already settled."""
    found = Welcome(row.PK, row.SK)
    try:
        found.update(actions=[Welcome.status.set("unknown"), Welcome.reason.set("outcome_not_recorded"),
                              Welcome.holder.set(uuid.uuid4().hex)],
                     condition=(Welcome.status == "sending") & (Welcome.lease_until < int(now)))
    except UpdateError as err:
        if condition_failed(err):
            return None
        raise
    return found


def record(row: Welcome, status: str, reason: str | None = None) -> bool:
    """The holder's outcome; False if the claim is no longer this worker's (nothing written).

    A failing table is retried RECORD_ATTEMPTS times; after that the error propagates, the
    event is delivered again and the claim is settled as unknown once its lease has run out."""
    actions = [Welcome.status.set(status), Welcome.reason.set(reason) if reason else Welcome.reason.remove()]
    if status == "sent":
        actions.append(Welcome.sent_at.set(int(time.time())))
    for attempt in range(RECORD_ATTEMPTS):
        try:
            row.update(actions=actions, condition=(Welcome.holder == row.holder) & (Welcome.status == "sending"))
            return True
        except UpdateError as err:
            if condition_failed(err):
                log.warning("welcome outcome not recorded: the claim is no longer ours",
                            extra={"welcome": row.SK, "outcome": status})
                return False
            if attempt == RECORD_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.5, 1) * RECORD_BACKOFF * 2 ** attempt)
    return False
