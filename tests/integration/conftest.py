"""DynamoDB for integration tests: moto in-process, the table built from template.yaml.

The table's schema is read from the template's ScrmTable properties, so tests run against
exactly what is deployed. Environment (TABLE_NAME, region, fake credentials) is set by
tests/conftest.py before anything imports scrm.store.models.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import boto3
import pytest
import yaml
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

from infra.local.moto_server import install_fast_transactions

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class _CloudFormationLoader(yaml.SafeLoader):
    """Safe YAML that reads CloudFormation's short-form tags (!Ref, !GetAtt, ...) as None."""


_CloudFormationLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def table_properties() -> dict:
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)
    return template["Resources"]["ScrmTable"]["Properties"]


def create_scrm_table() -> str:
    """Create the table (inside an active moto mock) under the name scrm.store.models uses."""
    from scrm.store.models import Entity

    props = table_properties()
    name = Entity.Meta.table_name
    client = boto3.client("dynamodb")
    # These CloudFormation properties have the same shape as the CreateTable parameters.
    client.create_table(TableName=name, BillingMode=props["BillingMode"],
                        AttributeDefinitions=props["AttributeDefinitions"], KeySchema=props["KeySchema"],
                        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"])
    if ttl := props.get("TimeToLiveSpecification"):
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    return name


@pytest.fixture
def ddb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty table for one test; yields its name.

    moto's backend does not lock: two threads' conditional writes could both pass their
    check. DynamoDB applies each request atomically, so requests are serialized here.
    """
    lock = threading.Lock()
    process = BotocoreStubber.process_request

    def atomic(self: BotocoreStubber, request):  # type: ignore[no-untyped-def]
        with lock:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", atomic)
    install_fast_transactions()  # safe: requests are serialized just above
    with mock_aws():
        yield create_scrm_table()


def create_queues() -> dict[str, str]:
    """The template's queues (dead-letter queues first), as {logical id: URL}."""
    resources = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)["Resources"]
    queues = {k: v.get("Properties", {}) for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
    sqs = boto3.client("sqs")
    urls: dict[str, str] = {}
    for logical_id in sorted(queues, key=lambda k: "RedrivePolicy" in queues[k]):
        props = queues[logical_id]
        attributes = {"VisibilityTimeout": "30"}
        if "RedrivePolicy" in props:
            # !GetAtt reads as None here: every redrive in the template targets the DLQ of
            # the same name plus "DLQ", which the template wiring test checks.
            dlq_url = urls[logical_id.replace("Queue", "DLQ")]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": props["RedrivePolicy"]["maxReceiveCount"]})
        urls[logical_id] = sqs.create_queue(QueueName=logical_id, Attributes=attributes)["QueueUrl"]
    return urls


@dataclass
class Aws:
    table_name: str
    queue_urls: dict[str, str]


@pytest.fixture
def aws(ddb: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """The table and every queue, with the environment the functions read pointing at them."""
    from scrm.domain import coupons
    from scrm.platform import credentials
    from scrm.platform.config import settings
    from scrm.store import inbox, once

    urls = create_queues()
    monkeypatch.setenv("EVENTS_QUEUE_URL", urls["EventsQueue"])
    monkeypatch.setenv("JOBS_QUEUE_URL", urls["JobsQueue"])
    for name, url in urls.items():
        monkeypatch.setenv(f"{name.upper()}_URL", url)

    def reset() -> None:
        settings.cache_clear()
        inbox.reset_clients()
        credentials.forget_cache()
        once.forget_connection()
        coupons.forget_templates()

    reset()
    yield Aws(table_name=ddb, queue_urls=urls)
    reset()


@pytest.fixture
def simulated_wecom(aws: Aws, monkeypatch: pytest.MonkeyPatch):
    """The WeCom simulator on a free loopback port, with the clients pointed at it."""
    from scrm.platform.config import settings
    from scrm.wecom.apis import client as wecom_client

    from infra.local.wecom_sim import WeComSimulator

    sim = WeComSimulator()
    sim.start("127.0.0.1", 0)
    monkeypatch.setenv("WECOM_API_BASE", f"{sim.base_url}/cgi-bin")
    settings.cache_clear()
    wecom_client.forget_caches()
    yield sim
    sim.stop()
    settings.cache_clear()
