"""Scheduled nightly: starts each registered corp's reconciliation job (corp tags pulled in
full, follow relations compared with WeCom's), one per corp and day; the jobs function runs them."""
from aws_lambda_powertools.metrics import MetricUnit
from scrm.domain.customers.reconcile import KIND
from scrm.entry.jobs import start_nightly
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    started = start_nightly(KIND, event)
    metric.add_metric(name="ReconcileJobsStarted", unit=MetricUnit.Count, value=len(started["jobs"]))
    metric.add_metric(name="ReconcileJobsNotStarted", unit=MetricUnit.Count, value=len(started["failed"]))
    return started
