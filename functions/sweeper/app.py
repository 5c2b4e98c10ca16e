"""Scheduled: re-enqueue events that were accepted but never processed (scrm.entry.recovery)."""
from scrm.entry.recovery import sweep_pending
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return sweep_pending(metric, context=context)
