"""WeCom callback endpoint: GET verifies the URL, POST accepts an event (scrm.entry.callback)."""
from aws_lambda_powertools.logging import correlation_paths
from scrm.entry.callback import handle_http
from scrm.platform.observability import log, metrics

metric = metrics()


@log.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metric.log_metrics
def handler(event, context):
    return handle_http(event, metric)
