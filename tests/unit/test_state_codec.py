"""The contact-way `state` codec: at most 30 characters whatever goes in, round trips what it
spells out, says when something did not fit, and never raises on garbage."""
from __future__ import annotations

import random
import string

import pytest
from scrm.domain.contact_ways.state import (
    DEFAULT_CHANNEL,
    STATE_MAX,
    StateRef,
    decode_state,
    encode_state,
)

TOKEN = "k3x9a"
USERID_CHARS = string.ascii_letters + string.digits + "_-@."


def test_a_typical_staff_code_spells_everything_out():
    state = encode_state("staff", TOKEN, staff="zhangsan", store_id="10010", campaign_id="7f2q")
    assert state == "uk3x9a.uzhangsan.s10010.c7f2q"
    assert decode_state(state) == StateRef(staff="zhangsan", store_id="10010", campaign_id="7f2q",
                                           channel=DEFAULT_CHANNEL, kind="staff", token=TOKEN, complete=True)


def test_a_channel_other_than_the_default_is_spelled_out():
    state = encode_state("campaign", TOKEN, campaign_id="spring", store_id="12", channel="poster")
    assert state == "ck3x9a.cspring.s12.hposter"
    assert decode_state(state) == StateRef(staff=None, store_id="12", campaign_id="spring", channel="poster",
                                           kind="campaign", token=TOKEN, complete=True)


def test_a_64_character_userid_never_overflows_and_marks_the_state_incomplete():
    state = encode_state("staff", TOKEN, staff="u" * 64, store_id="4294967295", campaign_id="c" * 32,
                         channel="x" * 16)
    ref = decode_state(state)
    assert len(state) <= STATE_MAX
    assert ref is not None and not ref.complete and ref.staff is None and ref.kind == "staff"
    assert ref.store_id == "4294967295"  # what fits is still spelled out
    assert ref.channel is None  # unknown offline: resolve_state has it


def test_values_with_the_separator_are_left_to_the_table():
    ref = decode_state(encode_state("staff", TOKEN, staff="zhang.san@corp", store_id="7"))
    assert ref is not None and ref.staff is None and ref.store_id == "7" and not ref.complete


def test_random_requests_stay_within_30_characters_and_round_trip():
    rng = random.Random(20260401)

    def text(alphabet: str, longest: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, longest)))

    def maybe(alphabet: str, longest: int) -> str | None:
        return None if rng.random() < 0.3 else text(alphabet, longest)

    for _ in range(3000):
        kind = rng.choice(["staff", "store", "campaign"])
        token = "".join(rng.choice(string.digits + string.ascii_lowercase) for _ in range(5))
        values = {"staff": text(USERID_CHARS, 64) if kind == "staff" else None,
                  "store_id": str(rng.randint(1, 4294967295)) if kind == "store" else maybe(string.digits[1:], 10),
                  "campaign_id": text(USERID_CHARS[:-2], 32) if kind == "campaign" else maybe(USERID_CHARS[:-2], 32),
                  "channel": rng.choice([DEFAULT_CHANNEL, text(string.ascii_lowercase, 16)])}
        state = encode_state(kind, token, **values)
        ref = decode_state(state)
        assert len(state) <= STATE_MAX
        assert ref is not None and (ref.kind, ref.token) == (kind, token)
        for field, value in values.items():
            assert getattr(ref, field) in ((value,) if ref.complete else (value, None))


@pytest.mark.parametrize("garbage", [
    None, 42, b"uk3x9a", "", "u", "uk3x9", "xk3x9a.uzs", "uK3X9A.uzs", "uk3x9a", "uk3x9a.", "uk3x9a..uzs",
    "uk3x9auzs", "uk3x9a.u", "uk3x9a.zfoo", "uk3x9a.uzs.uls", "uk3x9a.u张三", "uk3x9a.u a", "uk3x9a.uzs.s1x",
    "sk3x9a.s0123", "uk3x9a.uzs." + "s1" * 10, "uk3x9a.uzs\n", "channel_from_another_tool",
])
def test_garbage_decodes_to_none(garbage):
    assert decode_state(garbage) is None


def test_fuzzed_strings_never_raise():
    rng = random.Random(7)
    alphabet = string.printable + "中文."
    for _ in range(5000):
        state = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            state = "uk3x9a." + state
        ref = decode_state(state)
        assert ref is None or isinstance(ref, StateRef)


@pytest.mark.parametrize(("kind", "token", "values"), [
    ("staff", "TOOLONG", {"staff": "zhangsan"}),
    ("staff", "k3x9a", {"store_id": "10"}),  # a staff code without its staff member
])
def test_a_bad_encoding_request_is_a_programming_error(kind, token, values):
    with pytest.raises(ValueError):
        encode_state(kind, token, **values)
