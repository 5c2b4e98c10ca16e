"""The callback's door through the local gateway: its arrival time is the gateway's own."""
from __future__ import annotations

import time

import boto3
import pytest
import requests
from scrm.store import keys
from scrm.wecom.callback.crypto import WeComCrypto
from scrm.wecom.callback.events import dedupe_key

pytestmark = pytest.mark.e2e


def contact(corp_id: str, create_time: int, external_userid: str = "wmE2eDoor0001") -> dict:
    return {"ToUserName": corp_id, "FromUserName": "sys", "CreateTime": str(create_time), "MsgType": "event",
            "Event": "change_external_contact", "ChangeType": "del_follow_user", "UserID": "zhangsan",
            "ExternalUserID": external_userid}


def send(stack, corp, fields: dict) -> requests.Response:
    xml = "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + "</xml>"
    body, query = WeComCrypto(corp.token, corp.encoding_aes_key, corp.corp_id).seal(xml)
    return requests.post(stack.callback_url(corp.corp_id), params=query, data=body.encode(), timeout=5)


def status(stack, corp_id: str, fields: dict) -> str | None:
    pk, sk = keys.event(corp_id, dedupe_key(corp_id, fields))
    item = boto3.client("dynamodb").get_item(TableName=stack.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}})
    return item.get("Item", {}).get("status", {}).get("S")


def test_a_signed_callback_from_2100_or_with_an_overlong_id_is_refused_and_stored_nowhere(stack):
    corp = stack.corps[0]
    future = contact(corp.corp_id, 4102444800)
    answer = send(stack, corp, future)
    assert (answer.status_code, answer.text) == (400, "create_time_in_future: more than 60 seconds after its arrival")
    overlong = contact(corp.corp_id, int(time.time()), external_userid="wm" + "a" * 4998)
    assert send(stack, corp, overlong).status_code == 400
    assert status(stack, corp.corp_id, future) is None and status(stack, corp.corp_id, overlong) is None


def test_a_callback_of_now_is_accepted_and_noted_queued(stack):
    corp = stack.corps[0]
    fields = contact(corp.corp_id, int(time.time()), external_userid="wmE2eDoorNow")
    assert send(stack, corp, fields).status_code == 200
    stack.drain(timeout=30)
    assert status(stack, corp.corp_id, fields) == "processed"
