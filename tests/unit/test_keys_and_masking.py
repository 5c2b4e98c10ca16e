import json
import logging

import pytest
from scrm.platform.observability import MaskingFormatter, mask
from scrm.store import keys


def test_every_key_carries_the_corp_and_corps_cannot_collide():
    assert keys.customer("ww1", "wmA")[0].startswith("CORP#ww1#")
    assert keys.customer("ww1", "wmA") != keys.customer("ww2", "wmA")
    with pytest.raises(ValueError):
        keys.customer("ww1#CUST#x", "wmA")


def test_sharded_keys_are_stable_and_spread():
    shards = {keys.moment_task("ww1", "m1", f"user{i}")[0] for i in range(500)}
    assert len(shards) == keys.MOMENT_TASK_SHARDS
    assert keys.pending("abc") == keys.pending("abc")
    assert len({keys.pending(f"e{i}") for i in range(500)}) == keys.PENDING_SHARDS


def test_counter_scope_is_checked():
    with pytest.raises(ValueError):
        keys.daily_counter("ww1", "planet", "x", "2026-11-25")


def test_names_and_phone_numbers_are_masked():
    masked = mask({"name": "张三丰", "mobile": "13812345678", "note": "call 13812345678 today",
                   "nested": [{"Name": "Li Lei"}]})
    assert masked["name"] == "张**"
    assert masked["mobile"] == "***"
    assert masked["note"] == "call 138****5678 today"
    assert masked["nested"][0]["Name"].startswith("L") and "Lei" not in masked["nested"][0]["Name"]


def test_the_log_formatter_masks_whatever_is_logged():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "customer 13900001111 added", None, None)
    record.name_extra = None
    line = json.loads(MaskingFormatter().format(record))
    assert "13900001111" not in json.dumps(line)
