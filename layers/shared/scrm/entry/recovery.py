"""Healing the two gaps a crash can open, and replaying dead letters.

* Persisted but never enqueued: the sweeper walks the sparse pending index (GSI2, only
  events still `received`) and enqueues what has waited longer than the grace period.
* Failed five times: messages in the dead-letter queue go back to the events queue with
  `replay_dead_letters` once the cause is fixed (`make replay-dlq`).
Both may enqueue an event twice; the worker's effects are idempotent, so that is harmless.
"""
from __future__ import annotations

import json
import time

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from scrm.platform.config import settings
from scrm.platform.observability import log
from scrm.store.event_log import pending_events
from scrm.store.inbox import enqueue
from scrm.wecom.callback.events import CallbackEvent


def sweep_pending(metrics: Metrics | None = None, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    count = 0
    for row in pending_events(now - settings().pending_grace):
        enqueue(CallbackEvent(corp_id=row.corp_id, event_id=row.event_id, kind=row.kind,
                              event_type=row.event_type, change_type=row.change_type,
                              create_time=int(row.create_time), fields=row.fields))
        count += 1
    if metrics is not None:
        metrics.add_metric(name="EventsReenqueued", unit=MetricUnit.Count, value=count)
    if count:
        log.warning("re-enqueued events left unprocessed", extra={"count": count})
    return {"reenqueued": count}


def replay_dead_letters(dlq_url: str, queue_url: str, limit: int | None = None) -> int:
    """Move messages from the DLQ back to the queue (send first, then delete: never lost)."""
    sqs = boto3.client("sqs")
    moved = 0
    while limit is None or moved < limit:
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    VisibilityTimeout=30).get("Messages", [])
        if not batch:
            break
        for message in batch:
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def describe_dead_letters(dlq_url: str, limit: int = 10) -> list[dict]:
    """Peek at dead letters without consuming them (visibility 0)."""
    sqs = boto3.client("sqs")
    batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=min(limit, 10),
                                VisibilityTimeout=0, AttributeNames=["All"]).get("Messages", [])
    out = []
    for message in batch:
        try:
            body = json.loads(message["Body"])
        except ValueError:
            body = {"raw": message["Body"][:200]}
        out.append({"message_id": message["MessageId"], "receives": message["Attributes"].get("ApproximateReceiveCount"),
                    "event_id": body.get("event_id"), "kind": body.get("kind"), "corp_id": body.get("corp_id")})
    return out
