"""The worker's batches against moto: events that can never be applied are marked failed, not
sent round the dead-letter loop."""
from __future__ import annotations

import json

import boto3
import pytest
from scrm.entry import worker
from scrm.platform.credentials import CorpCredentials
from scrm.platform.observability import metrics
from scrm.store import corps, inbox, keys
from scrm.store.models import Event
from scrm.wecom.callback import ids
from scrm.wecom.callback.events import CallbackEvent, dedupe_key

from tests.support.callbacks import VECTOR_A
from tests.support.functions import context_for, load_function

CORP = VECTOR_A["corp_id"]
T0 = 1795600000


@pytest.fixture
def corp(aws, simulated_wecom):
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    simulated_wecom.add_staff(CORP, "zhangsan", "张三")
    return VECTOR_A


def contact_event(change: str = "del_follow_user", external_userid: str = "wmCustomer0001",
                  create_time: int = T0) -> CallbackEvent:
    fields = {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(create_time), "MsgType": "event",
              "Event": "change_external_contact", "ChangeType": change, "UserID": "zhangsan",
              "ExternalUserID": external_userid}
    return CallbackEvent(corp_id=CORP, event_id=dedupe_key(CORP, fields), kind="external_contact",
                         event_type="change_external_contact", change_type=change, create_time=create_time,
                         fields=fields)


def accepted(event: CallbackEvent) -> None:
    """As the callback stored and queued it (before intake checked ids, for the hostile ones)."""
    inbox.persist(event, T0)


def sqs_record(aws, event: CallbackEvent, message_id: str = "m1", receives: int = 1) -> dict:
    return {"messageId": message_id, "receiptHandle": f"rh-{message_id}", "body": json.dumps(event.as_message()),
            "attributes": {"ApproximateReceiveCount": str(receives)}, "messageAttributes": {},
            "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:EventsQueue", "awsRegion": "us-east-1"}


def row(event: CallbackEvent) -> Event:
    return Event.get(*keys.event(event.corp_id, event.event_id))


def drain(aws) -> None:
    sqs = boto3.client("sqs")
    for url in aws.queue_urls.values():
        sqs.purge_queue(QueueUrl=url)


# --- events that can never be applied ----------------------------------------------------------
def test_a_queued_event_with_an_id_wecom_never_sends_is_marked_failed_not_retried(corp, aws):
    hostile = contact_event(external_userid="wm" + "a" * 4998)
    accepted(hostile)
    result = load_function("worker").handler({"Records": [sqs_record(aws, hostile)]}, context_for("worker"))
    assert result == {"batchItemFailures": []}  # nothing for SQS to deliver again
    stored = row(hostile)
    assert (stored.status, stored.outcome) == ("failed", "bad_ExternalUserID")


def test_dynamodb_refusing_a_key_is_permanent(corp, aws, monkeypatch):
    """An id that got past every check (here: the check switched off) and is too long for a key:
    DynamoDB's ValidationException fails the same way on every retry, so it is final at once."""
    monkeypatch.setattr(ids, "check", lambda event_type, fields: None)
    hostile = contact_event(external_userid="wm" + "a" * 4998)
    accepted(hostile)
    result = load_function("worker").handler({"Records": [sqs_record(aws, hostile)]}, context_for("worker"))
    assert result == {"batchItemFailures": []}
    stored = row(hostile)
    assert (stored.status, stored.outcome) == ("failed", "refused_by_dynamodb")
    assert worker.process_message(hostile.as_message(), metrics()) == "failed"  # a replay: the same, at once


# --- the time budget ------------------------------------------------------------------------
class Invocation:
    """A Lambda context whose clock the records move: each record 'takes' what it says."""

    def __init__(self, seconds: float):
        self.left = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.left * 1000)


def test_a_batch_stops_taking_records_when_time_runs_short_and_reports_the_rest(corp, aws):
    """Before: all ten records ran whatever the time left, and a timeout failed every one."""
    events = [contact_event(external_userid=f"wmSlow{i:02d}") for i in range(10)]
    for e in events:
        accepted(e)
    invocation = Invocation(120)  # WorkerFunction's Timeout
    ran = []

    def slow(event: CallbackEvent) -> str:  # WeCom answering slowly: each record takes 20 s
        ran.append(event.event_id)
        invocation.left -= 20
        return "applied"

    batch = {"Records": [sqs_record(aws, e, message_id=f"m{i}") for i, e in enumerate(events)]}
    result = worker.handle_batch(batch, invocation, metrics(), record_handler=slow)
    started = len(ran)
    assert 0 < started < 10
    assert ran == [e.event_id for e in events[:started]]
    assert result == {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(started, 10)]}
    assert {row(e).status for e in events[:started]} == {"processed"}
    assert {row(e).status for e in events[started:]} == {"queued"}  # untouched: they come back


def test_wecom_calls_inside_a_record_end_within_its_budget(corp, aws, simulated_wecom):
    """WeCom answering 'system busy' to every call: the client's retries stop at the record's
    budget, so the record fails in time for the rest of the batch instead of timing it out."""
    import time

    from scrm.wecom.apis.client import for_corp

    for_corp(CORP).get_follow_user_list()  # the token, fetched before the clock starts
    simulated_wecom.block_api("externalcontact/get", -1)
    timings = []

    def fetches(event: CallbackEvent) -> str:
        started = time.monotonic()
        try:
            for_corp(CORP).get_external_contact("wmCustomer0001")
        finally:
            timings.append(time.monotonic() - started)
        return "applied"

    events = [contact_event(external_userid=f"wmBusy{i}") for i in range(2)]
    for e in events:
        accepted(e)
    batch = {"Records": [sqs_record(aws, e, message_id=f"m{i}") for i, e in enumerate(events)]}
    result = worker.handle_batch(batch, context_for("worker"), metrics(), record_handler=fetches,
                                 record_budget=3.5)  # of which SETTLE (3 s) is kept back: 0.5 s for WeCom
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}
    assert len(timings) == 2 and max(timings) < 1.0  # unbounded, three retries sleep up to 3.5 s
    assert "TransientError" in row(events[0]).error  # the client's own error, quoted on the row


# --- dead letters ----------------------------------------------------------------------------
def test_the_last_failed_receive_marks_the_event_dead_with_its_error(corp, aws, simulated_wecom):
    simulated_wecom.block_api("externalcontact/get", 60011)  # the app lost its visible range
    event = contact_event(change="edit_external_contact")
    accepted(event)
    context = context_for("worker")
    for receives in (1, 2, 3, 4):
        result = worker.handle_batch({"Records": [sqs_record(aws, event, receives=receives)]}, context, metrics())
        assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
        assert row(event).status == "queued"
    worker.handle_batch({"Records": [sqs_record(aws, event, receives=5)]}, context, metrics())
    dead = row(event)
    assert dead.status == "dead" and dead.dead_at and dead.receives == 5
    assert "ConfigurationError" in dead.error and "60011" in dead.error


def test_a_late_failure_of_a_duplicate_never_marks_a_processed_event_dead(corp, aws, simulated_wecom):
    event = contact_event(change="edit_external_contact")
    accepted(event)
    assert worker.process_message(event.as_message(), metrics()) != "failed"
    simulated_wecom.block_api("externalcontact/get", 60011)
    worker.handle_batch({"Records": [sqs_record(aws, event, receives=5)]}, context_for("worker"), metrics())
    assert row(event).status == "processed"
