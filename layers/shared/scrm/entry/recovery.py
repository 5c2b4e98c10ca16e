"""Healing the gap a crash can open, and replaying dead letters.

* Stored but never queued (the callback died between its row and its message, and WeCom
  did not re-send): the sweeper walks the sparse pending index (GSI2), which holds only
  events not yet known to be queued, and sends what has waited longer than the grace
  period. Queued, backlogged or failing events are not in it, so a sweep never adds a
  message for them, however long the queue.
* Failed on every receive: the worker marked the row `dead` on the last one and SQS moved
  the message to the dead-letter queue. Nothing feeds it back by itself: once the cause is
  fixed, `replay_dead_letters` (`make replay-dlq`) moves it back and the row is live again.
"""
from __future__ import annotations

import json
import time

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from scrm.platform.config import business_time_iso, settings
from scrm.platform.observability import log
from scrm.store import event_log, keys
from scrm.store.inbox import enqueue_many, mark_queued

# Rows per query page; every shard gets a page before any shard gets its second, so a
# backlog on one shard never starves the others.
SWEEP_PAGE = 100
# Seconds of the sweeper's invocation kept back: it stops starting pages after that.
SWEEP_RESERVE = 10.0


def sweep_pending(metrics: Metrics | None = None, now: float | None = None, context=None,
                  page_size: int = SWEEP_PAGE) -> dict:
    """Send the events stored before `now - grace` and never queued; mark each queued.

    Bounded by the invocation (`context`): it stops starting pages when the time left runs
    short, and the next run goes on where the index still holds rows. Returns how many it
    sent and how many shards it left unfinished."""
    now = time.time() if now is None else now
    older_than = now - settings().pending_grace
    cursors: dict[str, dict | None] = {shard: None for shard in keys.pending_shards()}  # None: from the start
    sent = 0

    stopped = False
    while cursors and not stopped:
        for shard in list(cursors):
            if context is not None and context.get_remaining_time_in_millis() < SWEEP_RESERVE * 1000:
                stopped = True
                break
            page = event_log.pending_page(shard, older_than, page_size, cursors[shard])
            for event in enqueue_many(page.events):
                mark_queued(event, now)
                sent += 1
            if page.next_key is None:
                del cursors[shard]
            else:
                cursors[shard] = page.next_key
    if metrics is not None:
        metrics.add_metric(name="EventsReenqueued", unit=MetricUnit.Count, value=sent)
    if sent:
        log.warning("queued events stored but never queued", extra={"count": sent})
    if cursors:
        log.warning("sweep stopped for time; the next run goes on", extra={"shards_left": len(cursors)})
    return {"reenqueued": sent, "shards_left": len(cursors)}


def _event_of(body: str) -> tuple[str, str] | None:
    """(corp_id, event_id) of a queue message, if it is one of ours."""
    try:
        message = json.loads(body)
        corp_id, event_id = str(message["corp_id"]), str(message["event_id"])
        keys.event(corp_id, event_id)  # refuses a corp id no key can hold
    except (ValueError, KeyError, TypeError):
        return None
    return corp_id, event_id


def replay_dead_letters(dlq_url: str, queue_url: str, limit: int | None = None) -> int:
    """Move messages from the DLQ back to the queue (send first, then delete: never lost);
    each one's event row is live again (`queued`)."""
    sqs = boto3.client("sqs")
    moved = 0
    while limit is None or moved < limit:
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    VisibilityTimeout=30).get("Messages", [])
        if not batch:
            break
        for message in batch:
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            event = _event_of(message["Body"])
            if event is not None:
                event_log.revive(*event)
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def describe_dead_letters(dlq_url: str, limit: int = 10) -> list[dict]:
    """Peek at dead letters without consuming them (visibility 0), with what their rows say."""
    sqs = boto3.client("sqs")
    batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=min(limit, 10),
                                VisibilityTimeout=0, AttributeNames=["All"]).get("Messages", [])
    out = []
    for message in batch:
        try:
            body = json.loads(message["Body"])
        except ValueError:
            body = {"raw": message["Body"][:200]}
        letter = {"message_id": message["MessageId"], "receives": message["Attributes"].get("ApproximateReceiveCount"),
                  "event_id": body.get("event_id"), "kind": body.get("kind"), "corp_id": body.get("corp_id")}
        event = _event_of(message["Body"])
        row = event_log.get(*event) if event else None
        if row is not None:
            letter.update(status=row.status, error=row.error, dead_at=row.dead_at,
                          dead_at_iso=business_time_iso(row.dead_at) if row.dead_at else None)
        out.append(letter)
    return out
