"""Where the operator commands point: the running local stack, or a deployed AWS stack.

The local stack writes `.local/stack.json` at start (endpoint, table, queues); with
`--aws` the same names come from the CloudFormation stack's outputs.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_STATE = ROOT / ".local" / "stack.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--aws", action="store_true", help="act on the deployed stack instead of the local one")
    parser.add_argument("--stack-name", default=os.environ.get("SCRM_STACK_NAME", "scrm"),
                        help="CloudFormation stack name (with --aws; default: scrm)")


def configure(args: argparse.Namespace) -> dict:
    """Point boto3 and scrm at the target; return its table, queues and DLQ → queue pairs."""
    if args.aws:
        import boto3

        stack = boto3.client("cloudformation").describe_stacks(StackName=args.stack_name)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        queue_urls = {"EventsQueue": outputs["EventsQueueUrl"], "EventsDLQ": outputs["EventsDLQUrl"],
                      "WelcomeQueue": outputs["WelcomeQueueUrl"], "WelcomeDLQ": outputs["WelcomeDLQUrl"],
                      "StatsDLQ": outputs["StatsDLQUrl"],
                      "JobsQueue": outputs["JobsQueueUrl"], "JobsDLQ": outputs["JobsDLQUrl"]}
        table_name = outputs["TableName"]
    else:
        if not LOCAL_STATE.exists():
            raise SystemExit("the local stack is not running: start it with `make up` (or pass --aws)")
        state = json.loads(LOCAL_STATE.read_text())
        os.environ["AWS_ENDPOINT_URL"] = state["aws_endpoint_url"]
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", state.get("region", "us-east-1"))):
            os.environ.setdefault(name, value)
        queue_urls, table_name = state["queue_urls"], state["table_name"]
        if state.get("wecom_api_base"):
            os.environ["WECOM_API_BASE"] = state["wecom_api_base"]  # the stack's simulator
    os.environ["TABLE_NAME"] = table_name
    os.environ["EVENTS_QUEUE_URL"] = queue_urls["EventsQueue"]
    os.environ["WELCOME_QUEUE_URL"] = queue_urls["WelcomeQueue"]
    os.environ["JOBS_QUEUE_URL"] = queue_urls["JobsQueue"]
    return {"table_name": table_name, "queue_urls": queue_urls,
            # (dead-letter queue, the queue its messages came from)
            "redrives": [(queue_urls["EventsDLQ"], queue_urls["EventsQueue"]),
                         (queue_urls["WelcomeDLQ"], queue_urls["WelcomeQueue"]),
                         (queue_urls["JobsDLQ"], queue_urls["JobsQueue"])]}
