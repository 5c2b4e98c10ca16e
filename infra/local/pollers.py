"""What Lambda's SQS event source mapping does, for one queue and one function.

Receive a batch, invoke the function with the SQS event Lambda would send, then delete:
every message on success; with ReportBatchItemFailures all but those reported failed;
none if the function raised (they come back after the visibility timeout).

Like Lambda, which runs several invocations per standard queue at once, each queue here
has several batches in flight (the event source's ScalingConfig.MaximumConcurrency, else
as many as the function has instances): one slow batch never holds up the messages behind
it. A single thread per queue does the receiving, though: moto's SQS does not lock, and
concurrent ReceiveMessage calls on one queue miscount receives (and so dead-letter a
message early).

The poller runs in the stack's process, as Lambda's event source mapping runs outside the
function: `invoke` hands each batch to an instance of the function (infra/local/functions.py).
Every event source of the stack offers what `QueuePoller` does: start(), join(timeout) once
the stack's `stopping` event is set, and idle() for LocalStack.drain().

Dead-lettering is left to moto: on ReceiveMessage it moves a visible message whose
receive count has reached the RedrivePolicy's maxReceiveCount to the dead-letter queue
instead of returning it (moto/sqs/models.py, receive_message), which is what SQS does.
"""
from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from infra.local.template import LocalQueue, SqsSource

log = logging.getLogger("infra.local.pollers")


def _message_attribute(value: dict) -> dict:
    # Lambda spells these in camelCase and carries binary values as base64 text.
    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": base64.b64encode(binary).decode("ascii") if binary is not None else None,
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": [base64.b64encode(b).decode("ascii") for b in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }


def sqs_event(messages: list[dict], queue_arn: str, region: str) -> dict:
    return {"Records": [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {k: _message_attribute(v) for k, v in m.get("MessageAttributes", {}).items()},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        for m in messages
    ]}


def failed_ids(result: Any, message_ids: set[str]) -> set[str]:
    """Message ids to keep, from a ReportBatchItemFailures response.

    As on AWS: no response, an empty one or an empty list means all succeeded; a malformed
    response or an identifier not in the batch fails the whole batch."""
    if not result:
        return set()
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if failures is None:
        return set() if isinstance(result, dict) else set(message_ids)
    ids = {f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures}
    return ids if ids <= message_ids else set(message_ids)


class QueuePoller:
    def __init__(self, function: str, source: SqsSource, queue: LocalQueue, endpoint: str, region: str,
                 invoke: Callable[[str, dict], Any], stopping: threading.Event, concurrency: int):
        self.function = function
        self.source = source
        self.queue = queue
        self.region = region
        self.invoke = invoke
        self.stopping = stopping
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region,
                                config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10))
        self.concurrency = max(1, concurrency)
        self.slots = threading.Semaphore(self.concurrency)
        self.thread = threading.Thread(target=self._run, name=f"poller-{queue.name}", daemon=True)
        self.batches: list[threading.Thread] = []

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        for batch in list(self.batches):
            batch.join(timeout)

    def idle(self) -> bool:
        """No batch in hand and nothing in the queue: visible, in flight or delayed."""
        if any(batch.is_alive() for batch in self.batches):
            return False
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return not any(int(n) for n in attrs.values())

    def _run(self) -> None:
        while not self.stopping.is_set():
            # Receive only with a free slot, so no message waits out its visibility unhandled.
            if not self.slots.acquire(timeout=0.5):
                continue
            try:
                messages = self._receive()
            except Exception:  # noqa: BLE001 - a poller that died would leave its queue unread
                self.slots.release()
                if self.stopping.is_set():
                    return
                log.exception("polling %s failed; retrying", self.queue.name)
                self.stopping.wait(1)
                continue
            if not messages:
                self.slots.release()
                continue
            batch = threading.Thread(target=self._handle, args=(messages,), daemon=True,
                                     name=f"batch-{self.queue.name}")
            self.batches = [b for b in self.batches if b.is_alive()] + [batch]
            batch.start()

    def _receive(self) -> list[dict]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue.url,
            MaxNumberOfMessages=min(self.source.batch_size, 10),
            WaitTimeSeconds=1,  # short, so that stop() is prompt
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def _handle(self, messages: list[dict]) -> None:
        try:
            self._settle(messages)
        except Exception:  # noqa: BLE001 - the messages come back after their visibility timeout
            log.exception("settling a batch from %s failed", self.queue.name)
        finally:
            self.slots.release()

    def _settle(self, messages: list[dict]) -> None:
        log.debug("%s: %d message(s) from %s", self.function, len(messages), self.queue.name)
        try:
            result = self.invoke(self.function, sqs_event(messages, self.queue.arn, self.region))
        except Exception as err:  # noqa: BLE001 - a failed invocation leaves the batch to SQS
            log.warning("%s failed on a batch of %d from %s: %s", self.function, len(messages), self.queue.name, err)
            return
        keep = failed_ids(result, {m["MessageId"] for m in messages}) if self.source.report_batch_item_failures \
            else set()
        done = [m for m in messages if m["MessageId"] not in keep]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
