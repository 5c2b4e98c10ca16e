"""The event inbox: an accepted callback's row and its queue message, written with plain
boto3 clients (no PynamoDB) because the callback, on a cold start inside WeCom's 5-second
window, writes through here.

Nothing is lost between the two writes: if the process dies after the row, the callback
never answers 200, WeCom re-sends, the duplicate finds the row still `received` and enqueues
it again; if WeCom never re-sends, the sweeper re-enqueues rows left `received`.
"""
from __future__ import annotations

import json
from functools import lru_cache

import boto3
from botocore.exceptions import ClientError

from scrm.platform.config import settings
from scrm.store import keys
from scrm.wecom.callback.events import CallbackEvent

EVENT_TTL_SECONDS = 90 * 24 * 3600
# A duplicate younger than this is a copy of a delivery still in flight (WeCom re-sends
# only after 5 s without an answer), so it is not enqueued again.
REENQUEUE_AFTER_SECONDS = 3


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
        "GSI2SK": {"S": f"{int(now):010d}"},
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
            # An earlier delivery may have died before enqueueing: enqueue again (the
            # worker's effects are idempotent, so a second message costs at most a little work).
            enqueue(event)
        return False
    enqueue(event)
    return True


def queue_for(event: CallbackEvent) -> str:
    """Events with a WelcomeCode take the welcome lane, so no backlog eats their 20 s."""
    if event.fields.get("WelcomeCode"):
        return settings().welcome_queue_url
    return settings().events_queue_url


def enqueue(event: CallbackEvent) -> None:
    _sqs().send_message(
        QueueUrl=queue_for(event),
        MessageBody=json.dumps(event.as_message(), ensure_ascii=False),
    )
