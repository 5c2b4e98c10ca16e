"""The welcome lane: add events carrying a WelcomeCode, routed like any event (scrm.router).

A function of its own so that its concurrency and latency never depend on the backlog
of the events queue: the WelcomeCode dies 20 seconds after the customer adds the staff.
"""
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from scrm.observability import log, metrics
from scrm.tracing import tracer
from scrm.router import process_message

metric = metrics()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record):
    process_message(record.json_body, metric)


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
