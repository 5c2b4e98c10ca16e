"""The template's table with its DynamoDB stream, on a moto *server* (in-process mock_aws serves
no streams), for the tests of the stats projector and of the local stream poller.

`moto_server()` runs one server for a module; `stream_table(endpoint)` gives each test a fresh
table of its own on it (and a queue for the stream source's failures), with scrm's models and
connections pointed at it, and puts everything back afterwards.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3

from infra.local import template as tpl
from infra.local.moto_server import MotoProcess
from infra.local.streams import StreamPoller

TEMPLATE = tpl.load()
TABLE = TEMPLATE.tables["ScrmTable"]
STATS_SOURCE = TEMPLATE.functions["StatsFunction"].stream_sources[0]


@contextmanager
def moto_server() -> Iterator[str]:
    server = MotoProcess(port=0)
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


def _forget_connections() -> None:
    from scrm.platform.config import settings
    from scrm.store import once
    from scrm.store.models import Entity

    settings.cache_clear()
    once.forget_connection()
    models = [Entity]
    while models:
        model = models.pop()
        model._connection = None
        models += model.__subclasses__()


@dataclass
class StreamTable:
    endpoint: str
    name: str
    stream_arn: str
    failures_url: str  # the stream source's OnFailure queue
    region: str = "us-east-1"
    _poller: StreamPoller | None = field(default=None, repr=False)

    def poller(self, invoke, source: tpl.StreamSource = STATS_SOURCE, **kwargs) -> StreamPoller:
        return StreamPoller("StatsFunction", source, self.stream_arn, invoke, endpoint=self.endpoint,
                            region=self.region, on_failure_url=self.failures_url, **kwargs)

    def records(self, source: tpl.StreamSource = STATS_SOURCE) -> list[dict]:
        """Every record the stream holds now that the source's filters let through, Lambda-shaped,
        read once (later calls return only what was written since)."""
        got: list[dict] = []
        if self._poller is None:
            self._poller = self.poller(lambda _fn, event: got.extend(event["Records"]), source)
        self._poller.invoke = lambda _fn, event: got.extend(event["Records"])
        self._poller.drain()
        return got

    def failures(self) -> list[dict]:
        sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name=self.region)
        # seen, not taken: they stay visible for whoever reads them next
        messages = sqs.receive_message(QueueUrl=self.failures_url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=0).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


@contextmanager
def stream_table(endpoint: str) -> Iterator[StreamTable]:
    from scrm.store.models import Entity

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "TABLE_NAME")}
    saved_name = Entity.Meta.table_name
    name = f"scrm-stats-{uuid.uuid4().hex[:8]}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, TABLE_NAME=name)
    Entity.Meta.table_name = name
    _forget_connections()
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    props = TABLE.properties
    ddb.create_table(TableName=name, **{k: props[k] for k in ("AttributeDefinitions", "KeySchema",
                                                             "GlobalSecondaryIndexes", "BillingMode")},
                     StreamSpecification={"StreamEnabled": True, "StreamViewType": TABLE.stream_view_type})
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    failures_url = sqs.create_queue(QueueName=f"{name}-failures")["QueueUrl"]
    try:
        yield StreamTable(endpoint, name, ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"],
                          failures_url)
    finally:
        ddb.delete_table(TableName=name)
        sqs.delete_queue(QueueUrl=failures_url)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Entity.Meta.table_name = saved_name
        _forget_connections()
