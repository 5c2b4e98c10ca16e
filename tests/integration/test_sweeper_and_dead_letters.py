"""The sweeper sends only what was never queued, and dead letters stay dead until replayed.

SQS is moto with the template's queues and redrive policies (maxReceiveCount 5): messages
are received, failed and dead-lettered by the real queue, as Lambda's event source would.
"""
from __future__ import annotations

import json

import boto3
import pytest
from scrm.entry import callback as intake
from scrm.entry import worker
from scrm.entry.recovery import (
    describe_dead_letters,
    replay_dead_letters,
    sweep_pending,
)
from scrm.platform.credentials import CorpCredentials
from scrm.platform.observability import metrics
from scrm.store import corps, inbox, keys
from scrm.store.models import Event
from scrm.wecom.callback.events import CallbackEvent, dedupe_key

from infra.local.pollers import failed_ids, sqs_event
from tests.support.callbacks import VECTOR_A, contact_xml, post
from tests.support.functions import context_for

CORP = VECTOR_A["corp_id"]
T0 = 1795600000
LATER = T0 + 3600  # long after any grace period


@pytest.fixture
def corp(aws, simulated_wecom):
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    simulated_wecom.add_staff(CORP, "zhangsan", "张三")
    return VECTOR_A


def depth(aws, queue: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_urls[queue], AttributeNames=["ApproximateNumberOfMessages",
                                                        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def deliver(aws, queue: str = "EventsQueue") -> int:
    """One receive as Lambda's event source makes it: run the worker, delete what succeeded.
    Returns how many messages it received (the queue moves spent ones to its DLQ itself)."""
    sqs = boto3.client("sqs")
    url = aws.queue_urls[queue]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                   AttributeNames=["All"]).get("Messages", [])
    if not messages:
        return 0
    result = worker.handle_batch(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:" + queue, "us-east-1"),
                                 context_for("worker"), metrics())
    keep = failed_ids(result, {m["MessageId"] for m in messages})
    for message in messages:
        if message["MessageId"] not in keep:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def event_row(event_id: str) -> Event:
    return Event.get(*keys.event(CORP, event_id))


def stored_never_queued(n: int, prefix: str = "wmLost") -> list[str]:
    """Events whose row was written and whose message never was (the callback died between)."""
    ids = []
    for i in range(n):
        fields = {"ToUserName": CORP, "FromUserName": "sys", "CreateTime": str(T0), "MsgType": "event",
                  "Event": "change_external_contact", "ChangeType": "del_follow_user", "UserID": "zhangsan",
                  "ExternalUserID": f"{prefix}{i:04d}"}
        event = CallbackEvent(corp_id=CORP, event_id=dedupe_key(CORP, fields), kind="external_contact",
                              event_type="change_external_contact", change_type="del_follow_user",
                              create_time=T0, fields=fields)
        boto3.client("dynamodb").put_item(TableName=Event.Meta.table_name, Item=inbox.event_item(event, T0))
        ids.append(event.event_id)
    return ids


# --- the sweeper ----------------------------------------------------------------------------
def test_sweeps_never_add_a_message_for_events_already_queued(corp, aws):
    """Before: three sweeps of one queued event left four messages; in a worker outage every
    sweep multiplied the backlog."""
    for i in range(5):  # a worker outage: accepted, queued, nobody processing
        assert intake.handle_http(post(contact_xml("del_follow_user", external_userid=f"wmWait{i}")),
                                  metrics())["statusCode"] == 200
    for minutes in (5, 10, 15):
        assert sweep_pending(now=T0 + 60 * minutes)["reenqueued"] == 0
    assert depth(aws, "EventsQueue") == 5


def test_the_sweeper_queues_what_was_never_queued_once(corp, aws):
    lost = stored_never_queued(3)
    assert sweep_pending(now=T0 + 30)["reenqueued"] == 0  # inside the grace period: maybe still in flight
    assert sweep_pending(now=LATER) == {"reenqueued": 3, "shards_left": 0}
    assert sweep_pending(now=LATER + 300)["reenqueued"] == 0
    assert depth(aws, "EventsQueue") == 3
    assert {event_row(e).status for e in lost} == {"queued"}
    while deliver(aws):
        pass
    assert {event_row(e).status for e in lost} == {"processed"}


class Run:
    """A sweeper invocation that has time for `pages` queries (each page is asked for once)."""

    def __init__(self, pages: int):
        self.pages = pages

    def get_remaining_time_in_millis(self) -> int:
        self.pages -= 1
        return 60_000 if self.pages >= 0 else 1_000


def test_every_shard_is_served_within_one_bounded_run_whatever_one_shards_backlog(corp, aws):
    """A backlog on one shard used to be drained before the next shard was looked at; with a
    bounded run, the other shards would wait for ever. Now each gets a page per round."""
    lost = stored_never_queued(60)
    shards = {e: keys.pending(e) for e in lost}
    busiest = max(set(shards.values()), key=list(shards.values()).count)
    backlog = [e for e in lost if shards[e] == busiest]
    assert len(backlog) > 2 and len(set(shards.values())) == len(keys.pending_shards())

    result = sweep_pending(now=LATER, context=Run(pages=len(keys.pending_shards())), page_size=2)
    queued = {e for e in lost if event_row(e).status == "queued"}
    for shard in keys.pending_shards():
        in_shard = [e for e in lost if shards[e] == shard]
        assert len(queued & set(in_shard)) == min(2, len(in_shard)), shard  # every shard got its first page
    assert result["shards_left"] >= 1 and result["reenqueued"] == len(queued)

    while sweep_pending(now=LATER, context=Run(pages=10), page_size=2)["shards_left"]:
        pass  # the next runs go on where this one stopped
    assert {event_row(e).status for e in lost} == {"queued"}
    assert depth(aws, "EventsQueue") == 60  # each sent exactly once


# --- dead letters ----------------------------------------------------------------------------
def test_an_event_that_fails_every_receive_is_dead_visible_and_never_fed_back(corp, aws, simulated_wecom,
                                                                              monkeypatch, capsys):
    """Before: it cycled DLQ -> sweeper -> queue every five minutes until its TTL."""
    from infra.scripts import replay_dlq, target

    simulated_wecom.block_api("externalcontact/get", 60011)  # the app lost its visible range
    xml = contact_xml("edit_external_contact", create_time=T0)
    assert intake.handle_http(post(xml), metrics())["statusCode"] == 200
    [row] = [r for r in Event.scan() if r.change_type == "edit_external_contact"]
    receives = 0
    while deliver(aws):
        receives += 1
    assert receives == 5  # then SQS moved it to the dead-letter queue
    assert depth(aws, "EventsQueue") == 0 and depth(aws, "EventsDLQ") == 1
    dead = event_row(row.event_id)
    assert (dead.status, dead.receives) == ("dead", 5)
    assert dead.dead_at and "60011" in dead.error

    for minutes in (5, 10, 15, 60):
        assert sweep_pending(now=T0 + 60 * minutes)["reenqueued"] == 0
    assert depth(aws, "EventsQueue") == 0

    [letter] = describe_dead_letters(aws.queue_urls["EventsDLQ"])
    assert (letter["event_id"], letter["status"]) == (row.event_id, "dead")
    assert "60011" in letter["error"] and letter["dead_at_iso"].endswith("+08:00")

    # the operator fixes the visible range and replays: the event is live again and applies
    simulated_wecom.block_api("externalcontact/get", None)
    urls = aws.queue_urls
    monkeypatch.setattr(target, "configure", lambda args: {
        "table_name": aws.table_name, "queue_urls": urls,
        "redrives": [(urls["EventsDLQ"], urls["EventsQueue"]), (urls["WelcomeDLQ"], urls["WelcomeQueue"])]})
    assert replay_dlq.main([]) == 0
    assert "EventsDLQ: moved 1" in capsys.readouterr().out
    live = event_row(row.event_id)
    assert live.status == "queued" and live.replayed_at and live.dead_at is None
    assert deliver(aws) == 1
    assert event_row(row.event_id).status == "processed"


def test_replaying_a_message_without_a_row_still_moves_it(corp, aws):
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=aws.queue_urls["EventsDLQ"], MessageBody="not json")
    sqs.send_message(QueueUrl=aws.queue_urls["EventsDLQ"], MessageBody=json.dumps({"corp_id": "x#y", "event_id": "e"}))
    assert replay_dead_letters(aws.queue_urls["EventsDLQ"], aws.queue_urls["EventsQueue"]) == 2
    assert depth(aws, "EventsQueue") == 2
