"""Scheduled: re-enqueue events that were accepted but never processed (scrm.recovery)."""
from scrm.observability import log, metrics
from scrm.tracing import tracer
from scrm.recovery import sweep_pending

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return sweep_pending(metric)
