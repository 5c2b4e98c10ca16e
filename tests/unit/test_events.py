import pytest
from scrm.wecom.callback.events import (
    CallbackEvent,
    EventError,
    check_create_time,
    dedupe_key,
    normalize,
)

SELF_BUILT = {"ToUserName": "ww1", "FromUserName": "sys", "CreateTime": "1795600000", "MsgType": "event",
              "Event": "change_external_contact", "ChangeType": "add_external_contact",
              "UserID": "zhangsan", "ExternalUserID": "wmA", "State": "s", "WelcomeCode": "W"}


def test_self_built_envelope_is_normalised():
    event = normalize("ww1", SELF_BUILT)
    assert (event.kind, event.event_type, event.change_type, event.create_time) == (
        "external_contact", "change_external_contact", "add_external_contact", 1795600000)


def test_third_party_envelope_uses_infotype_and_timestamp():
    fields = {"SuiteId": "s", "AuthCorpId": "ww1", "InfoType": "change_external_tag", "TimeStamp": "17",
              "ChangeType": "shuffle", "Id": "g1"}
    event = normalize("ww1", fields)
    assert (event.kind, event.create_time) == ("external_tag", 17)


def test_a_third_party_event_of_another_corp_is_refused():
    with pytest.raises(EventError) as err:
        normalize("ww1", {"AuthCorpId": "ww2", "InfoType": "change_contact", "TimeStamp": "1"})
    assert err.value.reason == "other_corp"


def test_messages_and_unknown_events_get_their_own_kinds():
    assert normalize("ww1", {"MsgType": "text", "CreateTime": "1", "Content": "hi", "MsgId": "9"}).kind == "message"
    assert normalize("ww1", {**SELF_BUILT, "Event": "something_new"}).kind == "unknown"


@pytest.mark.parametrize("fields,reason", [
    ({"CreateTime": "1"}, "no_event_type"),
    ({"MsgType": "event", "Event": "x"}, "bad_create_time"),
    ({"MsgType": "event", "Event": "x", "CreateTime": "tomorrow"}, "bad_create_time"),
])
def test_unusable_events_say_why(fields, reason):
    with pytest.raises(EventError) as err:
        normalize("ww1", fields)
    assert err.value.reason == reason


def test_dedupe_key_depends_on_every_field_and_the_corp_but_not_on_order():
    reordered = dict(reversed(list(SELF_BUILT.items())))
    assert dedupe_key("ww1", SELF_BUILT) == dedupe_key("ww1", reordered)
    assert dedupe_key("ww1", SELF_BUILT) != dedupe_key("ww2", SELF_BUILT)
    assert dedupe_key("ww1", SELF_BUILT) != dedupe_key("ww1", {**SELF_BUILT, "ExternalUserID": "wmB"})


def test_queue_message_round_trip():
    event = normalize("ww1", SELF_BUILT)
    assert CallbackEvent.from_message(event.as_message()) == event


@pytest.mark.parametrize("create_time,reason", [
    (1795600000 + 61, "create_time_in_future"),
    (1795600000 - 86401, "create_time_too_old"),
    (4102444800, "create_time_in_future"),
])
def test_a_create_time_outside_the_window_around_the_arrival_is_refused(create_time, reason):
    event = normalize("ww1", {**SELF_BUILT, "CreateTime": str(create_time)})
    with pytest.raises(EventError) as err:
        check_create_time(event, now=1795600000)
    assert err.value.reason == reason


@pytest.mark.parametrize("create_time", [1795600000 + 60, 1795600000, 1795600000 - 86400])
def test_a_create_time_inside_the_window_is_accepted(create_time):
    check_create_time(normalize("ww1", {**SELF_BUILT, "CreateTime": str(create_time)}), now=1795600000)


@pytest.mark.parametrize("field,value,reason", [
    ("ExternalUserID", "wm" + "a" * 127, "bad_ExternalUserID"),
    ("ExternalUserID", "wm a", "bad_ExternalUserID"),
    ("UserID", "张三", "bad_UserID"),
    ("UserID", "a#b", "bad_UserID"),
    ("WelcomeCode", "W#1", "bad_WelcomeCode"),
    ("State", "s\n1", "bad_State"),
    ("MainDepartment", "-1", "bad_MainDepartment"),
])
def test_ids_wecom_never_sends_are_refused_with_the_field_named(field, value, reason):
    with pytest.raises(EventError) as err:
        normalize("ww1", {**SELF_BUILT, field: value})
    assert err.value.reason == reason and err.value.detail
