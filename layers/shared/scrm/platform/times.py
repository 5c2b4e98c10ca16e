"""Times as people read them: China time (UTC+8 all year), for API answers and messages.

Stored times stay epoch seconds; what a person reads is ISO 8601 with its offset
(`2026-12-01T10:00:00+08:00`) beside the epoch field, and in sentences
"2026-12-01 10:00 China time", never a bare epoch number.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from scrm.platform.config import BUSINESS_UTC_OFFSET_HOURS

CHINA = timezone(timedelta(hours=BUSINESS_UTC_OFFSET_HOURS), "China time")


def iso(ts: float) -> str:
    """ISO 8601 in China time, to the second: 2026-12-01T10:00:00+08:00."""
    return datetime.fromtimestamp(int(ts), CHINA).isoformat()


def readable(ts: float) -> str:
    """For sentences: 2026-12-01 10:00 China time (seconds shown only when they are not :00)."""
    moment = datetime.fromtimestamp(int(ts), CHINA)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M") + " China time"
