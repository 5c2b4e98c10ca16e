"""Scheduled nightly: every corp's corp tags pulled in full, then its follow relations
reconciled with WeCom (scrm.domain.customers.reconcile.nightly). A run that needs more than one invocation
hands the rest to a fresh asynchronous invocation of this same function."""
import json
import time

import boto3
from scrm.domain.customers.reconcile import nightly
from scrm.platform.observability import log, metrics
from scrm.platform.tracing import tracer

metric = metrics()
# Stop starting new WeCom pages this long before Lambda's own timeout.
SAFETY_SECONDS = 60


@log.inject_lambda_context
@tracer.capture_lambda_handler
@metric.log_metrics
def handler(event, context):
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000 - SAFETY_SECONDS

    def continue_later(payload: dict) -> None:
        boto3.client("lambda").invoke(FunctionName=context.invoked_function_arn, InvocationType="Event",
                                      Payload=json.dumps({"continuation": payload}).encode())

    return nightly(event.get("continuation"), deadline=deadline, continue_later=continue_later, metrics=metric)
