"""change_external_tag: corp tags and tag groups.

The event only names what changed (FACTS §3.4), so it is recorded (version-guarded, marked
`needs_sync`) and then the group or tag is pulled with get_corp_tag_list. A shuffle with an
empty Id reorders every group: everything is pulled. Deletions need no pull. Rule-group
(strategy) tags are not in get_corp_tag_list, so they stay recorded for their own sync. If
WeCom rate-limits the pull, the row keeps `needs_sync` and the nightly full sync fetches it.
"""
from __future__ import annotations

from scrm.domain.event_fields import Permanent, text, version_of
from scrm.domain.tags import corp_tags as tags
from scrm.store import keys
from scrm.store.models import Tag, TagGroup, apply_versioned
from scrm.wecom.apis.client import for_corp
from scrm.wecom.apis.errors import RateLimited
from scrm.wecom.callback.events import CallbackEvent

RANK = {"create": 1, "update": 1, "shuffle": 1, "delete": 2}


def handle(event: CallbackEvent) -> str:
    change = event.change_type
    if change not in RANK:
        return "stored"
    corp_id, fields = event.corp_id, event.fields
    object_id, strategy_id = text(fields, "Id"), text(fields, "StrategyId")
    if change == "shuffle" and not object_id:
        return _pull(corp_id, {})
    if not object_id:
        raise Permanent("missing_id")
    is_group = change == "shuffle" or text(fields, "TagType") == "tag_group"
    if is_group:
        row, cls = TagGroup(*keys.tag_group(corp_id, object_id)), TagGroup
        actions = [TagGroup.group_id.set(object_id)]
    else:
        row, cls = Tag(*keys.tag(corp_id, object_id)), Tag
        actions = [Tag.tag_id.set(object_id)]
    actions += [cls.deleted.set(change == "delete"), cls.needs_sync.set(change != "delete")]
    if strategy_id:
        actions.append(cls.strategy_id.set(strategy_id))
    if not apply_versioned(row, version_of(event.create_time, RANK[change]), actions):
        return "stale"  # a newer event on the same object pulls it
    if strategy_id:
        return "applied"
    if change == "delete":
        if is_group:
            tags.forget_group(corp_id, object_id)
        return "applied"
    return _pull(corp_id, {"group_ids": [object_id]} if is_group else {"tag_ids": [object_id]})


def _pull(corp_id: str, target: dict[str, list[str]]) -> str:
    try:
        tags.sync_corp_tags(for_corp(corp_id), corp_id, **target)
    except RateLimited:
        return "sync_deferred"
    return "synced"
