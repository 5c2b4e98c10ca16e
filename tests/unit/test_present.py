"""How ops answers are written (scrm.entry.ops.present), without a table: names come from a stub."""
from __future__ import annotations

import json

import pytest
from scrm.entry.ops import present


@pytest.fixture
def names(monkeypatch):
    asked = []

    def lookup(corp_id, refs):
        refs = set(refs)
        asked.append(refs)
        return {ref: f"<{ref[0]} {ref[1]}>" for ref in refs}

    monkeypatch.setattr(present, "names", lookup)
    return asked


def test_epoch_fields_get_china_time_beside_them_at_every_depth(names):
    data = {"created_at": 1795665600, "valid_until": None, "items": [{"at": 0, "deep": {"redeemed_at": 1.5}}],
            "day": "2026-11-26", "resigned_at": True}
    out = present.dress(data, "wwcorp")
    assert out["created_at_iso"] == "2026-11-26T12:00:00+08:00" and out["valid_until_iso"] is None
    assert out["items"][0]["at_iso"] == "1970-01-01T08:00:00+08:00"
    assert out["items"][0]["deep"]["redeemed_at_iso"] == "1970-01-01T08:00:01+08:00"
    assert "day_iso" not in out and out["resigned_at_iso"] is None  # a bool is no time
    assert list(out)[:2] == ["created_at", "created_at_iso"]  # beside, in order


def test_ids_get_their_names_in_one_lookup_except_an_objects_own(names):
    data = {"items": [
        {"userid": "zhangsan", "name": "张三", "store_id": "10"},  # a staff member: not named again
        {"store_id": "10", "name": "徐汇店", "region_id": "3"},  # a store
        {"code": "C1", "template_id": "t1", "staff_userid": "lisi", "redeemed_by": None},
        {"owner_kind": "store", "owner_id": "10", "users": ["zhangsan", "lisi"]},
        {"scope": "region", "scope_id": "3", "value": 5},
    ]}
    out = present.dress(data, "wwcorp")["items"]
    assert "staff_name" not in out[0] and out[0]["store_name"] == "<department 10>"
    assert "store_name" not in out[1] and out[1]["region_name"] == "<department 3>"
    assert (out[2]["template_name"], out[2]["staff_name"], out[2]["redeemed_by_name"]) == (
        "<template t1>", "<staff lisi>", None)
    assert out[3]["owner_name"] == "<department 10>"
    assert out[3]["user_names"] == ["<staff zhangsan>", "<staff lisi>"]
    assert out[4]["scope_name"] == "<department 3>"
    assert len(names) == 1


def test_chinese_is_written_as_chinese_and_sets_as_lists(names):
    text = present.dumps({"name": "春季", "tag_ids": {"b", "a"}}, "wwcorp")
    assert json.loads(text) == {"name": "春季", "tag_ids": ["a", "b"]} and "春季" in text


def test_without_a_corp_nothing_is_looked_up(names):
    assert present.dress({"error": "unauthorized", "userid": "x"}, None)["staff_name"] is None
    assert names == []
