"""Regenerate the sample events in events/ (used by `sam local invoke -e` and by pytest).

The callback samples are signed and encrypted with the credentials of WeCom's own public
test vector (FACTS §2, vector A), so `tests/` can register that corp and replay them.
Run: python -m infra.scripts.make_events
"""
from __future__ import annotations

import json
from pathlib import Path

from scrm.store import keys
from scrm.store.models import Coupon, Follow, Welcome
from scrm.wecom.callback.crypto import WeComCrypto

SAMPLE_CORP = {
    "corp_id": "ww1436e0e65a779aee",
    "token": "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    "encoding_aes_key": "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    "secret": "sample-secret-not-real",
    "agent_id": "1000002",
}
ROOT = Path(__file__).resolve().parents[2] / "events"
PREFIX = b"0123456789abcdef"  # fixed, so regenerating gives the same files


def http_event(method: str, corp_id: str, query: dict, body: str | None = None) -> dict:
    raw_query = "&".join(f"{k}={v}" for k, v in query.items())
    return {
        "version": "2.0",
        "routeKey": f"{method} /wecom/callback/{{corp_id}}",
        "rawPath": f"/wecom/callback/{corp_id}",
        "rawQueryString": raw_query,
        "headers": {"content-type": "text/xml", "user-agent": "Mozilla/4.0"},
        "queryStringParameters": query,
        "pathParameters": {"corp_id": corp_id},
        "requestContext": {
            "accountId": "123456789012", "apiId": "sample", "domainName": "sample.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": f"/wecom/callback/{corp_id}", "protocol": "HTTP/1.1",
                     "sourceIp": "101.226.103.0", "userAgent": "Mozilla/4.0"},
            "requestId": "sample-request-id", "routeKey": f"{method} /wecom/callback/{{corp_id}}",
            "stage": "$default", "time": "25/Nov/2026:08:00:00 +0000", "timeEpoch": 1795600000000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def contact_xml(change: str, extra: str = "", create_time: int = 1795600000) -> str:
    corp = SAMPLE_CORP["corp_id"]
    return (f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
            f"<UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmSampleCustomer0001]]></ExternalUserID>"
            f"{extra}</xml>")


def sealed(crypto: WeComCrypto, plaintext: str, timestamp: str, nonce: str) -> tuple[str, dict]:
    encrypted = crypto.encrypt(plaintext, random_prefix=PREFIX)
    body = (f"<xml><ToUserName><![CDATA[{SAMPLE_CORP['corp_id']}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
    query = {"msg_signature": crypto.signature(timestamp, nonce, encrypted), "timestamp": timestamp, "nonce": nonce}
    return body, query


def stream_record(n: int, name: str, new, old=None) -> dict:
    """A DynamoDB stream record as Lambda delivers it, the images as the models serialize them."""
    change = {"ApproximateCreationDateTime": 1795600000 + n, "Keys": {"PK": {"S": new.PK}, "SK": {"S": new.SK}},
              "NewImage": new.serialize(), "SequenceNumber": f"{1100000000017454423009 + n}", "SizeBytes": 512,
              "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if old is not None:
        change["OldImage"] = old.serialize()
    return {"eventID": f"sample{n:026d}", "eventName": name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1", "dynamodb": change,
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/scrm-ScrmTable/stream/"
                              "2026-11-25T00:00:00.000"}


def stats_batch(corp: str) -> dict:
    """What the stats projector receives: a new customer, their welcome sent, their coupon issued and
    redeemed, and a change of the follow that counts nothing (a profile fetch)."""
    customer, staff, code = "wmSampleCustomer0001", "zhangsan", "SAMPLE0000000001"
    follow = dict(external_userid=customer, userid=staff, status="active", added_at=1795600000,
                  state="s1.st0001.c0.qr", version=17956000001, GSI1PK=keys.follows_of_staff(corp, staff),
                  GSI1SK=f"{keys.FOLLOW_PREFIX}{customer}")
    added = Follow(*keys.follow(corp, customer, staff), **follow)
    fetched = Follow(*keys.follow(corp, customer, staff), **follow, remark="张女士", synced_at=1795600003)
    claim = dict(external_userid=customer, userid=staff, claimed_at=1795600001, lease_until=1795600011, holder="sample")
    sending = Welcome(*keys.welcome(corp, customer, staff, "WELCOMECODE0001"), status="sending", **claim)
    sent = Welcome(*keys.welcome(corp, customer, staff, "WELCOMECODE0001"), status="sent", sent_at=1795600002,
                   coupon_code=code, coupon_reason="issued", **claim)
    terms = dict(code=code, template_id="newcomer", campaign_id="c0", external_userid=customer, occasion="welcome",
                 kind="amount", amount=2000, threshold=10000, issued_at=1795600001, valid_from=1795600001,
                 valid_until=1798271999, staff_userid=staff, store_id="1001",
                 GSI1PK=keys.coupons_of_customer(corp, customer), GSI1SK=keys.coupon_of_customer_sk(1795600001, code))
    issued = Coupon(*keys.coupon(corp, code), status="issued", **terms)
    redeemed = Coupon(*keys.coupon(corp, code), status="redeemed", redeemed_at=1795603600, redeemed_store_id="1001",
                      redeemed_by="lisi", redemption_request="pos-1-0001", **terms)
    return {"Records": [stream_record(1, "INSERT", added), stream_record(2, "INSERT", issued),
                        stream_record(3, "MODIFY", sent, sending), stream_record(4, "MODIFY", fetched, added),
                        stream_record(5, "MODIFY", redeemed, issued)]}


def build() -> dict[str, dict]:
    corp = SAMPLE_CORP["corp_id"]
    crypto = WeComCrypto(SAMPLE_CORP["token"], SAMPLE_CORP["encoding_aes_key"], corp)
    out: dict[str, dict] = {}
    echostr = crypto.encrypt("sample-echo-1795600000", random_prefix=PREFIX)
    out["callback/verify_url.json"] = http_event("GET", corp, {
        "msg_signature": crypto.signature("1795600000", "1234567", echostr),
        "timestamp": "1795600000", "nonce": "1234567", "echostr": echostr})
    adds = contact_xml("add_external_contact",
                       "<State><![CDATA[s1.st0001.c0.qr]]></State><WelcomeCode><![CDATA[WELCOMECODE0001]]></WelcomeCode>")
    body, query = sealed(crypto, adds, "1795600000", "7654321")
    out["callback/add_external_contact.json"] = http_event("POST", corp, query, body)
    body, query = sealed(crypto, contact_xml("del_follow_user", create_time=1795600060), "1795600060", "7654322")
    out["callback/del_follow_user.json"] = http_event("POST", corp, query, body)
    body, query = sealed(crypto, adds, "1795600000", "7654321")
    out["callback/bad_signature.json"] = http_event("POST", corp, {**query, "msg_signature": "0" * 40}, body)
    message = {"corp_id": corp, "event_id": "sample0000000000000000000000000000000001", "kind": "external_contact",
               "event_type": "change_external_contact", "change_type": "add_external_contact",
               "create_time": 1795600000,
               "fields": {"ToUserName": corp, "FromUserName": "sys", "CreateTime": "1795600000", "MsgType": "event",
                          "Event": "change_external_contact", "ChangeType": "add_external_contact",
                          "UserID": "zhangsan", "ExternalUserID": "wmSampleCustomer0001", "State": "s1.st0001.c0.qr"}}
    out["worker/sqs_batch.json"] = {"Records": [{
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": json.dumps(message, ensure_ascii=False),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795600000000",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1795600000001"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:EventsQueue", "awsRegion": "us-east-1"}]}
    welcome = json.loads(json.dumps(out["worker/sqs_batch.json"]))
    body = {**message, "event_id": "sample0000000000000000000000000000000002",
            "fields": {**message["fields"], "WelcomeCode": "WELCOMECODE0001"}}
    welcome["Records"][0]["body"] = json.dumps(body, ensure_ascii=False)
    welcome["Records"][0]["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:WelcomeQueue"
    out["welcome/sqs_batch.json"] = welcome
    out["stats/stream_batch.json"] = stats_batch(corp)
    out["sweeper/schedule.json"] = {
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-25T08:05:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/SweeperFunctionSweep"], "detail": {}}
    step = {"corp": corp, "job": "org-sync-2026-11-26", "kind": "org-sync", "step": "plan"}
    out["jobs/sqs_batch.json"] = {"Records": [{
        "messageId": "6c1e0b7a-2f4d-4b8e-9a51-3d2c7e9f0a11", "receiptHandle": "AQEBh3Jk9sample0Lq2",
        "body": json.dumps(step, separators=(",", ":")),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795629600000",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1795629600001"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:JobsQueue", "awsRegion": "us-east-1"}]}
    out["jobs/schedule.json"] = {
        "version": "0", "id": "2b0f5e7c-8d3a-4f61-b9c2-7e4a1d6f8b30", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-25T18:05:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/JobsFunctionWatchdog"], "detail": {}}
    return out


def main() -> None:
    for name, event in build().items():
        path = ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(event, ensure_ascii=False, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT.parent)}")


if __name__ == "__main__":
    main()
