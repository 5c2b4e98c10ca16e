"""Builders for callback requests as WeCom sends them (signed, encrypted, API Gateway v2)."""
from __future__ import annotations

import json
from pathlib import Path

from scrm.wecom.callback.crypto import WeComCrypto

from infra.scripts.make_events import SAMPLE_CORP, http_event

EVENTS = Path(__file__).resolve().parents[2] / "events"

VECTOR_A = {  # FACTS §2, vector A: WeCom's public sample credentials
    "corp_id": "ww1436e0e65a779aee",
    "token": "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    "encoding_aes_key": "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    "secret": "sample-secret-not-real",
    "agent_id": "1000002",
}
assert VECTOR_A["corp_id"] == SAMPLE_CORP["corp_id"]


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def crypto(corp: dict = VECTOR_A, receive_id: str | None = None) -> WeComCrypto:
    return WeComCrypto(corp["token"], corp["encoding_aes_key"], receive_id or corp["corp_id"])


def contact_xml(change: str, userid: str = "zhangsan", external_userid: str = "wmCustomer0001",
                create_time: int = 1795600000, corp_id: str = VECTOR_A["corp_id"], extra: str = "") -> str:
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
            f"<UserID><![CDATA[{userid}]]></UserID><ExternalUserID><![CDATA[{external_userid}]]></ExternalUserID>"
            f"{extra}</xml>")


def post(plaintext: str, corp: dict = VECTOR_A, receive_id: str | None = None) -> dict:
    """A POST exactly as WeCom would send it: freshly sealed (new nonce) every call."""
    body, query = crypto(corp, receive_id).seal(plaintext)
    return http_event("POST", corp["corp_id"], query, body)
