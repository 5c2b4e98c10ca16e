"""Consumes the events queue: each record is routed to its handler (scrm.entry.worker)."""
from scrm.entry.worker import handle_batch
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return handle_batch(event, context, metric)
