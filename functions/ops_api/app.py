"""Ops API (HTTP API, JWT-authorized): the routes of scrm.entry.ops, one resolver."""
from aws_lambda_powertools.logging import correlation_paths
from scrm.entry.ops.api import handle
from scrm.platform.observability import log
from scrm.platform.tracing import tracer


@log.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def handler(event, context):
    return handle(event, context)
