"""The jobs queue's messages: what a step of a job is, sent and re-sent with plain boto3.

A message names a step of one job: `plan` (the next pages of its plan), `chunk` (run one
chunk) or `finish` (the result, once every chunk has settled). Messages are cheap and may
be duplicated: every step is guarded by a conditional write, so a second copy does nothing.
SQS delays a message at most MAX_DELAY; a longer wait is a chain of such messages, each
carrying `not_before`, re-sent without touching the table until the time has come.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache

import boto3

from scrm.platform.config import settings

MAX_DELAY = 900  # seconds, SQS's limit on DelaySeconds
STEPS = ("plan", "chunk", "finish")


class BadMessage(ValueError):
    pass


@dataclass(frozen=True)
class Message:
    corp: str
    job: str
    kind: str
    step: str
    chunk: str | None = None
    not_before: float | None = None  # a waiting chunk's message: not to be run before then

    def body(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, separators=(",", ":"))

    @classmethod
    def parse(cls, body: str) -> Message:
        try:
            data = json.loads(body)
            message = cls(**data)
        except (ValueError, TypeError) as err:
            raise BadMessage(f"not a jobs message: {type(err).__name__}") from None
        strings = (message.corp, message.job, message.kind, message.step)
        if not all(isinstance(v, str) and v for v in strings) or message.step not in STEPS \
                or (message.step == "chunk") != isinstance(message.chunk, str) \
                or not (message.not_before is None or isinstance(message.not_before, (int, float))):
            raise BadMessage("not a jobs message: bad fields")
        return message


@lru_cache(maxsize=4)
def _sqs(endpoint: str | None):
    return boto3.client("sqs", endpoint_url=endpoint)


def _client():
    return _sqs(os.environ.get("AWS_ENDPOINT_URL") or None)


def forget_clients() -> None:
    _sqs.cache_clear()


def _queue_url() -> str:
    url = settings().jobs_queue_url
    if not url:
        raise RuntimeError("JOBS_QUEUE_URL is not set: this function cannot start or run jobs")
    return url


def delay_seconds(delay: float) -> int:
    """SQS's DelaySeconds for a wait: whole seconds, never early, at most MAX_DELAY."""
    return max(0, min(MAX_DELAY, math.ceil(delay)))


def send(message: Message, delay: float = 0) -> None:
    _client().send_message(QueueUrl=_queue_url(), MessageBody=message.body(), DelaySeconds=delay_seconds(delay))


def send_all(messages: list[Message]) -> None:
    """Send without delay, ten per request; a message SQS refused is sent again on its own."""
    for start in range(0, len(messages), 10):
        batch = messages[start:start + 10]
        answer = _client().send_message_batch(QueueUrl=_queue_url(), Entries=[
            {"Id": str(i), "MessageBody": m.body()} for i, m in enumerate(batch)])
        for failed in answer.get("Failed") or []:
            send(batch[int(failed["Id"])])
