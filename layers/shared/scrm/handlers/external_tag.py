"""change_external_tag: corp tags and tag groups, marked for a pull of their details."""
from __future__ import annotations

from scrm import keys
from scrm.events import CallbackEvent
from scrm.handlers import Permanent, apply_versioned, text, version_of
from scrm.models import Tag, TagGroup

RANK = {"create": 1, "update": 1, "shuffle": 1, "delete": 2}
ALL_GROUPS = "*"  # a shuffle with no Id reorders every group


def handle(event: CallbackEvent) -> str:
    change = event.change_type
    if change not in RANK:
        return "stored"
    object_id = text(event.fields, "Id")
    version = version_of(event.create_time, RANK[change])
    if change == "shuffle" or text(event.fields, "TagType") == "tag_group":
        group_id = object_id or (ALL_GROUPS if change == "shuffle" else None)
        if not group_id:
            raise Permanent("missing_id")
        row, cls = TagGroup(*keys.tag_group(event.corp_id, group_id)), TagGroup
        actions = [TagGroup.group_id.set(group_id)]
    else:
        if not object_id:
            raise Permanent("missing_id")
        row, cls = Tag(*keys.tag(event.corp_id, object_id)), Tag
        actions = [Tag.tag_id.set(object_id)]
    actions += [cls.deleted.set(change == "delete"), cls.needs_sync.set(change != "delete")]
    return "applied" if apply_versioned(row, version, actions) else "stale"
