"""A decrypted callback, normalised: which corp, which kind, which object, and its dedupe key.

WeCom re-sends a callback it got no answer to within 5 s and may re-encrypt it, so the
dedupe key is a digest of the decrypted fields, never of the raw body. All fields take
part, so two real events (two customers scanning the same code in the same second, say)
never share a key while a re-sent one always does.

Before an event is accepted its ids must have the shapes WeCom gives them (scrm.wecom.callback.ids)
and its CreateTime must fall inside a window around the moment it arrived (check_create_time).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from scrm.wecom.callback import ids

# Event (self-built envelope) or InfoType (third-party envelope) -> kind the router knows
KINDS = {
    "change_external_contact": "external_contact",
    "change_external_chat": "external_chat",
    "change_external_tag": "external_tag",
    "change_contact": "address_book",
}
UNKNOWN = "unknown"

# How far CreateTime may lie from the moment the callback reached us. WeCom re-sends a
# callback only while it gets no answer (5 s, three retries: FACTS §1.8), so a real one
# arrives within minutes; a day is room for any delay on WeCom's side. Ahead of us only
# clock error can put it, and both clocks are NTP-synchronised. A CreateTime far ahead
# would outrank every real later event of the same object (versions are CreateTime-based),
# and one older than the event rows' TTL (90 days) could replay an event whose dedupe row
# is gone. The window applies once, at the door: the sweeper and `make replay-dlq`
# re-deliver stored events through the queue, so an event accepted in time is processed
# however late it is replayed (dead letters are kept 14 days).
CREATE_TIME_MAX_AGE = 24 * 3600
CREATE_TIME_MAX_AHEAD = 60


class EventError(ValueError):
    """The decrypted XML is well formed but not a WeCom callback we can accept.

    `reason` is short and machine-readable (a metric dimension); `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CallbackEvent:
    corp_id: str
    event_id: str
    kind: str
    event_type: str
    change_type: str | None
    create_time: int
    fields: dict = field(repr=False)

    def as_message(self) -> dict:
        return {
            "corp_id": self.corp_id,
            "event_id": self.event_id,
            "kind": self.kind,
            "event_type": self.event_type,
            "change_type": self.change_type,
            "create_time": self.create_time,
            "fields": self.fields,
        }

    @classmethod
    def from_message(cls, body: dict) -> "CallbackEvent":
        return cls(
            corp_id=body["corp_id"],
            event_id=body["event_id"],
            kind=body["kind"],
            event_type=body["event_type"],
            change_type=body.get("change_type"),
            create_time=int(body["create_time"]),
            fields=body["fields"],
        )


def dedupe_key(corp_id: str, fields: dict) -> str:
    canonical = json.dumps([corp_id, fields], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def normalize(corp_id: str, fields: dict) -> CallbackEvent:
    """Accepts the self-built (`Event`) and third-party (`InfoType`) envelopes."""
    auth_corp = fields.get("AuthCorpId")
    if auth_corp and auth_corp != corp_id:
        raise EventError("other_corp")
    event_type = fields.get("Event") or fields.get("InfoType") or fields.get("MsgType")
    if not isinstance(event_type, str) or not event_type:
        raise EventError("no_event_type")
    raw_time = fields.get("CreateTime") or fields.get("TimeStamp")
    try:
        create_time = int(raw_time)
    except (TypeError, ValueError):
        raise EventError("bad_create_time") from None
    if fields.get("MsgType") not in (None, "event") and "Event" not in fields:
        kind = "message"
    else:
        kind = KINDS.get(event_type, UNKNOWN)
    try:
        ids.check(event_type, fields)
    except ids.InvalidId as err:
        raise EventError(err.reason, err.why) from None
    change_type = fields.get("ChangeType")
    return CallbackEvent(
        corp_id=corp_id,
        event_id=dedupe_key(corp_id, fields),
        kind=kind,
        event_type=event_type,
        change_type=change_type if isinstance(change_type, str) else None,
        create_time=create_time,
        fields=fields,
    )


def check_create_time(event: CallbackEvent, now: float) -> None:
    """Refuse an event whose CreateTime lies outside the window around `now` (its arrival)."""
    if event.create_time < now - CREATE_TIME_MAX_AGE:
        raise EventError("create_time_too_old", f"more than {CREATE_TIME_MAX_AGE // 3600} hours before its arrival")
    if event.create_time > now + CREATE_TIME_MAX_AHEAD:
        raise EventError("create_time_in_future", f"more than {CREATE_TIME_MAX_AHEAD} seconds after its arrival")
