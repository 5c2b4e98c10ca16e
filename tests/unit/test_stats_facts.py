"""Which stream records are facts of the daily figures (scrm.domain.stats.facts), read from
the stats function's own sample event and from records changed one field at a time."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from scrm.domain.stats.facts import BadRecord, Fact, facts_of

SAMPLE = json.loads((Path(__file__).resolve().parents[2] / "events" / "stats" / "stream_batch.json").read_text())
CORP = "ww1436e0e65a779aee"
RECORDS = SAMPLE["Records"]


def test_the_sample_batch_holds_a_customers_first_morning():
    assert [facts_of(r) for r in RECORDS] == [
        [Fact(CORP, "new_customers", "wmSampleCustomer0001#zhangsan#1795600000", 1795600000, staff="zhangsan",
              placed=True)],
        [Fact(CORP, "coupons_issued", "SAMPLE0000000001", 1795600001, staff="zhangsan", store="1001")],
        [Fact(CORP, "welcomes_sent", "wmSampleCustomer0001#WELCOME#zhangsan#WELCOMECODE0001", 1795600002,
              staff="zhangsan", placed=True)],
        [],  # the profile fetch changed the remark: no fact
        [Fact(CORP, "coupons_redeemed", "SAMPLE0000000001", 1795603600, staff="zhangsan", store="1001")],
    ]
    assert facts_of(RECORDS[0])[0].day == "2026-11-25"


def changed(record: dict, image: str, **attributes) -> dict:
    out = copy.deepcopy(record)
    for name, value in attributes.items():
        if value is None:
            out["dynamodb"][image].pop(name, None)
        else:
            out["dynamodb"][image][name] = value
    return out


def test_removals_and_items_that_are_no_facts_count_nothing():
    assert facts_of({**RECORDS[0], "eventName": "REMOVE"}) == []
    assert facts_of(changed(RECORDS[0], "NewImage", entity={"S": "TimelineEntry"})) == []
    sent_again = changed(RECORDS[2], "OldImage", status={"S": "sent"})
    assert facts_of(sent_again) == []


@pytest.mark.parametrize("old_status, new_status, source, metric", [
    ("active", "deleted_by_customer", None, "lost_customers"),
    ("active", "deleted_by_staff", "staff", "deleted_customers"),
    ("active", "deleted_by_staff", "reconcile", "deleted_customers"),
    ("active", "deleted_by_staff", "DELETE_BY_TRANSFER", None),
    ("deleted_by_customer", "deleted_by_customer", None, None),
    ("deleted_by_customer", "deleted_by_staff", "staff", "deleted_customers"),
])
def test_deletions_count_on_the_day_of_their_event(old_status, new_status, source, metric):
    record = changed(RECORDS[3], "NewImage", status={"S": new_status}, version={"N": "17956864002"},
                     delete_source={"S": source} if source else None)
    record = changed(record, "OldImage", status={"S": old_status})
    found = facts_of(record)
    if metric is None:
        assert found == []
    else:
        [fact] = found
        assert (fact.metric, fact.at, fact.day, fact.key) == (metric, 1795686400, "2026-11-26",
                                                              "wmSampleCustomer0001#zhangsan#17956864002")


@pytest.mark.parametrize("old, new, counts", [
    ({"status": "half"}, {"status": "active"}, False),  # counted when half-added
    ({"status": "deleted_by_staff"}, {"status": "active"}, True),  # added again
    ({"status": "active", "added_at": None}, {"status": "active"}, True),  # the add time arrives with a fetch
    (None, {"status": "active", "added_at": None}, False),  # an edit of a follow never seen: no add time yet
    (None, {"status": "half"}, True),
])
def test_a_follow_becoming_live_counts_once_its_add_time_is_known(old, new, counts):
    record = copy.deepcopy(RECORDS[3])
    if old is None:
        del record["dynamodb"]["OldImage"]
    else:
        record = changed(record, "OldImage", **{k: {"S": v} if isinstance(v, str) else v for k, v in old.items()})
    record = changed(record, "NewImage", **{k: {"S": v} if isinstance(v, str) else v for k, v in new.items()})
    assert [f.metric for f in facts_of(record)] == (["new_customers"] if counts else [])


@pytest.mark.parametrize("record, image, broken", [
    (RECORDS[1], "NewImage", {"issued_at": None}),
    (RECORDS[4], "NewImage", {"redeemed_at": {"S": "soon"}}),
    (RECORDS[0], "NewImage", {"PK": {"S": "CORPS"}}),
    (RECORDS[0], "NewImage", {"userid": None}),
])
def test_a_counted_item_that_cannot_be_read_is_a_bad_record(record, image, broken):
    with pytest.raises(BadRecord):
        facts_of(changed(record, image, **broken))
