"""Scheduled (nightly): full org sync of every registered corp; heals missed address-book events."""
from aws_lambda_powertools.metrics import MetricUnit
from scrm.domain.org.tree import sync_all
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    summary = sync_all(time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    metric.add_metric(name="OrgSyncFailed", unit=MetricUnit.Count, value=len(summary["failed"]))
    metric.add_metric(name="OrgSyncSkipped", unit=MetricUnit.Count, value=len(summary["skipped"]))
    metric.add_metric(name="StaffResigned", unit=MetricUnit.Count,
                      value=sum(report["resigned"] for report in summary["synced"]))
    log.info("org sync done", extra={"summary": summary})
    return summary
