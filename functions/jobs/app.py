"""Consumes the jobs queue: each record is one step of a long job (scrm.entry.jobs); on its
schedule, the watchdog re-sends what crashes and lost messages left undone."""
from scrm.entry.jobs import handle
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return handle(event, context, metric)
