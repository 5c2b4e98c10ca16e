"""Crashes injected between every two steps: no event is lost and no effect happens twice."""
from __future__ import annotations

import json

import boto3
import pytest
from scrm.entry import callback as intake
from scrm.entry import worker as router
from scrm.entry.recovery import sweep_pending
from scrm.platform.credentials import CorpCredentials
from scrm.platform.observability import metrics
from scrm.store import corps, inbox, keys
from scrm.store.models import Event, Follow, TimelineEntry

from tests.support.callbacks import VECTOR_A, contact_xml, post

CORP = VECTOR_A["corp_id"]
T0 = 1795600000


@pytest.fixture
def corp(aws, simulated_wecom):
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    return VECTOR_A


class Injected(Exception):
    pass


def fail_once(client, operation: str) -> dict:
    """Make the next `operation` on this real client fail as if the process died there."""
    state = {"armed": True}

    def hook(**kwargs):
        if state["armed"]:
            state["armed"] = False
            raise Injected(operation)

    client.meta.events.register(f"before-call.{client.meta.service_model.service_name}.{operation}", hook)
    return state


def receive(aws) -> list[dict]:
    """Receive (not delete) what is queued, as a Lambda poller would."""
    sqs = boto3.client("sqs")
    got = []
    while True:
        batch = sqs.receive_message(QueueUrl=aws.queue_urls["EventsQueue"], MaxNumberOfMessages=10,
                                    VisibilityTimeout=0).get("Messages", [])
        if not batch:
            return got
        for message in batch:
            sqs.delete_message(QueueUrl=aws.queue_urls["EventsQueue"], ReceiptHandle=message["ReceiptHandle"])
        got += batch


def work(aws) -> list[str]:
    """Process what is queued; the outcome of recording the follow (first part) for each."""
    return [router.process_message(json.loads(m["Body"]), metrics()).split(",")[0] for m in receive(aws)]


def new_customers() -> int:
    """Adds of the customer applied: one timeline entry per event, and the follow made live by it.
    (The daily figures count the follow's change from the stream: tests/integration/test_stats.py.)"""
    adds = [e for e in TimelineEntry.query(keys.customer_pk(CORP, "wmCustomer0001"),
                                           TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX))
            if e.what == "add_external_contact"]
    follow = Follow.get(*keys.follow(CORP, "wmCustomer0001", "zhangsan"))
    return len(adds) if follow.added_at == T0 else 0


def event_status(plaintext_event: dict) -> str:
    return Event.get(*keys.event(CORP, plaintext_event["event_id"])).status


def test_crash_after_persist_before_enqueue_then_wecom_resends(corp, aws):
    xml = contact_xml("add_external_contact", create_time=T0)
    fail_once(inbox._sqs(), "SendMessage")
    with pytest.raises(Injected):
        intake.handle_http(post(xml), metrics())  # no 200: WeCom will re-send
    assert work(aws) == []  # nothing was queued ...
    [row] = list(Event.scan())
    assert row.status == "received"  # ... but the event is safe in the table

    resend = post(xml)  # WeCom re-sends after its 5-second timeout
    answer = intake.accept(CORP, resend["queryStringParameters"], resend["body"].encode(), now=row.received_at + 5)
    assert (answer.status, answer.duplicate) == (200, True)
    assert work(aws) == ["applied"]
    assert new_customers() == 1
    assert Event.get(row.PK, row.SK).status == "processed"


def test_crash_after_persist_and_wecom_never_resends_the_sweeper_heals(corp, aws):
    fail_once(inbox._sqs(), "SendMessage")
    with pytest.raises(Injected):
        intake.handle_http(post(contact_xml("add_external_contact", create_time=T0)), metrics())
    [row] = list(Event.scan())
    assert sweep_pending(now=row.received_at + 1) == {"reenqueued": 0}  # still inside the grace period
    assert sweep_pending(now=row.received_at + 3600) == {"reenqueued": 1}
    assert work(aws) == ["applied"]
    assert new_customers() == 1
    assert sweep_pending(now=row.received_at + 7200) == {"reenqueued": 0}  # processed rows leave the index


def test_crash_after_the_effect_before_marking_processed_counts_once(corp, aws):
    intake.handle_http(post(contact_xml("add_external_contact", create_time=T0)), metrics())
    [message] = receive(aws)
    body = json.loads(message["Body"])
    original_finish = router.finish

    def crash(*args, **kwargs):
        raise Injected("finish")

    router.finish = crash
    try:
        with pytest.raises(Injected):
            router.process_message(body, metrics())
    finally:
        router.finish = original_finish
    assert new_customers() == 1
    assert Event.get(*keys.event(CORP, body["event_id"])).status == "received"
    assert router.process_message(body, metrics()).startswith("applied")  # SQS redelivers
    assert new_customers() == 1
    assert Event.get(*keys.event(CORP, body["event_id"])).status == "processed"


def test_a_copy_arriving_while_the_first_is_in_flight_is_not_queued_again(corp, aws):
    xml = contact_xml("add_external_contact", create_time=T0)
    intake.handle_http(post(xml), metrics())
    intake.handle_http(post(xml), metrics())
    assert len(receive(aws)) == 1


def test_an_event_delivered_four_times_counts_once(corp, aws):
    xml = contact_xml("add_external_contact", create_time=T0)
    for _ in range(4):
        assert intake.handle_http(post(xml), metrics())["statusCode"] == 200
    outcomes = work(aws)
    assert outcomes and set(outcomes) == {"applied"}
    assert new_customers() == 1


def test_the_same_queue_message_processed_twice_counts_once(corp, aws):
    intake.handle_http(post(contact_xml("add_external_contact", create_time=T0)), metrics())
    [message] = receive(aws)
    body = json.loads(message["Body"])
    router.process_message(body, metrics())
    router.process_message(body, metrics())
    assert new_customers() == 1


def test_a_deletion_delivered_before_the_add_leaves_the_follow_deleted(corp, aws):
    add = contact_xml("add_external_contact", create_time=T0, extra="<State>s1</State>")
    delete = contact_xml("del_follow_user", create_time=T0 + 60)
    intake.handle_http(post(delete), metrics())
    assert work(aws) == ["applied"]
    intake.handle_http(post(add), metrics())
    assert work(aws) == ["stale"]  # older than what the follow already knows
    follow = Follow.get(*keys.follow(CORP, "wmCustomer0001", "zhangsan"))
    assert follow.status == "deleted_by_customer"
    timeline = TimelineEntry.query(keys.customer_pk(CORP, "wmCustomer0001"),
                                   TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX))
    assert {"add_external_contact", "del_follow_user"} <= {e.what for e in timeline}  # both really happened


def test_a_worker_failure_reports_only_that_record_and_the_batch_goes_on(corp, aws):
    from tests.support.functions import LambdaContext, load_function

    intake.handle_http(post(contact_xml("add_external_contact", create_time=T0)), metrics())
    [good] = receive(aws)
    records = [
        {"messageId": "good", "receiptHandle": "r1", "body": good["Body"], "attributes": {}, "messageAttributes": {},
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1",
         "md5OfBody": ""},
        {"messageId": "poison", "receiptHandle": "r2", "body": "not json", "attributes": {}, "messageAttributes": {},
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1",
         "md5OfBody": ""},
    ]
    result = load_function("worker").handler({"Records": records}, LambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert new_customers() == 1


def test_a_replay_after_the_event_row_expired_still_succeeds(corp, aws):
    intake.handle_http(post(contact_xml("add_external_contact", create_time=T0)), metrics())
    [message] = receive(aws)
    body = json.loads(message["Body"])
    router.process_message(body, metrics())
    Event.get(*keys.event(CORP, body["event_id"])).delete()  # TTL removed it before a late replay
    assert router.process_message(body, metrics()).startswith("applied")  # same version: idempotent
    assert new_customers() == 1
