"""The local stream poller does what Lambda's DynamoDB stream event source mapping does, against
a real stream of the template's table on the moto server: batches, filters, the batching
window, partial batch failures, bisect on error, retries and the on-failure destination."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from scrm.store import keys
from scrm.store.models import Follow, TimelineEntry

from infra.local import streams
from tests.support.streams import STATS_SOURCE, StreamTable, moto_server, stream_table

CORP = "wwstreamcorp"
PLAIN = dataclasses.replace(STATS_SOURCE, batch_size=100, batching_window=0, bisect_on_error=False,
                            maximum_retry_attempts=2, report_batch_item_failures=True, filters=())


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def table(endpoint: str) -> Iterator[StreamTable]:
    with stream_table(endpoint) as streamed:
        yield streamed


def follows(n: int, start: int = 0) -> list[str]:
    """n follows written, one stream record each; their customers' ids."""
    ids = [f"wm{i:03d}" for i in range(start, start + n)]
    for customer in ids:
        Follow(*keys.follow(CORP, customer, "zhangsan"), external_userid=customer, userid="zhangsan",
               status="active", added_at=1795600000).save()
    return ids


class Function:
    """Records what it was given; `answer(batch)` decides what it answers (or raises)."""

    def __init__(self, answer=lambda batch: None):
        self.batches: list[list[str]] = []
        self.answer = answer

    def __call__(self, _function: str, event: dict):
        batch = [r["dynamodb"]["Keys"]["PK"]["S"].rsplit("#", 1)[1] for r in event["Records"]]
        self.batches.append(batch)
        return self.answer(event["Records"])


def sequence_of(records: list[dict], customer: str) -> str:
    return next(r["dynamodb"]["SequenceNumber"] for r in records if r["dynamodb"]["Keys"]["PK"]["S"].endswith(customer))


def test_records_come_in_batches_of_batch_size_as_lambda_shapes_them_and_filters_drop_the_rest(table):
    ids = follows(5)
    TimelineEntry(*keys.timeline(CORP, "wm000", 1795600000, "e1"), external_userid="wm000", at=1795600000,
                  what="add_external_contact").save()  # not a Follow: the filter drops it
    seen: list[dict] = []
    function = Function(lambda batch: seen.extend(batch))
    source = dataclasses.replace(STATS_SOURCE, batch_size=2)

    table.poller(function, source).drain()

    assert function.batches == [ids[0:2], ids[2:4], ids[4:5]]
    record = seen[0]
    assert set(record) == {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb",
                           "eventSourceARN"}
    assert (record["eventName"], record["eventSource"], record["eventSourceARN"]) == (
        "INSERT", "aws:dynamodb", table.stream_arn)
    change = record["dynamodb"]
    assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES" and isinstance(change["ApproximateCreationDateTime"], int)
    assert change["NewImage"]["status"] == {"S": "active"} and change["Keys"]["SK"] == {"S": "FOLLOW#zhangsan"}
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in seen] == sorted(int(r["dynamodb"]["SequenceNumber"])
                                                                          for r in seen)


def test_a_batch_waits_for_the_batching_window_to_fill(table):
    follows(3)
    function = Function()
    poller = table.poller(function, dataclasses.replace(PLAIN, batching_window=1.5))
    assert poller.poll() == (3, 0) and function.batches == []  # read, waiting for more
    time.sleep(1.6)
    assert poller.poll() == (0, 3) and [len(b) for b in function.batches] == [3]
    assert poller.poll() == (0, 0)


def test_a_partial_failure_checkpoints_before_the_lowest_reported_record_and_retries_the_rest(table):
    ids = follows(5)

    def answer(batch):
        if len(function.batches) == 1:
            return {"batchItemFailures": [{"itemIdentifier": batch[4]["dynamodb"]["SequenceNumber"]},
                                          {"itemIdentifier": batch[2]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    function = Function(answer)
    table.poller(function, PLAIN, retry_pause=0).drain()
    assert function.batches == [ids, ids[2:]]


@pytest.mark.parametrize("answer", [
    {"batchItemFailures": [{"itemIdentifier": "123"}]},  # not a record of the batch
    {"batchItemFailures": [{"itemIdentifier": ""}]},
    {"batchItemFailures": [{"wrong_key": "x"}]},
    "not a batch response",
])
def test_an_answer_naming_no_record_of_the_batch_fails_all_of_it(table, answer):
    ids = follows(3)
    function = Function(lambda batch: answer if len(function.batches) == 1 else None)
    table.poller(function, PLAIN, retry_pause=0).drain()
    assert function.batches == [ids, ids]


def test_an_error_bisects_the_batch_until_the_bad_record_is_alone_then_sets_only_it_aside(table):
    ids = follows(8)
    bad = ids[5]

    def answer(batch):
        if any(r["dynamodb"]["Keys"]["PK"]["S"].endswith(bad) for r in batch):
            raise RuntimeError("cannot apply it")

    function = Function(answer)
    source = dataclasses.replace(PLAIN, bisect_on_error=True, maximum_retry_attempts=2)
    poller = table.poller(function, source, retry_pause=0)
    poller.drain()

    # halves run in order; a split uses no retry; the bad record alone: the try and 2 retries
    assert function.batches == [ids, ids[:4], ids[4:], ids[4:6], [ids[4]], [bad], [bad], [bad], ids[6:]]
    [failure] = table.failures()
    records = table.records(PLAIN)
    info = failure["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        sequence_of(records, bad), sequence_of(records, bad), 1)
    assert info["shardId"] and info["streamArn"] == table.stream_arn
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 3
    assert failure["requestContext"]["functionArn"].endswith(":function:StatsFunction")
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert poller.set_aside == [failure]


def test_without_bisect_the_whole_batch_is_retried_then_set_aside(table):
    ids = follows(3)

    def down(batch):
        raise RuntimeError("down")

    function = Function(down)
    table.poller(function, PLAIN, retry_pause=0).drain()
    assert function.batches == [ids] * 3  # the first try and MaximumRetryAttempts (2) retries
    [failure] = table.failures()
    assert failure["DDBStreamBatchInfo"]["batchSize"] == 3


def test_records_older_than_the_maximum_age_are_set_aside_without_being_run(table, monkeypatch):
    follows(2)
    now = time.time()
    monkeypatch.setattr(streams.time, "time", lambda: now + 3600)
    function = Function()
    table.poller(function, dataclasses.replace(PLAIN, maximum_record_age=60)).drain()
    assert function.batches == []
    [failure] = table.failures()
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"
    assert failure["DDBStreamBatchInfo"]["batchSize"] == 2


def test_latest_starts_after_what_the_stream_already_holds(table):
    follows(2)
    function = Function()
    poller = table.poller(function, dataclasses.replace(PLAIN, starting_position="LATEST"))
    poller.drain()
    later = follows(2, start=10)
    poller.drain()
    assert function.batches == [later]


def test_caught_up_means_a_whole_pass_after_the_mark_found_nothing(table):
    function = Function()
    poller = table.poller(function, PLAIN)
    poller.start()
    try:
        follows(2)
        mark = time.monotonic()
        deadline = mark + 30
        while not poller.caught_up_since(mark):
            assert time.monotonic() < deadline, "the poller never caught up"
            time.sleep(0.05)
        assert sum(len(b) for b in function.batches) == 2
        assert not poller.caught_up_since(time.monotonic() + 60)
    finally:
        poller.stop()


def test_a_disabled_source_reads_nothing(table):
    follows(2)
    function = Function()
    table.poller(function, dataclasses.replace(PLAIN, enabled=False)).drain()
    assert function.batches == []
