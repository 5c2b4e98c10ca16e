"""Sending the welcome inside the window, and what WeCom's answers mean for it (FACTS §6).

* 41051 means the welcome has reached the customer. It is ours if an attempt of ours may have
  arrived before: one that timed out reading or got a 5xx, whether repeated by this loop or by
  the client (`earlier_attempt_unknown`). Otherwise the customer was already chatting or
  another app was first: `skipped`.
* 41096 means another app is sending, which may still fail: retried while the window lasts.
* 41050 means the code is dead (the window closed).
* Transient failures (-1, 45033, 5xx, timeouts) are retried by the client and again here,
  never past the deadline; a 45009 is not waited out.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import (
    WELCOME_BUSY,
    WELCOME_DELIVERED,
    WELCOME_EXPIRED,
    RateLimited,
    TransientError,
    WeComError,
)

RETRY_PAUSE = 0.5


def send(client: WeComClient, welcome_code: str, text: str | None, attachments: list[dict], deadline: float,
         now: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> tuple[str, str | None]:
    """(status, reason): sent | skipped | failed, and why if not plainly sent."""
    ours = False  # an attempt of ours may have reached WeCom
    while True:
        try:
            client.send_welcome_msg(welcome_code, text, attachments or None, deadline=deadline)
            return "sent", None
        except RateLimited:
            return "failed", "rate_limited"
        except TransientError as err:
            ours = ours or err.outcome_unknown or err.earlier_attempt_unknown
            reason = "transient"
        except WeComError as err:
            if err.errcode == WELCOME_DELIVERED:
                if ours or err.earlier_attempt_unknown:
                    return "sent", "earlier_attempt_arrived"
                return "skipped", "already_delivered"
            if err.errcode == WELCOME_EXPIRED:
                return "failed", "window_closed"
            if err.errcode != WELCOME_BUSY:
                return "failed", f"errcode_{err.errcode}"
            reason = "being_sent_elsewhere"
        if now() + RETRY_PAUSE >= deadline:
            return "failed", reason
        sleep(RETRY_PAUSE)
