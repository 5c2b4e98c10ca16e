"""The stats projector's entry: a batch of the table's stream records in, the first record
not applied out (ReportBatchItemFailures), the work in scrm.domain.stats.projector."""
from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from scrm.domain.stats import projector
from scrm.domain.stats.facts import BadRecord
from scrm.platform.observability import log


def handle_stream(event: dict, context: Any, metrics: Metrics) -> dict:
    records = event.get("Records") or []
    try:
        outcome = projector.project(records, time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    except BadRecord:
        # A function error on purpose: Lambda bisects the batch until the record is alone, then
        # sets it aside in the failure queue after its retries; the records around it count.
        metrics.add_metric(name="StatsRecordsUnreadable", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name="StatsFactsCounted", unit=MetricUnit.Count, value=outcome.counted)
    metrics.add_metric(name="StatsFactsRepeated", unit=MetricUnit.Count, value=outcome.repeated)
    summary = {"records": outcome.records, "facts": outcome.facts, "counted": outcome.counted,
               "repeated": outcome.repeated}
    if outcome.failed is None:
        log.info("stats projected", extra=summary)
        return {"batchItemFailures": []}
    metrics.add_metric(name="StatsBatchesFailed", unit=MetricUnit.Count, value=1)
    log.warning("stats batch stopped", extra={**summary, "from_sequence_number": outcome.failed})
    # Lambda checkpoints the records before this one and delivers the rest again.
    return {"batchItemFailures": [{"itemIdentifier": outcome.failed}]}
