"""change_external_chat: customer group chats (details are pulled later by the sync)."""
from __future__ import annotations

from scrm.domain.event_fields import Permanent, text, version_of
from scrm.store import keys
from scrm.store.models import GroupChat, apply_versioned
from scrm.wecom.callback.events import CallbackEvent

RANK = {"create": 1, "update": 1, "dismiss": 2}


def handle(event: CallbackEvent) -> str:
    change = event.change_type
    if change not in RANK:
        return "stored"
    chat_id = text(event.fields, "ChatId")
    if not chat_id:
        raise Permanent("missing_chat_id")
    actions = [
        GroupChat.chat_id.set(chat_id),
        GroupChat.status.set("dismissed" if change == "dismiss" else "active"),
        GroupChat.last_change.set(text(event.fields, "UpdateDetail") or change),
        GroupChat.needs_sync.set(change != "dismiss"),
    ]
    member_version = text(event.fields, "CurMemVer")
    if member_version:
        actions.append(GroupChat.member_version.set(member_version))
    applied = apply_versioned(GroupChat(*keys.group_chat(event.corp_id, chat_id)),
                              version_of(event.create_time, RANK[change]), actions)
    return "applied" if applied else "stale"
