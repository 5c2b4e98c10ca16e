"""The event inbox: an accepted callback's row, its queue message and the note that it was
queued, written with plain boto3 clients (no PynamoDB) because the callback, on a cold
start inside WeCom's 5-second window, writes through here.

Three requests, in this order, so that nothing is lost and nothing is sent twice:
1. the row, `received`, in the sparse pending index (GSI2), conditional on its dedupe key;
2. the message;
3. the row becomes `queued` and leaves the pending index.
If the process dies after 1, the callback never answers 200, WeCom re-sends, and the
duplicate finds the row still `received` and queues it; if WeCom never re-sends, the
sweeper finds it in the pending index. A row that says `queued` has a message: neither a
duplicate nor the sweeper sends another, however long the queue's backlog. Only a death
between 2 and 3 leaves a queued event in the index; the sweeper then sends it once more,
which the worker's exactly-once effects make harmless.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scrm.platform.config import settings
from scrm.platform.observability import log
from scrm.store import keys
from scrm.wecom.callback.events import CallbackEvent

EVENT_TTL_SECONDS = 90 * 24 * 3600
# A duplicate younger than this is a copy of a delivery still in flight (WeCom re-sends
# only after 5 s without an answer), so it is not enqueued again.
REENQUEUE_AFTER_SECONDS = 3
SQS_BATCH = 10  # SendMessageBatch takes at most ten entries


@lru_cache(maxsize=1)
def _dynamodb():
    return boto3.client("dynamodb")


@lru_cache(maxsize=1)
def _sqs():
    return boto3.client("sqs")


def reset_clients() -> None:
    _dynamodb.cache_clear()
    _sqs.cache_clear()


def event_item(event: CallbackEvent, now: float) -> dict:
    """The Event row as DynamoDB attribute values (same shape as scrm.store.models.Event)."""
    pk, sk = keys.event(event.corp_id, event.event_id)
    item = {
        "PK": {"S": pk},
        "SK": {"S": sk},
        "entity": {"S": "Event"},
        "corp_id": {"S": event.corp_id},
        "event_id": {"S": event.event_id},
        "kind": {"S": event.kind},
        "event_type": {"S": event.event_type},
        "create_time": {"N": str(event.create_time)},
        "received_at": {"N": str(int(now))},
        "status": {"S": "received"},
        "fields": {"S": json.dumps(event.fields, ensure_ascii=False)},
        "deliveries": {"N": "1"},
        "GSI2PK": {"S": keys.pending(event.event_id)},
        "GSI2SK": {"S": keys.pending_sk(now)},
        "expires_at": {"N": str(int(now) + EVENT_TTL_SECONDS)},
    }
    if event.change_type:
        item["change_type"] = {"S": event.change_type}
    return item


def persist(event: CallbackEvent, now: float) -> bool:
    """Store the event once and hand it to the worker; False if it had been stored before."""
    try:
        _dynamodb().put_item(
            TableName=settings().table_name,
            Item=event_item(event, now),
            ConditionExpression="attribute_not_exists(PK)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        old = err.response.get("Item") or {}
        received_at = int(old.get("received_at", {}).get("N", "0"))
        if old.get("status", {}).get("S") == "received" and received_at <= now - REENQUEUE_AFTER_SECONDS:
            # An earlier delivery died before its message was noted as sent: send it now.
            # Any other status means a message exists or existed; never a second one.
            _send_and_note(event, now)
        return False
    _send_and_note(event, now)
    return True


def _send_and_note(event: CallbackEvent, now: float) -> None:
    enqueue(event)
    try:
        mark_queued(event, now)
    except (ClientError, BotoCoreError) as err:
        # The message is out, so the event is safe: answer WeCom 200 rather than make it re-send.
        # The row stays in the pending index; the sweeper may send it once more after the grace.
        log.warning("event queued but not noted as queued", extra={"event_id": event.event_id, "error": str(err)})


def queue_for(event: CallbackEvent) -> str:
    """Events with a WelcomeCode take the welcome lane, so no backlog eats their 20 s."""
    if event.fields.get("WelcomeCode"):
        return settings().welcome_queue_url
    return settings().events_queue_url


def _body(event: CallbackEvent) -> str:
    return json.dumps(event.as_message(), ensure_ascii=False)


def enqueue(event: CallbackEvent) -> None:
    _sqs().send_message(QueueUrl=queue_for(event), MessageBody=_body(event))


def enqueue_many(events: Iterable[CallbackEvent]) -> list[CallbackEvent]:
    """Send each event to its queue, ten to a request; returns those SQS accepted."""
    by_queue: dict[str, list[CallbackEvent]] = defaultdict(list)
    for event in events:
        by_queue[queue_for(event)].append(event)
    sent = []
    for url, queued in by_queue.items():
        for start in range(0, len(queued), SQS_BATCH):
            chunk = queued[start:start + SQS_BATCH]
            answer = _sqs().send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": _body(event)} for i, event in enumerate(chunk)])
            sent += [chunk[int(ok["Id"])] for ok in answer.get("Successful", [])]
    return sent


def mark_queued(event: CallbackEvent, now: float) -> bool:
    """Note that the event's message was sent: `queued`, out of the pending index. False if
    the row had moved on already (a fast worker finished it first) or is gone."""
    pk, sk = keys.event(event.corp_id, event.event_id)
    try:
        _dynamodb().update_item(
            TableName=settings().table_name,
            Key={"PK": {"S": pk}, "SK": {"S": sk}},
            UpdateExpression="SET #status = :queued, queued_at = :now REMOVE GSI2PK, GSI2SK",
            ConditionExpression="#status = :received",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":queued": {"S": "queued"}, ":received": {"S": "received"},
                                       ":now": {"N": str(int(now))}},
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        return False
    return True
