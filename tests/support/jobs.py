"""Run jobs in-process on a virtual clock: what the jobs queue and the jobs function do,
without waiting for SQS delays in real time.

The jobs layer's messages go to a heap ordered by when SQS would hand them out (a delay is
a later due time); `run()` invokes the jobs function's handler on each due message in turn
and, when none is due, moves the clock to the next one. A step that raises `Crash` dies as
a Lambda process dies (nothing of it cleans up): its message comes back after the queue's
visibility timeout, as SQS would hand it out again. DynamoDB is whatever the test runs
(moto); the WeCom simulator keeps its own clock.
"""
from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import pytest
from scrm.jobs import queue, runner
from scrm.jobs.kinds import Registry
from scrm.wecom.apis import governor as governors

from infra.local import template as tpl
from tests.support.functions import LambdaContext, load_function

VISIBILITY = int(tpl.load().queues["JobsQueue"].properties["VisibilityTimeout"])
TIMEOUT = tpl.load().functions["JobsFunction"].timeout
SETTLE_LIMIT = 10_000


class Crash(BaseException):
    """The Lambda process dies mid-step (a BaseException: no `except Exception` catches it)."""


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    body: str = field(compare=False)


class JobsQueue:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, registry: Registry | None = None):
        """`registry`: run these kinds instead of the deployment's (through the jobs function).
        The clock starts at the real time and only moves forward from there."""
        self.now = time.time()
        self._heap: list[_Due] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.sent: list[dict] = []  # every message, in order (tests look at what was sent)
        self.steps = 0
        self._handler = load_function("jobs").handler if registry is None else (
            lambda event, context: runner.handle(registry, event, context))
        monkeypatch.setattr(runner, "clock", lambda: self.now)
        # WeCom clients made for jobs share a governor on the same clock, so that a 45009
        # block ends when the virtual minute does (sleeping for a window moves the clock)
        self.governor = governors.Governor(lambda: self.now, self.advance)
        monkeypatch.setattr(governors, "default_governor", lambda: self.governor)
        monkeypatch.setattr(queue, "send", self._send)
        monkeypatch.setattr(queue, "send_all", lambda messages: [self._send(m) for m in messages])

    def _send(self, message: queue.Message, delay: float = 0) -> None:
        self.sent.append(json.loads(message.body()))
        self.push(message.body(), queue.delay_seconds(delay))

    def push(self, body: str, delay: float = 0) -> None:
        with self._lock:
            heapq.heappush(self._heap, _Due(self.now + delay, next(self._seq), body))

    def _pop(self) -> _Due | None:
        with self._lock:
            return heapq.heappop(self._heap) if self._heap else None

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    def drop(self, keep: Callable[[dict], bool]) -> int:
        """Lose the queued messages `keep` refuses (as SQS might); how many were lost."""
        with self._lock:
            kept = [d for d in self._heap if keep(json.loads(d.body))]
            lost = len(self._heap) - len(kept)
            self._heap = kept
            heapq.heapify(self._heap)
        return lost

    def bodies(self) -> list[dict]:
        with self._lock:
            return [json.loads(d.body) for d in sorted(self._heap)]

    def run(self, max_steps: int | None = None, until: Callable[[], bool] | None = None) -> int:
        """Handle messages in due order until none is left, `until()` holds or `max_steps`
        were taken; the steps taken. Without a limit, a job that never settles fails the test."""
        limit = SETTLE_LIMIT if max_steps is None else max_steps
        taken = 0
        while taken < limit and not (until and until()):
            due = self._pop()
            if due is None:
                break
            self.now = max(self.now, due.at)
            self.step(due.body)
            taken += 1
        assert max_steps is not None or taken < limit, "the jobs did not settle"
        return taken

    @contextmanager
    def running(self) -> Iterator[None]:
        """Run every message as it comes, in a thread, while the block runs (a command that
        starts a job and waits for it, as against a deployed jobs function)."""
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                if not self.run(max_steps=100):
                    stop.wait(0.02)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join()

    def step(self, body: str) -> None:
        record = {"messageId": f"m{next(self._seq)}", "receiptHandle": "r", "body": body,
                  "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:JobsQueue"}
        self.steps += 1
        try:
            answer = self._handler({"Records": [record]}, LambdaContext(remaining_millis=TIMEOUT * 1000))
        except Crash:
            self.push(body, VISIBILITY)  # the message was never deleted: SQS hands it out again
            return
        if answer["batchItemFailures"]:
            self.push(body, VISIBILITY)

    def sweep(self) -> dict:
        """The watchdog's schedule firing now."""
        return self._handler({"source": "aws.events", "detail-type": "Scheduled Event"},
                             LambdaContext(remaining_millis=TIMEOUT * 1000))
