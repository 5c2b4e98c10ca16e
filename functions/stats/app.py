"""The stats projector: the table's stream in, daily figures and rankings out (scrm.entry.projector).

Fed by a DynamoDB stream event source with ReportBatchItemFailures and bisect on error; a
record it cannot apply is retried, then its batch's description goes to the failure queue."""
from scrm.entry.projector import handle_stream
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    return handle_stream(event, context, metric)
