"""Typed settings, read from the environment once per process.

Secrets are never here: a corp's credentials come from Secrets Manager (scrm.platform.credentials).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_WECOM_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"


@dataclass(frozen=True)
class Settings:
    table_name: str
    events_queue_url: str
    welcome_queue_url: str  # the fast lane: events carrying a WelcomeCode (20-second window)
    secret_prefix: str
    wecom_api_base: str
    wecom_timeout: float  # seconds per WeCom HTTP call
    pending_grace: int  # seconds an event may stay unqueued before the sweeper enqueues it
    max_receive_count: int  # the queues' maxReceiveCount: the receive after which a failure is final
    jobs_queue_url: str  # chunks of long jobs (scrm.jobs)
    wecom_rate_margin: float  # share of WeCom's per-API quotas the rate governor lets all workers use


@lru_cache(maxsize=1)
def settings() -> Settings:
    env = os.environ
    return Settings(
        table_name=env.get("TABLE_NAME", "scrm-local"),
        events_queue_url=env.get("EVENTS_QUEUE_URL", ""),
        welcome_queue_url=env.get("WELCOME_QUEUE_URL") or env.get("EVENTS_QUEUE_URL", ""),
        secret_prefix=env.get("SECRET_PREFIX", "scrm/corp/"),
        wecom_api_base=(env.get("WECOM_API_BASE") or DEFAULT_WECOM_API_BASE).rstrip("/"),
        wecom_timeout=float(env.get("WECOM_TIMEOUT", "3")),
        pending_grace=int(env.get("PENDING_GRACE_SECONDS", "60")),
        max_receive_count=int(env.get("MAX_RECEIVE_COUNT", "5")),
        jobs_queue_url=env.get("JOBS_QUEUE_URL", ""),
        wecom_rate_margin=float(env.get("WECOM_RATE_MARGIN") or "0.8"),
    )


# Retail figures are counted per local business day; China keeps UTC+8 all year.
BUSINESS_UTC_OFFSET_HOURS = 8


def business_day(ts: float) -> str:
    """yyyy-mm-dd of epoch seconds `ts` in the business time zone."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts + BUSINESS_UTC_OFFSET_HOURS * 3600))


def business_time_iso(ts: float) -> str:
    """ISO 8601 of epoch seconds `ts` in the business time zone, e.g. 2026-11-25T16:26:40+08:00."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts + BUSINESS_UTC_OFFSET_HOURS * 3600)) + \
        f"+{BUSINESS_UTC_OFFSET_HOURS:02d}:00"
