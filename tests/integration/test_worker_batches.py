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
from tests.support.functions import LambdaContext, load_function

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
    result = load_function("worker").handler({"Records": [sqs_record(aws, hostile)]}, LambdaContext())
    assert result == {"batchItemFailures": []}  # nothing for SQS to deliver again
    stored = row(hostile)
    assert (stored.status, stored.outcome) == ("failed", "bad_ExternalUserID")


def test_dynamodb_refusing_a_key_is_permanent(corp, aws, monkeypatch):
    """An id that got past every check (here: the check switched off) and is too long for a key:
    DynamoDB's ValidationException fails the same way on every retry, so it is final at once."""
    monkeypatch.setattr(ids, "check", lambda event_type, fields: None)
    hostile = contact_event(external_userid="wm" + "a" * 4998)
    accepted(hostile)
    result = load_function("worker").handler({"Records": [sqs_record(aws, hostile)]}, LambdaContext())
    assert result == {"batchItemFailures": []}
    stored = row(hostile)
    assert (stored.status, stored.outcome) == ("failed", "refused_by_dynamodb")
    assert worker.process_message(hostile.as_message(), metrics()) == "failed"  # a replay: the same, at once
