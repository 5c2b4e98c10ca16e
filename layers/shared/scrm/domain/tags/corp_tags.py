"""Corp customer tags (企业客户标签): synced from WeCom, read per follow relation, and the tags our
own rules set (a channel tag per contact way) written back with mark_tag.

All of a corp's tag groups and tags live in one partition (keys.tags): at most 3000 tags
(FACTS §5.3), so a sync reads it whole with one query and compares. Callback events
(handlers/external_tag.py) only say which group or tag changed; the rows' content always
comes from get_corp_tag_list. Two guards keep a slow pull from undoing newer knowledge:
`synced_at` (a pull never overwrites a later pull) and the events' `version` (a pull fetched
before a change event's second never overwrites what that event recorded).
"""
from __future__ import annotations

import hashlib
import time

from pynamodb.exceptions import UpdateError

from scrm.store import keys
from scrm.store.models import Follow, Once, Tag, TagGroup, condition_failed, update_if
from scrm.store.once import ONCE_TTL_SECONDS
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import GoneError

CHANNEL_TAGS_EFFECT = "channel_tags"


# --- reading ---------------------------------------------------------------------------
def stored(corp_id: str) -> tuple[dict[str, TagGroup], dict[str, Tag]]:
    """Every stored group and tag of the corp, deleted ones included, by id."""
    groups: dict[str, TagGroup] = {}
    tags: dict[str, Tag] = {}
    for row in TagGroup.query(keys.tags(corp_id), TagGroup.SK.startswith(keys.TAG_GROUP_PREFIX)):
        groups[row.group_id] = row
    for row in Tag.query(keys.tags(corp_id), Tag.SK.startswith(keys.TAG_PREFIX)):
        tags[row.tag_id] = row
    return groups, tags


def describe_tags(corp_id: str, tag_ids: set[str] | list[str]) -> list[dict]:
    """Name and group of each live tag, in WeCom's display order (group order, then tag order).
    Ids we do not know yet (no sync since they were created) are kept with name None."""
    if not tag_ids:
        return []
    tags = {t.tag_id: t for t in Tag.batch_get([keys.tag(corp_id, t) for t in set(tag_ids)])}
    group_ids = {t.group_id for t in tags.values() if t.group_id}
    groups = {g.group_id: g for g in TagGroup.batch_get([keys.tag_group(corp_id, g) for g in group_ids])}
    ranked = []
    for tag_id in set(tag_ids):
        tag = tags.get(tag_id)
        if tag is not None and tag.deleted:
            continue
        group = groups.get(tag.group_id) if tag is not None and tag.group_id else None
        # WeCom shows a larger `order` first
        rank = (-(group.order or 0) if group else 0, group.group_id if group else "", -(tag.order or 0) if tag else 0,
                tag_id)
        ranked.append((rank, {"tag_id": tag_id, "name": tag.name if tag else None,
                              "group_id": tag.group_id if tag else None,
                              "group_name": group.name if group else None}))
    return [view for _, view in sorted(ranked, key=lambda pair: pair[0])]


def follow_tags(corp_id: str, external_userid: str, userid: str) -> list[dict]:
    try:
        row = Follow.get(*keys.follow(corp_id, external_userid, userid))
    except Follow.DoesNotExist:
        return []
    return describe_tags(corp_id, row.tag_ids or set())


# --- syncing ---------------------------------------------------------------------------
def _pulled_before(cls: type[TagGroup] | type[Tag], fetched_at: float):
    """Condition: no later pull stored the row, and no change event after the pull's second."""
    return ((cls.synced_at.does_not_exist() | (cls.synced_at <= fetched_at))
            & (cls.version.does_not_exist() | (cls.version < (int(fetched_at) + 1) * 10)))


def _same(row: TagGroup | Tag | None, name: str | None, order: int, group_id: str | None = None) -> bool:
    return (row is not None and not row.deleted and not row.needs_sync and row.name == name
            and int(row.order or 0) == order and (group_id is None or row.group_id == group_id))


def sync_corp_tags(client: WeComClient, corp_id: str, *, group_ids: list[str] | None = None,
                   tag_ids: list[str] | None = None, now: float | None = None) -> dict:
    """Pull the corp's tags (all, or some groups, or some tags) and store them.

    What the pull was asked for but did not return is marked deleted: with no filter every
    stored group and tag; with group_ids those groups and their tags; with tag_ids those
    tags. Rule-group (strategy) tags come from another API and are never touched here.
    Rows whose content is unchanged are not written.
    """
    fetched_at = time.time() if now is None else now
    answer = client.get_corp_tag_list(tag_ids=tag_ids, group_ids=group_ids)
    groups, tags = stored(corp_id)
    counts = {"groups": 0, "tags": 0, "written": 0, "unchanged": 0, "deleted": 0, "skipped": 0}

    def upsert(row: TagGroup | Tag, same: bool, actions: list) -> None:
        if same:
            counts["unchanged"] += 1
            return
        cls = type(row)
        written = update_if(row, [*actions, cls.entity.set(cls), cls.deleted.set(False), cls.needs_sync.set(False),
                                cls.synced_at.set(fetched_at)], _pulled_before(cls, fetched_at))
        counts["written" if written else "skipped"] += 1

    seen_groups: set[str] = set()
    seen_tags: set[str] = set()
    # Items WeCom flags `deleted` count as not returned: they are marked deleted below.
    for group in answer.get("tag_group") or []:
        if group.get("deleted"):
            continue
        group_id, name, order = str(group["group_id"]), group.get("group_name"), int(group.get("order") or 0)
        seen_groups.add(group_id)
        counts["groups"] += 1
        upsert(TagGroup(*keys.tag_group(corp_id, group_id)), _same(groups.get(group_id), name, order),
               [TagGroup.group_id.set(group_id), TagGroup.name.set(name), TagGroup.order.set(order)])
        for tag in group.get("tag") or []:
            if tag.get("deleted"):
                continue
            tag_id, tag_name, tag_order = str(tag["id"]), tag.get("name"), int(tag.get("order") or 0)
            seen_tags.add(tag_id)
            counts["tags"] += 1
            upsert(Tag(*keys.tag(corp_id, tag_id)), _same(tags.get(tag_id), tag_name, tag_order, group_id),
                   [Tag.tag_id.set(tag_id), Tag.group_id.set(group_id), Tag.name.set(tag_name),
                    Tag.order.set(tag_order)])

    # What the pull covered but did not return no longer exists in WeCom.
    if group_ids:
        gone_groups = [g for g in group_ids if g not in seen_groups]
        gone_tags = [t.tag_id for t in tags.values() if t.group_id in set(group_ids) and t.tag_id not in seen_tags]
    elif tag_ids:
        gone_groups, gone_tags = [], [t for t in tag_ids if t not in seen_tags]
    else:
        gone_groups = [g.group_id for g in groups.values() if g.group_id not in seen_groups and not g.strategy_id]
        gone_tags = [t.tag_id for t in tags.values() if t.tag_id not in seen_tags and not t.strategy_id]
    for cls, key, gone, known in ((TagGroup, keys.tag_group, gone_groups, groups), (Tag, keys.tag, gone_tags, tags)):
        for object_id in gone:
            row = known.get(object_id)
            if row is not None and row.deleted and not row.needs_sync:
                continue
            if update_if(cls(*key(corp_id, object_id)),
                       [cls.deleted.set(True), cls.needs_sync.set(False), cls.synced_at.set(fetched_at)],
                       cls.PK.exists() & _pulled_before(cls, fetched_at)):
                counts["deleted"] += 1
    return counts


def forget_group(corp_id: str, group_id: str) -> int:
    """A deleted group takes its tags with it (WeCom keeps no tags outside a group)."""
    _, tags = stored(corp_id)
    marked = 0
    for tag in tags.values():
        if tag.group_id == group_id and not tag.deleted:
            tag.update(actions=[Tag.deleted.set(True), Tag.needs_sync.set(False)])
            marked += 1
    return marked


# --- tags our rules set ------------------------------------------------------------------
def _marker(corp_id: str, userid: str, external_userid: str, tag_ids: list[str], occasion: str) -> tuple[str, str]:
    wanted = sorted(set(tag_ids))
    digest = hashlib.blake2s(",".join(wanted).encode(), digest_size=8).hexdigest()
    return keys.once(corp_id, CHANNEL_TAGS_EFFECT,
                     f"{userid}{keys.SEP}{external_userid}{keys.SEP}{digest}{keys.SEP}{occasion}")


def mark_channel_tags(client: WeComClient, corp_id: str, userid: str, external_userid: str, tag_ids: list[str],
                      *, occasion: str, first_time: bool = False) -> bool:
    """mark_tag `tag_ids` on one follow relation unless they were marked for `occasion` before;
    True if marked now: the caller then stores them on the follow and remember_channel_tags.

    mark_tag is idempotent and cannot join a DynamoDB transaction, so it goes first and the
    marker after (a crash between them marks again on the retry: at least once, never lost).
    The marker is what keeps a late retry from re-adding a tag the staff member removed since.
    `first_time`: the caller knows the occasion is new (its timeline entry was just written),
    so there is no marker to look for. A relation that is gone (84061) is remembered as done:
    there is nothing left to tag."""
    if not tag_ids:
        return False
    if not first_time:
        try:
            Once.get(*_marker(corp_id, userid, external_userid, tag_ids, occasion), consistent_read=True)
            return False
        except Once.DoesNotExist:
            pass
    try:
        client.mark_tag(userid, external_userid, add_tag=sorted(set(tag_ids)))
    except GoneError:
        remember_channel_tags(corp_id, userid, external_userid, tag_ids, occasion=occasion)
        return False
    return True


def record_channel_tags(corp_id: str, userid: str, external_userid: str, tag_ids: list[str]) -> None:
    """Add the tags to our follow row (when no fetch of the relation stores them)."""
    try:
        Follow(*keys.follow(corp_id, external_userid, userid)).update(
            actions=[Follow.tag_ids.add(set(tag_ids))], condition=Follow.PK.exists())
    except UpdateError as err:
        if not condition_failed(err):
            raise


def remember_channel_tags(corp_id: str, userid: str, external_userid: str, tag_ids: list[str], *,
                          occasion: str) -> None:
    pk, sk = _marker(corp_id, userid, external_userid, tag_ids, occasion)
    now = int(time.time())
    Once(pk, sk, effect=CHANNEL_TAGS_EFFECT, done_at=now, cause=occasion or None,
         expires_at=now + ONCE_TTL_SECONDS).save()


def apply_channel_tags(client: WeComClient, corp_id: str, userid: str, external_userid: str,
                       tag_ids: list[str], *, occasion: str = "") -> bool:
    """Mark `tag_ids` on one follow relation once per (follow, tag set, occasion); True if
    marked now. The event's add is a good `occasion`: a customer who deletes and re-adds gets
    the channel tags again."""
    if not mark_channel_tags(client, corp_id, userid, external_userid, tag_ids, occasion=occasion):
        return False
    record_channel_tags(corp_id, userid, external_userid, tag_ids)
    remember_channel_tags(corp_id, userid, external_userid, tag_ids, occasion=occasion)
    return True
