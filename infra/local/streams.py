"""What Lambda's event source mapping does for one DynamoDB stream and one function.

    poller = StreamPoller(function, source, stream_arn, invoke, endpoint=..., region=...,
                          on_failure_url=...)
    poller.start()  # a thread; stop() ends it      or, without a thread:  poller.drain()

`source` is the function's `Type: DynamoDB` event as infra.local.template reads it
(StreamSource); `invoke(function, event)` runs the function and returns its answer or raises.
Only moto's *server* serves DynamoDB Streams (in-process mock_aws does not).

* Shards: listed with describe_stream (again every SHARD_REFRESH seconds: DynamoDB opens new
  ones); a child shard is read only once its parent is read to its end. The shards there at
  start are read from StartingPosition (TRIM_HORIZON or LATEST), later ones from their start.
* Records: get_shard_iterator / get_records; records no FilterCriteria pattern matches are
  dropped (they count toward nothing, as on Lambda); the rest go to the function as Lambda
  shapes them: {"Records": [{"eventID", "eventName", "eventVersion", "eventSource":
  "aws:dynamodb", "awsRegion", "dynamodb": {Keys, NewImage, OldImage, SequenceNumber,
  SizeBytes, StreamViewType, ApproximateCreationDateTime (epoch seconds)}, "eventSourceARN"}]},
  binary attribute values as base64 text.
* Batching: up to BatchSize records, waiting up to MaximumBatchingWindowInSeconds for a batch
  to fill (`batching_window` overrides it, e.g. a local cap). One batch per shard at a time, in
  order (ParallelizationFactor is taken as 1).
* Answers: success (no answer, or an empty or null batchItemFailures) moves on. With
  ReportBatchItemFailures, item identifiers (sequence numbers) checkpoint before the lowest one
  and the rest of the batch is retried. An error (the function raised, or an answer naming no
  record of the batch) retries the batch; with BisectBatchOnFunctionError it is split in two
  first, each half run in turn, and a split uses no retry.
* Giving up: after MaximumRetryAttempts retries (-1: never), or for records older than
  MaximumRecordAgeInSeconds (and the stream's 24 hours), the records' description goes to the
  OnFailure queue in the shape Lambda sends (requestContext, responseContext,
  DDBStreamBatchInfo with the shard and the sequence-number range) and the shard goes on.

`caught_up_since(mark)` tells whether a whole pass that started after `mark` found nothing to
read and nothing waiting: every write made before `mark` has been handed to the function.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.template import StreamSource

log = logging.getLogger("infra.local.streams")

SHARD_REFRESH = 10.0  # seconds between listings of the stream's shards
IDLE_PAUSE = 0.25  # seconds between reads of a quiet stream (Lambda reads a shard 4 times a second)
READ_LIMIT = 1000  # records per get_records, DynamoDB's maximum
STREAM_RETENTION = 24 * 3600  # DynamoDB trims a stream's records after 24 hours
_OPERATORS = {"exists", "prefix", "anything-but"}


# --- FilterCriteria -----------------------------------------------------------------------
def check_pattern(pattern: Any, where: str = "pattern") -> None:
    """Refuse what `matches` does not implement (Lambda's filter rules beyond equality, prefix,
    anything-but and exists), rather than filter wrongly."""
    if not isinstance(pattern, dict):
        raise ValueError(f"{where} must be an object")
    for key, rule in pattern.items():
        if key.startswith("$"):
            raise ValueError(f"{where}: {key} is not run by the local stack")
        if isinstance(rule, dict):
            check_pattern(rule, f"{where}.{key}")
        elif isinstance(rule, list):
            for one in rule:
                if isinstance(one, dict) and (len(one) != 1 or next(iter(one)) not in _OPERATORS):
                    raise ValueError(f"{where}.{key}: {one} is not run by the local stack")
        else:
            raise ValueError(f"{where}.{key} must be an object or a list of values")


def matches(pattern: dict, value: Any) -> bool:
    """Whether `value` (a Lambda-shaped record) matches one FilterCriteria pattern."""
    for key, rule in pattern.items():
        present = isinstance(value, dict) and key in value
        child = value[key] if present else None
        if isinstance(rule, dict):
            if not matches(rule, child if isinstance(child, dict) else {}):
                return False
        elif not any(_matches_one(one, present, child) for one in rule):
            return False
    return True


def _matches_one(rule: Any, present: bool, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    if isinstance(rule, dict):
        (operator, argument), = rule.items()
        if operator == "exists":
            return present == bool(argument)
        if not present:
            return False
        if operator == "prefix":
            return any(isinstance(v, str) and v.startswith(argument) for v in values)
        excluded = argument if isinstance(argument, list) else [argument]
        return all(v not in excluded for v in values)
    return present and rule in values


# --- Lambda's record shape ----------------------------------------------------------------
def _lambda_value(value: dict) -> dict:
    (kind, inner), = value.items()
    if kind == "B":
        return {"B": base64.b64encode(inner).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(b).decode("ascii") for b in inner]}
    if kind == "M":
        return {"M": {k: _lambda_value(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_lambda_value(v) for v in inner]}
    return value


def lambda_record(record: dict, stream_arn: str, region: str) -> dict:
    """A get_records record as Lambda hands it to a function."""
    change = dict(record["dynamodb"])
    for image in ("Keys", "NewImage", "OldImage"):
        if image in change:
            change[image] = {k: _lambda_value(v) for k, v in change[image].items()}
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, dt.datetime):
        change["ApproximateCreationDateTime"] = int(created.timestamp())
    shaped = {"eventID": record["eventID"], "eventName": record["eventName"],
              "eventVersion": record.get("eventVersion", "1.1"), "eventSource": "aws:dynamodb",
              "awsRegion": region, "dynamodb": change, "eventSourceARN": stream_arn}
    if "userIdentity" in record:  # TTL deletions
        shaped["userIdentity"] = record["userIdentity"]
    return shaped


def _sequence(record: dict) -> str:
    return record["dynamodb"]["SequenceNumber"]


def _created(record: dict) -> float:
    return float(record["dynamodb"].get("ApproximateCreationDateTime") or time.time())


def first_failure(result: Any, batch: list[dict]) -> int | None:
    """Where a ReportBatchItemFailures answer says the batch failed: the position of the lowest
    sequence number reported, None for success; ValueError for an answer Lambda takes as a
    failure of the whole batch (an identifier missing, empty or not of this batch)."""
    if not result:
        return None
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if failures is None:
        if isinstance(result, dict):
            return None
        raise ValueError("the answer is not a batch response")
    positions = {_sequence(r): i for i, r in enumerate(batch)}
    found = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in positions:
            raise ValueError(f"itemIdentifier {identifier!r} is no record of the batch")
        found.append(positions[identifier])
    return min(found) if found else None


@dataclass
class _Shard:
    shard_id: str
    parent: str | None
    position: str  # where reading starts: TRIM_HORIZON | LATEST
    iterator: str | None = None
    last: str | None = None  # sequence number of the last record read
    closed: bool = False  # read to its end (no NextShardIterator)
    buffer: list[dict] = field(default_factory=list)  # records waiting for their batch
    since: float = 0.0  # monotonic time the oldest waiting record arrived


class StreamPoller:
    def __init__(self, function: str, source: StreamSource, stream_arn: str, invoke: Callable[[str, dict], Any], *,
                 endpoint: str | None = None, region: str | None = None, on_failure_url: str | None = None,
                 batching_window: float | None = None, retry_pause: float = 0.1):
        for i, pattern in enumerate(source.filters):
            check_pattern(pattern, f"{function}.{source.event} filter {i}")
        if source.on_failure and not on_failure_url:
            raise ValueError(f"{function}.{source.event}: the OnFailure queue's URL is needed")
        self.function = function
        self.source = source
        self.stream_arn = stream_arn
        self.invoke = invoke
        arn = stream_arn.split(":")
        self.region = region or arn[3]
        self.function_arn = f"arn:aws:lambda:{self.region}:{arn[4]}:function:{function}"
        self.on_failure_url = on_failure_url
        self.batching_window = source.batching_window if batching_window is None else batching_window
        self.retry_pause = retry_pause
        config = Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10)
        self.streams = boto3.client("dynamodbstreams", endpoint_url=endpoint, region_name=self.region, config=config)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=self.region, config=config)
        self.set_aside: list[dict] = []  # what went to the OnFailure destination, newest last
        self._shards: dict[str, _Shard] = {}
        self._listed_at = -SHARD_REFRESH
        self._lock = threading.Lock()  # one pass at a time
        self._quiet_since: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- running ------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.function}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                read, delivered = self.poll()
            except Exception:  # noqa: BLE001 - a poller that died would leave its stream unread
                log.exception("reading the stream of %s failed; retrying", self.function)
                self._stopping.wait(1)
                continue
            if not read and not delivered:
                self._stopping.wait(self._pause())

    def _pause(self) -> float:
        waiting = [s.since for s in self._shards.values() if s.buffer]
        if not waiting:
            return IDLE_PAUSE
        return max(0.0, min(IDLE_PAUSE, min(waiting) + self.batching_window - time.monotonic()))

    def poll(self, flush: bool = False) -> tuple[int, int]:
        """One pass: list the shards if due, read each readable one, run every batch that is due
        (`flush`: every waiting record, without waiting for the batching window). Returns
        (records read, records handed to the function)."""
        started = time.monotonic()
        with self._lock:
            if not self.source.enabled:
                self._quiet_since = started
                return 0, 0
            if started - self._listed_at >= SHARD_REFRESH:
                self._list_shards()
            read = sum(self._read(shard) for shard in list(self._shards.values()) if self._readable(shard))
            delivered = sum(self._deliver(shard, flush) for shard in list(self._shards.values()))
            waiting = any(shard.buffer for shard in self._shards.values())
            self._quiet_since = started if not (read or delivered or waiting) else None
        return read, delivered

    def drain(self, timeout: float = 30) -> None:
        """Without a thread: pass over the stream until a pass finds nothing (batches not waiting
        for the window)."""
        deadline = time.monotonic() + timeout
        while True:
            read, delivered = self.poll(flush=True)
            if not read and not delivered:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream of {self.function} still had records after {timeout} s")

    def caught_up_since(self, mark: float) -> bool:
        """Whether a pass that began at or after `mark` (time.monotonic()) found nothing at all."""
        quiet = self._quiet_since
        return quiet is not None and quiet >= mark

    # --- shards -------------------------------------------------------------------------
    def _list_shards(self) -> None:
        first_listing = not self._shards
        start: dict[str, str] = {}
        while True:
            stream = self.streams.describe_stream(StreamArn=self.stream_arn, **start)["StreamDescription"]
            for shard in stream.get("Shards", []):
                if shard["ShardId"] not in self._shards:
                    position = self.source.starting_position if first_listing else "TRIM_HORIZON"
                    self._shards[shard["ShardId"]] = _Shard(shard["ShardId"], shard.get("ParentShardId"), position)
            last = stream.get("LastEvaluatedShardId")
            if not last:
                break
            start = {"ExclusiveStartShardId": last}
        self._listed_at = time.monotonic()

    def _readable(self, shard: _Shard) -> bool:
        parent = self._shards.get(shard.parent) if shard.parent else None
        return not shard.closed and (parent is None or (parent.closed and not parent.buffer))

    def _read(self, shard: _Shard) -> int:
        if shard.iterator is None:
            where = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": shard.last} if shard.last
                     else {"ShardIteratorType": shard.position})
            shard.iterator = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard.shard_id,
                                                             **where)["ShardIterator"]
        try:
            page = self.streams.get_records(ShardIterator=shard.iterator, Limit=READ_LIMIT)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                raise
            shard.iterator = None  # iterators live 15 minutes; take a new one where we were
            return 0
        shard.iterator = page.get("NextShardIterator")
        shard.closed = shard.iterator is None
        records = page.get("Records", [])
        if records:
            shard.last = records[-1]["dynamodb"]["SequenceNumber"]
        for raw in records:
            record = lambda_record(raw, self.stream_arn, self.region)
            if not self.source.filters or any(matches(p, record) for p in self.source.filters):
                if not shard.buffer:
                    shard.since = time.monotonic()
                shard.buffer.append(record)
        return len(records)

    def _deliver(self, shard: _Shard, flush: bool) -> int:
        delivered = 0
        while shard.buffer and (flush or shard.closed or len(shard.buffer) >= self.source.batch_size
                                or time.monotonic() - shard.since >= self.batching_window):
            batch = shard.buffer[:self.source.batch_size]
            self._process(shard.shard_id, batch)
            del shard.buffer[:len(batch)]
            shard.since = time.monotonic()
            delivered += len(batch)
        return delivered

    # --- one batch, with Lambda's error handling -----------------------------------------
    def _process(self, shard_id: str, records: list[dict]) -> None:
        work: list[tuple[list[dict], int]] = [(records, 0)]  # (batch, retries used), run in order
        while work and not self._stopping.is_set():
            batch, retries = work.pop(0)
            batch = self._drop_expired(shard_id, batch, retries)
            if not batch:
                continue
            error, failed_at = self._invoke(batch)
            if not error and failed_at is None:
                continue
            if error and self.source.bisect_on_error and len(batch) > 1:
                half = len(batch) // 2
                work[:0] = [(batch[:half], retries), (batch[half:], retries)]
                continue
            rest = batch if error else batch[failed_at:]
            retries += 1
            if 0 <= self.source.maximum_retry_attempts < retries:
                self._give_up(shard_id, rest, "RetryAttemptsExhausted", retries, error)
                continue
            self._stopping.wait(self.retry_pause)
            work.insert(0, (rest, retries))

    def _invoke(self, batch: list[dict]) -> tuple[bool, int | None]:
        """(the function failed, position of the first record reported failed)."""
        try:
            result = self.invoke(self.function, {"Records": batch})
        except Exception:  # noqa: BLE001 - what Lambda calls a function error
            log.exception("%s failed on a batch of %d stream records", self.function, len(batch))
            return True, None
        if not self.source.report_batch_item_failures:
            return False, None
        try:
            return False, first_failure(result, batch)
        except ValueError as err:
            log.warning("%s: %s; the whole batch failed", self.function, err)
            return True, None

    def _drop_expired(self, shard_id: str, batch: list[dict], retries: int) -> list[dict]:
        ages = [self.source.maximum_record_age, STREAM_RETENTION]
        limit = min(a for a in ages if a >= 0)
        now = time.time()
        expired = [r for r in batch if now - _created(r) > limit]
        if expired:
            self._give_up(shard_id, expired, "RecordAgeExceeded", retries, False)
        return [r for r in batch if now - _created(r) <= limit]

    def _give_up(self, shard_id: str, records: list[dict], condition: str, invocations: int, error: bool) -> None:
        def when(record: dict) -> str:
            return dt.datetime.fromtimestamp(_created(record), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        message = {
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.function_arn,
                               "condition": condition, "approximateInvokeCount": invocations},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                **({"functionError": "Unhandled"} if error else {})},
            "version": "1.0",
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": shard_id, "startSequenceNumber": _sequence(records[0]),
                "endSequenceNumber": _sequence(records[-1]), "approximateArrivalOfFirstRecord": when(records[0]),
                "approximateArrivalOfLastRecord": when(records[-1]), "batchSize": len(records),
                "streamArn": self.stream_arn},
        }
        self.set_aside.append(message)
        if self.on_failure_url:
            self.sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(message))
        log.warning("%s: %d stream record(s) set aside (%s), sequence numbers %s..%s", self.function, len(records),
                    condition, _sequence(records[0]), _sequence(records[-1]))
