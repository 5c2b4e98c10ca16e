"""The welcome lane: add events carrying a WelcomeCode, the welcome first (scrm.entry.welcome).

A function of its own so that its concurrency and latency never depend on the backlog
of the events queue: the WelcomeCode dies 20 seconds after the customer adds the staff.
"""
from scrm.entry.welcome import handle_batch
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return handle_batch(event, context, metric)
