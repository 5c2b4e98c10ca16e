"""Corp tags: full and partial pulls from WeCom, change_external_tag events, follow tags.

The simulator plays WeCom (its admin-console actions send real callbacks); the harness is
test_customers.py's.
"""
from __future__ import annotations

from scrm.domain.tags import corp_tags as tags
from scrm.domain.tags import events as external_tag
from scrm.store import keys
from scrm.store.models import ApiBlock, Follow, RateWindow, Tag, TagGroup
from scrm.wecom.apis.client import forget_caches
from scrm.wecom.callback.events import CallbackEvent

from tests.integration.test_customers import CORP, WeCom, normalize, process, wecom  # noqa: F401


def seed(wecom: WeCom) -> dict[str, str]:
    """Two groups: Level (VIP, Regular) and Channel (poster); returns name -> id."""
    ids = {}
    for group, names, order in (("Level", ["VIP", "Regular"], 2), ("Channel", ["poster"], 1)):
        made = wecom.client.add_corp_tag(group_name=group, order=order,
                                         tag=[{"name": n, "order": 10 - i} for i, n in enumerate(names)])["tag_group"]
        ids[group] = made["group_id"]
        ids.update({t["name"]: t["id"] for t in made["tag"]})
    return ids


def group_row(group_id: str) -> TagGroup:
    return TagGroup.get(*keys.tag_group(CORP, group_id))


def tag_row(tag_id: str) -> Tag:
    return Tag.get(*keys.tag(CORP, tag_id))


def reorder(wecom: WeCom, group_id: str, order: int | None = None, tags: dict[str, int] | None = None) -> None:
    """Reorder in the admin console. The simulator's shuffle action only sends the event, so
    its state is changed here directly."""
    group = wecom.sim._corps[CORP].tag_groups[group_id]
    if order is not None:
        group["order"] = order
    for tag_id, tag_order in (tags or {}).items():
        group["tag"][tag_id]["order"] = tag_order


def deliver(wecom: WeCom) -> list[str]:
    """The worker's part: each delivered change_external_tag event through the handler."""
    return [external_tag.handle(event) for event in wecom.inbox.take()]


def tag_event(change: str, object_id: str, at: int, **fields: str) -> CallbackEvent:
    """An event the simulator cannot send (or not at the moment a test needs it)."""
    return normalize(CORP, {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(at), "MsgType": "event",
                            "Event": "change_external_tag", "ChangeType": change, "Id": object_id, **fields})


def test_full_sync_stores_groups_and_tags_with_names_and_order(wecom):
    ids = seed(wecom)

    counts = tags.sync_corp_tags(wecom.client, CORP)

    assert (counts["groups"], counts["tags"], counts["written"]) == (2, 3, 5)
    assert (group_row(ids["Level"]).name, group_row(ids["Level"]).order) == ("Level", 2)
    vip = tag_row(ids["VIP"])
    assert (vip.name, vip.group_id, vip.order, vip.deleted, vip.needs_sync) == ("VIP", ids["Level"], 10, False, False)
    assert tags.sync_corp_tags(wecom.client, CORP)["written"] == 0  # unchanged rows are not rewritten


def test_full_sync_marks_what_disappeared_deleted(wecom):
    ids = seed(wecom)
    tags.sync_corp_tags(wecom.client, CORP)
    wecom.client.post("externalcontact/del_corp_tag", {"tag_id": [ids["Regular"]], "group_id": [ids["Channel"]]})

    assert tags.sync_corp_tags(wecom.client, CORP)["deleted"] == 3  # Regular, the Channel group, poster

    assert tag_row(ids["Regular"]).deleted and group_row(ids["Channel"]).deleted and tag_row(ids["poster"]).deleted
    assert not tag_row(ids["VIP"]).deleted


def test_created_and_renamed_tags_are_pulled_when_their_events_arrive(wecom):
    ids = seed(wecom)
    tags.sync_corp_tags(wecom.client, CORP)

    made = wecom.sim.tag_change(CORP, "create", group_id=ids["Level"], name="Gold")
    wecom.sim.tag_change(CORP, "update", tag_id=ids["VIP"], name="VIP+")
    wecom.sim.tag_change(CORP, "update", group_id=ids["Channel"], name="Source")
    assert deliver(wecom) == ["synced", "synced", "synced"]

    gold = tag_row(made["id"])
    assert (gold.name, gold.group_id, gold.needs_sync) == ("Gold", ids["Level"], False)
    assert tag_row(ids["VIP"]).name == "VIP+"
    assert group_row(ids["Channel"]).name == "Source"
    assert wecom.sim.call_counts["externalcontact/get_corp_tag_list"] == 4  # one full pull, one per event


def test_deleted_tag_and_group_events_mark_rows_without_a_pull(wecom):
    ids = seed(wecom)
    tags.sync_corp_tags(wecom.client, CORP)

    wecom.sim.tag_change(CORP, "delete", tag_id=ids["Regular"])
    wecom.sim.tag_change(CORP, "delete", group_id=ids["Channel"])
    assert deliver(wecom) == ["applied", "applied"]

    assert tag_row(ids["Regular"]).deleted and group_row(ids["Channel"]).deleted
    assert tag_row(ids["poster"]).deleted  # the group took its tags with it
    assert wecom.sim.call_counts["externalcontact/get_corp_tag_list"] == 1


def test_shuffle_of_one_group_and_of_all_groups(wecom):
    ids = seed(wecom)
    tags.sync_corp_tags(wecom.client, CORP)

    reorder(wecom, ids["Level"], tags={ids["VIP"]: 1, ids["Regular"]: 9})
    wecom.sim.tag_change(CORP, "shuffle", group_id=ids["Level"])
    reorder(wecom, ids["Channel"], order=5)
    wecom.sim.tag_change(CORP, "shuffle")  # empty Id: the order of every group changed
    events = wecom.inbox.take()
    assert [e.fields.get("Id") for e in events] == [ids["Level"], ""]
    assert [external_tag.handle(e) for e in events] == ["synced", "synced"]

    assert (tag_row(ids["VIP"]).order, tag_row(ids["Regular"]).order) == (1, 9)
    assert group_row(ids["Channel"]).order == 5
    names = [t["name"] for t in tags.describe_tags(CORP, [ids["VIP"], ids["Regular"], ids["poster"]])]
    assert names == ["poster", "Regular", "VIP"]  # groups then tags, larger order first


def test_strategy_tags_are_recorded_and_not_pulled(wecom):
    # rule-group tags live in another API: the simulator has none, so the event is built here
    event = tag_event("create", "etStrategyTag", 1795600000, TagType="tag", StrategyId="7")

    assert external_tag.handle(event) == "applied"

    row = tag_row("etStrategyTag")
    assert (row.strategy_id, row.needs_sync) == ("7", True)
    assert tags.sync_corp_tags(wecom.client, CORP)["deleted"] == 0  # a full pull leaves it alone
    assert wecom.sim.call_counts["externalcontact/get_corp_tag_list"] == 1


def test_a_rate_limited_pull_leaves_needs_sync_for_the_nightly_full_sync(wecom):
    ids = seed(wecom)
    wecom.sim.block_api("externalcontact/get_corp_tag_list", 45009)
    wecom.sim.tag_change(CORP, "update", tag_id=ids["VIP"], name="VIP+")

    assert deliver(wecom) == ["sync_deferred"]
    assert tag_row(ids["VIP"]).needs_sync

    wecom.sim.block_api("externalcontact/get_corp_tag_list", None)
    for block in [*ApiBlock.scan(), *RateWindow.scan()]:
        block.delete()  # the block's minute has passed (its row and its window's mark)
    forget_caches()
    tags.sync_corp_tags(wecom.client, CORP)
    row = tag_row(ids["VIP"])
    assert (row.name, row.needs_sync) == ("VIP+", False)


def test_a_pull_fetched_before_an_event_does_not_undo_it(wecom):
    ids = seed(wecom)
    tags.sync_corp_tags(wecom.client, CORP, now=wecom.sim.now() - 120)
    deleted_at = int(wecom.sim.now())
    # The simulator still lists the tag: it plays what a pull fetched before the deletion saw.
    assert external_tag.handle(tag_event("delete", ids["Regular"], deleted_at, TagType="tag")) == "applied"

    tags.sync_corp_tags(wecom.client, CORP, now=deleted_at - 60)
    assert tag_row(ids["Regular"]).deleted
    tags.sync_corp_tags(wecom.client, CORP, now=deleted_at + 60)  # a later pull is believed
    assert not tag_row(ids["Regular"]).deleted


def test_follow_tags_name_the_tags_of_one_relation(wecom):
    ids = seed(wecom)
    tags.sync_corp_tags(wecom.client, CORP)
    ext, add = wecom.add("zhangsan")
    process(add)
    edit = wecom.act("edit_customer", "zhangsan", ext, add_tag=[ids["VIP"], ids["poster"]])
    process(edit)

    assert Follow.get(*keys.follow(CORP, ext, "zhangsan")).tag_ids == {ids["VIP"], ids["poster"]}
    assert [(t["name"], t["group_name"]) for t in tags.follow_tags(CORP, ext, "zhangsan")] == [
        ("VIP", "Level"), ("poster", "Channel")]
    assert tags.follow_tags(CORP, ext, "lisi") == []
