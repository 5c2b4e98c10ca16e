"""The worker's dispatch: one queued event in, its handler run, its row marked processed.

An event that can never be applied is marked failed (it is kept and visible; retrying
cannot help): a handler raising `Permanent`, ids WeCom would never send (an event queued
before the callback checked them), or DynamoDB refusing the request itself. Any other
exception propagates so the batch reports the record as failed and SQS delivers it again,
then to the dead-letter queue.
"""
from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

from scrm.domain import chats
from scrm.domain.customers import events as external_contact
from scrm.domain.event_fields import Permanent
from scrm.domain.org import events as address_book
from scrm.domain.tags import events as external_tag
from scrm.platform.observability import log
from scrm.store.event_log import finish
from scrm.store.models import invalid_request
from scrm.wecom.callback import ids
from scrm.wecom.callback.events import CallbackEvent

Handler = Callable[[CallbackEvent], str]

HANDLERS: dict[str, Handler] = {
    "external_contact": external_contact.handle,
    "external_chat": chats.handle,
    "external_tag": external_tag.handle,
    "address_book": address_book.handle,
}


def route(event: CallbackEvent) -> str:
    """Run the event's handler; unknown kinds are kept as stored facts, not errors."""
    handler = HANDLERS.get(event.kind)
    return handler(event) if handler else "stored"


def _apply(event: CallbackEvent) -> str:
    try:
        ids.check(event.event_type, event.fields)
    except ids.InvalidId as err:
        raise Permanent(err.reason) from None
    try:
        return route(event)
    except Exception as err:
        if invalid_request(err):
            raise Permanent("refused_by_dynamodb") from err
        raise


def process_message(body: dict, metrics: Metrics, now: float | None = None) -> str:
    try:
        event = CallbackEvent.from_message(body)
    except (KeyError, TypeError, ValueError) as err:
        # Not something our callback enqueued: fail the record so it ends in the DLQ.
        raise ValueError(f"malformed queue message: {err}") from None
    try:
        outcome = _apply(event)
    except Permanent as err:
        finish(event, "failed", err.reason, now)
        metrics.add_metric(name="EventsFailed", unit=MetricUnit.Count, value=1)
        log.warning("event failed", extra={"event_id": event.event_id, "kind": event.kind, "reason": err.reason,
                                           "cause": str(err.__cause__)[:300] if err.__cause__ else None})
        return "failed"
    finish(event, "processed", outcome, now)
    metrics.add_metric(name="EventsProcessed", unit=MetricUnit.Count, value=1)
    log.info("event processed", extra={"event_id": event.event_id, "kind": event.kind,
                                       "change_type": event.change_type, "outcome": outcome})
    return outcome


def handle_batch(event: dict, context, metrics: Metrics) -> dict:
    """An SQS batch as Lambda delivers it: each record routed, failures reported per record."""
    return process_partial_response(
        event=event, context=context, processor=BatchProcessor(event_type=EventType.SQS),
        record_handler=lambda record: process_message(record.json_body, metrics))
