"""The local stream poller's pure parts: Lambda's filter rules, its reading of a partial batch
response, and the record shape it hands to functions."""
from __future__ import annotations

import datetime as dt

import pytest

from infra.local.streams import check_pattern, first_failure, lambda_record, matches

RECORD = {"eventName": "MODIFY", "dynamodb": {"NewImage": {"entity": {"S": "Welcome"}, "status": {"S": "sent"},
                                                            "tags": {"SS": ["a", "b"]}}}}


@pytest.mark.parametrize("pattern, expected", [
    ({"eventName": ["INSERT", "MODIFY"]}, True),
    ({"eventName": ["REMOVE"]}, False),
    ({"dynamodb": {"NewImage": {"entity": {"S": ["Welcome"]}, "status": {"S": ["sent"]}}}}, True),
    ({"dynamodb": {"NewImage": {"entity": {"S": ["Welcome"]}, "status": {"S": ["sending"]}}}}, False),
    ({"dynamodb": {"NewImage": {"entity": {"S": [{"prefix": "Wel"}]}}}}, True),
    ({"dynamodb": {"NewImage": {"entity": {"S": [{"anything-but": ["Follow", "Coupon"]}]}}}}, True),
    ({"dynamodb": {"NewImage": {"entity": {"S": [{"anything-but": "Welcome"}]}}}}, False),
    ({"dynamodb": {"OldImage": {"status": [{"exists": False}]}}}, True),
    ({"dynamodb": {"OldImage": {"status": [{"exists": True}]}}}, False),
    ({"dynamodb": {"NewImage": {"tags": {"SS": ["b"]}}}}, True),  # a list matches if one element does
    ({"dynamodb": {"NewImage": {"missing": {"S": ["x"]}}}}, False),
])
def test_filter_patterns_match_as_lambda_matches_them(pattern, expected):
    check_pattern(pattern)
    assert matches(pattern, RECORD) is expected


@pytest.mark.parametrize("pattern", [
    {"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 0]}]}}}},
    {"$or": [{"eventName": ["INSERT"]}]},
    {"eventName": "INSERT"},
    {"eventName": [{"suffix": "T"}]},
])
def test_filter_rules_the_local_stack_does_not_run_are_refused(pattern):
    with pytest.raises(ValueError):
        check_pattern(pattern)


BATCH = [{"dynamodb": {"SequenceNumber": s}} for s in ("101", "102", "103")]


@pytest.mark.parametrize("answer, expected", [
    (None, None), ({}, None), ({"batchItemFailures": None}, None), ({"batchItemFailures": []}, None),
    ({"batchItemFailures": [{"itemIdentifier": "103"}, {"itemIdentifier": "102"}]}, 1),
    ({"batchItemFailures": [{"itemIdentifier": "101"}]}, 0),
])
def test_a_partial_batch_response_checkpoints_before_its_lowest_record(answer, expected):
    assert first_failure(answer, BATCH) == expected


@pytest.mark.parametrize("answer", [
    {"batchItemFailures": [{"itemIdentifier": ""}]}, {"batchItemFailures": [{"itemIdentifier": None}]},
    {"batchItemFailures": [{"id": "101"}]}, {"batchItemFailures": [{"itemIdentifier": "999"}]}, ["101"],
])
def test_an_answer_lambda_cannot_read_fails_the_whole_batch(answer):
    with pytest.raises(ValueError):
        first_failure(answer, BATCH)


def test_records_are_shaped_as_lambda_delivers_them():
    raw = {"eventID": "e1", "eventName": "INSERT", "eventVersion": "1.0", "eventSource": "aws:dynamodb",
           "awsRegion": "us-east-1",
           "dynamodb": {"ApproximateCreationDateTime": dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc),
                        "Keys": {"PK": {"S": "p"}}, "NewImage": {"PK": {"S": "p"}, "blob": {"B": b"\x00\x01"},
                                                                  "m": {"M": {"b": {"BS": [b"\xff"]}}}},
                        "SequenceNumber": "1", "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES"}}
    shaped = lambda_record(raw, "arn:aws:dynamodb:us-east-1:1:table/t/stream/x", "ap-east-1")
    assert shaped["eventSourceARN"] == "arn:aws:dynamodb:us-east-1:1:table/t/stream/x"
    assert shaped["awsRegion"] == "ap-east-1"
    assert shaped["dynamodb"]["ApproximateCreationDateTime"] == 1795564800
    assert shaped["dynamodb"]["NewImage"]["blob"] == {"B": "AAE="}
    assert shaped["dynamodb"]["NewImage"]["m"] == {"M": {"b": {"BS": ["/w=="]}}}
