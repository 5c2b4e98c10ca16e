"""The worker's dispatch: SQS batches in, each queued event's handler run, its row settled.

An event that can never be applied is marked failed (it is kept and visible; retrying
cannot help): a handler raising `Permanent`, ids WeCom would never send (an event queued
before the callback checked them), or DynamoDB refusing the request itself. Any other
exception fails the record: SQS delivers it again, and after its last receive to the
dead-letter queue, which the row then says (`dead`, with the error and the time).

A batch runs against the clock (`handle_batch`): a record is started only while the
invocation has time for the most it may take (`record_budget`), and every WeCom call inside
it is cut to that budget (scrm.platform.time_budget), so a slow WeCom fails one record at a
time instead of timing the whole batch out; records not started are reported failed and
come back. template.yaml sizes batch, timeout and visibility from the same numbers.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from scrm.domain import chats
from scrm.domain.customers import events as external_contact
from scrm.domain.event_fields import Permanent
from scrm.domain.org import events as address_book
from scrm.domain.tags import events as external_tag
from scrm.platform import time_budget
from scrm.platform.config import settings
from scrm.platform.observability import log, mask
from scrm.store import read_cache
from scrm.store.event_log import finish, record_failure
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

# The most one record of the events queue may take: one WeCom call with all its retries
# (~15 s) and two more quick ones, and the writes after them.
RECORD_BUDGET = 25.0
# Of a record's budget, kept back from its WeCom calls for the writes that follow them.
SETTLE = 3.0
# Kept back at the end of an invocation for answering SQS and flushing metrics.
RESERVE = 5.0


def route(event: CallbackEvent) -> str:
    """Run the event's handler; unknown kinds are kept as stored facts, not errors."""
    handler = HANDLERS.get(event.kind)
    return handler(event) if handler else "stored"


def _apply(event: CallbackEvent, handler: Handler) -> str:
    try:
        ids.check(event.event_type, event.fields)
    except ids.InvalidId as err:
        raise Permanent(err.reason) from None
    try:
        return handler(event)
    except Exception as err:
        if invalid_request(err):
            raise Permanent("refused_by_dynamodb") from err
        raise


def _parse(body: dict) -> CallbackEvent:
    try:
        return CallbackEvent.from_message(body)
    except (KeyError, TypeError, ValueError) as err:
        # Not something our callback enqueued: fail the record so it ends in the DLQ.
        raise ValueError(f"malformed queue message: {err}") from None


def process_event(event: CallbackEvent, metrics: Metrics, handler: Handler = route, now: float | None = None) -> str:
    """Apply one event and settle its row; raises (to be retried) unless it is done for good."""
    try:
        with read_cache.scope():  # the rows an event reads, read once
            outcome = _apply(event, handler)
    except Permanent as err:
        finish(event, "failed", err.reason, now)
        metrics.add_metric(name="EventsFailed", unit=MetricUnit.Count, value=1)
        log.warning("event failed", extra={"event_id": event.event_id, "kind": event.kind, "reason": err.reason,
                                           "cause": _describe(err.__cause__) if err.__cause__ else None})
        return "failed"
    finish(event, "processed", outcome, now)
    metrics.add_metric(name="EventsProcessed", unit=MetricUnit.Count, value=1)
    log.info("event processed", extra={"event_id": event.event_id, "kind": event.kind,
                                       "change_type": event.change_type, "outcome": outcome})
    return outcome


def process_message(body: dict, metrics: Metrics, now: float | None = None, handler: Handler = route) -> str:
    """One queue message as the callback or a replay enqueued it."""
    return process_event(_parse(body), metrics, handler, now)


def _describe(err: BaseException) -> str:
    return mask(f"{type(err).__name__}: {err}")[:500]


def _receives(record: dict) -> int:
    try:
        return int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


def _note_failure(event: CallbackEvent | None, record: dict, error: str, metrics: Metrics) -> None:
    """Write the failed attempt on the row; on the message's last receive, the row says dead."""
    if event is None:
        return  # not ours: nothing to mark
    receives = _receives(record)
    dead = receives >= settings().max_receive_count
    try:
        record_failure(event, error, receives, dead)
    except Exception:  # noqa: BLE001 - the record is reported failed either way
        log.exception("could not note a failed attempt", extra={"event_id": event.event_id})
        return
    if dead:
        metrics.add_metric(name="EventsDeadLettered", unit=MetricUnit.Count, value=1)
        log.error("event dead-lettered", extra={"event_id": event.event_id, "kind": event.kind,
                                                "receives": receives, "error": error})


def _record_event(record: dict) -> CallbackEvent | None:
    try:
        return _parse(json.loads(record["body"]))
    except (KeyError, TypeError, ValueError):
        return None


def handle_batch(event: dict, context, metrics: Metrics, record_handler: Handler = route, *,
                 record_budget: float = RECORD_BUDGET) -> dict:
    """An SQS batch as Lambda delivers it (ReportBatchItemFailures): each record's event run
    through `record_handler` (default: by kind), failures reported per record.

    `record_handler(event) -> outcome` does one event's work: it returns a short outcome,
    raises `Permanent` if the event can never be applied, anything else to have it retried.
    `record_budget`: the most one record may take (seconds); WeCom calls inside are cut to
    it, and a record is started only while the invocation has that much left.
    """
    failures: list[str] = []
    deferred = 0
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise ValueError("not an SQS event: it has no Records list")  # a wiring mistake, not a record
    for record in records:
        message_id = record["messageId"]
        parsed = _record_event(record)
        left = context.get_remaining_time_in_millis() / 1000 - RESERVE
        if left < record_budget:
            # Not started: it comes back after the visibility timeout, like any failure.
            failures.append(message_id)
            deferred += 1
            if _receives(record) >= settings().max_receive_count:
                _note_failure(parsed, record, "not started: the invocation's time ran short", metrics)
            continue
        try:
            if parsed is None:
                raise ValueError("malformed queue message")
            with time_budget.until(time.time() + record_budget - SETTLE):
                process_event(parsed, metrics, record_handler)
        except Exception as err:  # noqa: BLE001 - one record's failure never fails the others
            failures.append(message_id)
            log.exception("record failed", extra={"message_id": message_id,
                                                  "event_id": parsed.event_id if parsed else None})
            _note_failure(parsed, record, _describe(err), metrics)
    if deferred:
        metrics.add_metric(name="RecordsDeferred", unit=MetricUnit.Count, value=deferred)
        log.warning("time ran short: records left for a later delivery", extra={"deferred": deferred})
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
