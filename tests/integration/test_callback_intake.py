"""The callback against moto: what it answers, what it writes, and what it never writes."""
from __future__ import annotations

import json
import time

import boto3
import pytest
from scrm.entry import callback as intake
from scrm.platform.credentials import CorpCredentials
from scrm.platform.observability import metrics
from scrm.store import corps, inbox

from tests.support.callbacks import VECTOR_A, contact_xml, crypto, post, sample
from tests.support.functions import LambdaContext, load_function


@pytest.fixture
def corp(aws, simulated_wecom):
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    return VECTOR_A


def call(http_event: dict) -> dict:
    return intake.handle_http(http_event, metrics())


def table_items(aws) -> list[dict]:
    return boto3.client("dynamodb").scan(TableName=aws.table_name)["Items"]


def event_rows(aws) -> list[dict]:
    return [i for i in table_items(aws) if i["entity"]["S"] == "Event"]


def queued(aws) -> list[dict]:
    sqs = boto3.client("sqs")
    out = []
    while True:
        batch = sqs.receive_message(QueueUrl=aws.queue_urls["EventsQueue"], MaxNumberOfMessages=10,
                                    VisibilityTimeout=30).get("Messages", [])
        if not batch:
            return out
        out += [json.loads(m["Body"]) for m in batch]


# --- GET: URL verification ---------------------------------------------------------------
def test_url_verification_answers_the_official_vector_plaintext(corp):
    query = {"msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "timestamp": "1476416373",
             "nonce": "47744683",
             "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="}
    event = sample("callback/verify_url.json")
    event["queryStringParameters"] = query
    answer = call(event)
    assert answer["statusCode"] == 200
    assert answer["body"] == "1288432023552776189"


def test_url_verification_through_the_function_with_the_sample_event(corp):
    handler = load_function("callback").handler
    answer = handler(sample("callback/verify_url.json"), LambdaContext())
    assert (answer["statusCode"], answer["body"]) == (200, "sample-echo-1795600000")


def test_url_verification_with_a_wrong_signature_is_403(corp):
    event = sample("callback/verify_url.json")
    event["queryStringParameters"]["msg_signature"] = "f" * 40
    assert call(event)["statusCode"] == 403


# --- POST: accepted once ---------------------------------------------------------------
def test_sample_add_event_is_stored_and_queued_once(corp, aws):
    handler = load_function("callback").handler
    answer = handler(sample("callback/add_external_contact.json"), LambdaContext())
    assert answer == {"statusCode": 200, "headers": {"Content-Type": "text/plain; charset=utf-8"}, "body": ""}
    [row] = event_rows(aws)
    assert row["status"]["S"] == "queued"  # its message is out, noted on the row
    assert "GSI2PK" not in row  # so the sweeper never sends it again
    assert row["change_type"]["S"] == "add_external_contact"
    assert "GSI1PK" not in row and "GSI1SK" not in row  # no by-day index: nothing reads it
    [message] = queued(aws)
    assert message["event_id"] == row["event_id"]["S"]
    assert message["fields"]["ExternalUserID"] == "wmSampleCustomer0001"


def test_a_resent_event_reencrypted_with_a_new_nonce_is_stored_once(corp, aws):
    xml = contact_xml("add_external_contact")
    first, second = post(xml), post(xml)
    assert first["queryStringParameters"]["nonce"] != second["queryStringParameters"]["nonce"]
    assert first["body"] != second["body"]
    assert call(first)["statusCode"] == 200
    assert call(second)["statusCode"] == 200
    assert len(event_rows(aws)) == 1


def test_two_customers_scanning_in_the_same_second_are_two_events(corp, aws):
    call(post(contact_xml("add_external_contact", external_userid="wmA")))
    call(post(contact_xml("add_external_contact", external_userid="wmB")))
    assert len(event_rows(aws)) == 2


def test_an_unknown_but_well_formed_event_type_is_accepted_and_stored(corp, aws):
    xml = contact_xml("add_external_contact").replace("change_external_contact", "brand_new_event")
    assert call(post(xml))["statusCode"] == 200
    [row] = event_rows(aws)
    assert row["kind"]["S"] == "unknown"
    assert row["event_type"]["S"] == "brand_new_event"


def test_the_third_party_envelope_is_accepted(corp, aws):
    xml = (f"<xml><SuiteId><![CDATA[wwsuite]]></SuiteId><AuthCorpId><![CDATA[{VECTOR_A['corp_id']}]]></AuthCorpId>"
           "<InfoType><![CDATA[change_external_contact]]></InfoType><TimeStamp>1795600000</TimeStamp>"
           "<ChangeType><![CDATA[del_follow_user]]></ChangeType><UserID>lisi</UserID>"
           "<ExternalUserID>wmX</ExternalUserID></xml>")
    assert call(post(xml))["statusCode"] == 200
    [row] = event_rows(aws)
    assert (row["kind"]["S"], row["change_type"]["S"]) == ("external_contact", "del_follow_user")


def test_three_writes_before_the_answer_the_row_the_message_and_that_it_was_sent(corp, aws):
    calls = []
    for client in (inbox._dynamodb(), inbox._sqs()):
        client.meta.events.register("before-call.*.*", lambda model, **kw: calls.append(model.name))
    call(post(contact_xml("add_external_contact")))
    assert calls == ["PutItem", "SendMessage", "UpdateItem"]


def test_a_duplicate_of_a_queued_event_sends_no_second_message_however_late(corp, aws):
    """Before: every copy of an event still waiting in a backlog was queued again."""
    xml = contact_xml("add_external_contact")
    first = post(xml)
    call(first)
    late_copy = post(xml)
    late_copy["requestContext"]["timeEpoch"] = first["requestContext"]["timeEpoch"] + 60_000
    assert call(late_copy)["statusCode"] == 200
    assert len(queued(aws)) == 1


def test_failing_to_note_the_message_still_answers_200(corp, aws):
    """The message is out, so the event is safe: WeCom must not re-send it for that."""
    def fail(**kwargs):
        raise inbox.ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "UpdateItem")

    inbox._dynamodb().meta.events.register("before-call.dynamodb.UpdateItem", fail)
    assert call(post(contact_xml("add_external_contact")))["statusCode"] == 200
    [row] = event_rows(aws)
    assert row["status"]["S"] == "received" and "GSI2PK" in row  # left for the sweeper, after its grace
    assert len(queued(aws)) == 1


# --- bad input: a clear status and nothing written ------------------------------------------
T0 = 1795600000  # when the sample requests reach the gateway (their requestContext.timeEpoch)


def _event_xml(event: str, change: str, fields: str, create_time: int = T0) -> str:
    return (f"<xml><ToUserName>{VECTOR_A['corp_id']}</ToUserName><FromUserName>sys</FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType>event</MsgType><Event>{event}</Event>"
            f"<ChangeType>{change}</ChangeType>{fields}</xml>")


def _bad_requests():
    xml = contact_xml("add_external_contact")
    good = post(xml)

    def with_query(**changes):
        event = post(xml)
        event["queryStringParameters"] = {**event["queryStringParameters"], **changes}
        return event

    def with_body(body):
        event = post(xml)
        event["body"] = body
        return event

    def signed_encrypt(encrypted):
        c = crypto()
        query = {"timestamp": "1795600000", "nonce": "42", "msg_signature": c.signature("1795600000", "42", encrypted)}
        body = f"<xml><ToUserName>{VECTOR_A['corp_id']}</ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        event = post(xml)
        event.update(queryStringParameters=query, body=body)
        return event

    unknown_corp = post(xml)
    unknown_corp["pathParameters"]["corp_id"] = "wwnobody"
    hostile_corp = post(xml)
    hostile_corp["pathParameters"]["corp_id"] = "../../etc#x"
    dtd = ('<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
           "<xml><Encrypt>&lol2;</Encrypt></xml>")
    return {
        "missing signature": (with_query(msg_signature=""), 403),
        "bad signature": (with_query(msg_signature="0" * 40), 403),
        "signature of another timestamp": (with_query(timestamp="1"), 403),
        "unknown corp": (unknown_corp, 404),
        "hostile corp id": (hostile_corp, 404),
        "body over 64 KB": (with_body("<xml>" + "a" * 65536 + "</xml>"), 413),
        "not XML": (with_body("hello"), 400),
        "XML with a DTD and entities": (with_body(dtd), 400),
        "envelope without Encrypt": (with_body("<xml><ToUserName>x</ToUserName></xml>"), 400),
        "undecryptable ciphertext": (signed_encrypt("bm90IGEgcmVhbCBjaXBoZXJ0ZXh0IGF0IGFsbA=="), 400),
        "receive id of another corp": (post(xml, receive_id="wwsomebodyelse"), 400),
        "decrypted text not XML": (post("just some text"), 400),
        "decrypted XML with an entity": (post('<!DOCTYPE x [<!ENTITY e "v">]><xml><Event>&e;</Event></xml>'), 400),
        "event of another corp (third-party AuthCorpId)": (post(
            "<xml><AuthCorpId>wwother</AuthCorpId><InfoType>change_external_contact</InfoType>"
            "<TimeStamp>1</TimeStamp></xml>"), 400),
        "no event type": (post("<xml><CreateTime>1</CreateTime></xml>"), 400),
        "bad CreateTime": (post("<xml><MsgType>event</MsgType><Event>x</Event><CreateTime>soon</CreateTime></xml>"), 400),
        "method not allowed": ({**good, "requestContext": {"http": {"method": "PUT"}}}, 405),
        # ids WeCom never sends: each would end up in a table key or an ops API path
        "ExternalUserID of 5,000 characters": (post(contact_xml("add_external_contact",
                                                                external_userid="wm" + "a" * 4998)), 400),
        "ExternalUserID with #": (post(contact_xml("add_external_contact", external_userid="wmA#FOLLOW#x")), 400),
        "UserID with #": (post(contact_xml("del_follow_user", userid="zhang#san")), 400),
        "UserID of 65 characters": (post(contact_xml("del_follow_user", userid="u" * 65)), 400),
        "WelcomeCode with #": (post(contact_xml("add_external_contact",
                                                extra="<WelcomeCode><![CDATA[W#1]]></WelcomeCode>")), 400),
        "State of 65 characters": (post(contact_xml("add_external_contact",
                                                    extra=f"<State><![CDATA[{'s' * 65}]]></State>")), 400),
        "ChatId with #": (post(_event_xml("change_external_chat", "create", "<ChatId>wr#1</ChatId>")), 400),
        "tag id with #": (post(_event_xml("change_external_tag", "update", "<Id>et#1</Id><TagType>tag</TagType>")),
                          400),
        "department id not a number": (post(_event_xml("change_contact", "update_party", "<Id>2#STAFF</Id>")), 400),
        "department list with #": (post(_event_xml("change_contact", "update_user",
                                                   "<UserID>lisi</UserID><Department>1,2#3</Department>")), 400),
        "department id over 32 bits": (post(_event_xml("change_contact", "delete_party", "<Id>4294967296</Id>")), 400),
        "group member with #": (post(_event_xml("change_external_chat", "update",
                                                "<ChatId>wr1</ChatId><MemChangeList><Item>wm#1</Item></MemChangeList>")),
                                400),
        # CreateTime outside the window around the request's arrival (the sample's 1795600000)
        "CreateTime in 2100": (post(contact_xml("del_follow_user", create_time=4102444800)), 400),
        "CreateTime two minutes ahead": (post(contact_xml("del_follow_user", create_time=T0 + 120)), 400),
        "CreateTime two days old": (post(contact_xml("del_follow_user", create_time=T0 - 2 * 86400)), 400),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_input_gets_a_clear_status_and_writes_nothing(corp, aws, case):
    event, status = _bad_requests()[case]
    answer = call(event)
    assert answer["statusCode"] == status
    assert answer["body"]  # the reason, for whoever is debugging the integration
    assert event_rows(aws) == []
    assert queued(aws) == []


def test_a_refused_id_is_named_in_the_answer(corp, aws):
    answer = call(post(contact_xml("add_external_contact", external_userid="wm" + "a" * 4998)))
    assert (answer["statusCode"], answer["body"]) == (400, "bad_ExternalUserID: longer than 128 characters")
    answer = call(post(contact_xml("del_follow_user", create_time=4102444800)))
    assert (answer["statusCode"], answer["body"]) == (
        400, "create_time_in_future: more than 60 seconds after its arrival")


@pytest.mark.parametrize("xml", [
    contact_xml("add_external_contact", external_userid="wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
                extra="<State><![CDATA[门店活动-春季]]></State><WelcomeCode><![CDATA[aB3+/x=_-.9]]></WelcomeCode>"),
    contact_xml("del_follow_user", userid="zhang.san@brand-01_x", create_time=T0 + 60),
    contact_xml("del_follow_user", create_time=T0 - 86400),
    _event_xml("change_external_tag", "shuffle", "<Id></Id><StrategyId>12</StrategyId>"),
    _event_xml("change_contact", "update_user",
               "<UserID>lisi</UserID><Department>1, 2,4294967295</Department><MainDepartment>2</MainDepartment>"),
    _event_xml("change_external_chat", "update",
               "<ChatId>wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA</ChatId><MemChangeList><Item>wmX-1</Item>"
               "<Item>zhangsan</Item></MemChangeList>"),
], ids=["customer ids as WeCom sends them", "UserID with every allowed character", "a day old",
        "shuffle of all groups (empty Id)", "department list", "group member list"])
def test_ids_and_times_wecom_does_send_are_accepted(corp, aws, xml):
    assert call(post(xml))["statusCode"] == 200
    assert len(event_rows(aws)) == 1


def test_a_signed_event_from_2100_cannot_make_the_real_later_events_stale(corp, aws):
    """The add from 2100 is refused, so the customer's real deletion a minute later applies."""
    from scrm.entry import worker
    from scrm.store import keys
    from scrm.store.models import Follow

    assert call(post(contact_xml("add_external_contact", create_time=4102444800)))["statusCode"] == 400
    assert call(post(contact_xml("add_external_contact", create_time=T0 - 60)))["statusCode"] == 200
    assert call(post(contact_xml("del_follow_user", create_time=T0)))["statusCode"] == 200
    outcomes = [worker.process_message(m, metrics()).split(",")[0] for m in queued(aws)]
    assert outcomes[-1] == "applied"
    follow = Follow.get(*keys.follow(VECTOR_A["corp_id"], "wmCustomer0001", "zhangsan"))
    assert follow.status == "deleted_by_customer"


def test_the_window_is_measured_from_the_gateway_arrival_time_or_else_the_clock(corp, aws):
    late = post(contact_xml("del_follow_user", create_time=T0))
    late["requestContext"]["timeEpoch"] = (T0 + 2 * 86400) * 1000  # held up two days before reaching us
    assert call(late)["statusCode"] == 400
    now = int(time.time())
    for create_time, status in ((now + 3600, 400), (now, 200)):
        request = post(contact_xml("del_follow_user", create_time=create_time))
        del request["requestContext"]["timeEpoch"]
        assert call(request)["statusCode"] == status


# --- credentials: the callback never needs the app secret ---------------------------------
def test_the_callback_works_without_the_app_secret_which_everyone_else_needs(corp, aws):
    from scrm.platform import credentials
    from scrm.wecom.apis.client import for_corp

    boto3.client("secretsmanager").delete_secret(SecretId=f"scrm/corp/{VECTOR_A['corp_id']}/app",
                                                 ForceDeleteWithoutRecovery=True)
    credentials.forget_cache()
    assert call(post(contact_xml("add_external_contact")))["statusCode"] == 200
    assert call(sample("callback/verify_url.json"))["statusCode"] == 200
    with pytest.raises(credentials.UnknownCorp):
        for_corp(VECTOR_A["corp_id"])


def test_a_corp_without_callback_secret_is_unknown_to_the_callback(corp, aws):
    from scrm.platform import credentials

    boto3.client("secretsmanager").delete_secret(SecretId=f"scrm/corp/{VECTOR_A['corp_id']}/callback",
                                                 ForceDeleteWithoutRecovery=True)
    credentials.forget_cache()
    assert call(post(contact_xml("add_external_contact")))["statusCode"] == 404


# --- our own infrastructure failing: 5xx so that WeCom retries -----------------------------
def test_a_failing_table_raises_so_the_gateway_answers_5xx(corp, aws):
    def fail(**kwargs):
        raise inbox.ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutItem")

    inbox._dynamodb().meta.events.register("before-call.dynamodb.PutItem", fail)
    with pytest.raises(inbox.ClientError):
        call(post(contact_xml("add_external_contact")))
    assert queued(aws) == []
