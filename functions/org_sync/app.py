"""Scheduled nightly: starts each registered corp's full org sync job (heals missed
address-book events), one per corp and day; the jobs function runs them."""
from aws_lambda_powertools.metrics import MetricUnit
from scrm.domain.org.tree import SYNC_KIND
from scrm.entry.jobs import start_nightly
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    started = start_nightly(SYNC_KIND, event)
    metric.add_metric(name="OrgSyncJobsStarted", unit=MetricUnit.Count, value=len(started["jobs"]))
    metric.add_metric(name="OrgSyncJobsNotStarted", unit=MetricUnit.Count, value=len(started["failed"]))
    return started
