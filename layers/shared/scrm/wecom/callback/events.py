"""A decrypted callback, normalised: which corp, which kind, which object, and its dedupe key.

WeCom re-sends a callback it got no answer to within 5 s and may re-encrypt it, so the
dedupe key is a digest of the decrypted fields, never of the raw body. All fields take
part, so two real events (two customers scanning the same code in the same second, say)
never share a key while a re-sent one always does.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

# Event (self-built envelope) or InfoType (third-party envelope) -> kind the router knows
KINDS = {
    "change_external_contact": "external_contact",
    "change_external_chat": "external_chat",
    "change_external_tag": "external_tag",
    "change_contact": "address_book",
}
UNKNOWN = "unknown"


class EventError(ValueError):
    """The decrypted XML is well formed but not a WeCom callback we can accept."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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
