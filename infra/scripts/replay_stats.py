"""Count the stream records the stats projector set aside, after fixing the cause.

    python -m infra.scripts.replay_stats [--aws] [--dry-run]

Each message in StatsDLQ names a shard and a range of sequence numbers (what Lambda sends
to an on-failure destination). The records are read again from the stream, which keeps
them 24 hours, and applied by the projector; a message is deleted once its records are all
counted. Safe at any time: a fact counted before is found by its marker and not counted again.
"""
from __future__ import annotations

import argparse
import json
import sys

import boto3

from infra.local.streams import lambda_record
from infra.scripts import target

READ_LIMIT = 1000


def records_of(streams, info: dict) -> list[dict]:
    """The records of one set-aside batch, Lambda-shaped, in order."""
    first, last = int(info["startSequenceNumber"]), int(info["endSequenceNumber"])
    iterator = streams.get_shard_iterator(StreamArn=info["streamArn"], ShardId=info["shardId"],
                                          ShardIteratorType="AT_SEQUENCE_NUMBER",
                                          SequenceNumber=info["startSequenceNumber"])["ShardIterator"]
    region = info["streamArn"].split(":")[3]
    found: list[dict] = []
    while iterator:
        page = streams.get_records(ShardIterator=iterator, Limit=READ_LIMIT)
        records = page.get("Records", [])
        found += [lambda_record(r, info["streamArn"], region) for r in records
                  if first <= int(r["dynamodb"]["SequenceNumber"]) <= last]
        if not records or int(records[-1]["dynamodb"]["SequenceNumber"]) >= last:
            break
        iterator = page.get("NextShardIterator")
    return found


def replay(dlq_url: str, *, dry_run: bool = False, out=print) -> dict:
    # scrm reads its settings at import: imported once target.configure has set them
    from scrm.domain.stats import projector
    from scrm.domain.stats.facts import BadRecord

    sqs, streams = boto3.client("sqs"), boto3.client("dynamodbstreams")
    report = {"batches": 0, "counted": 0, "repeated": 0, "left": 0}
    seen: set[str] = set()
    while True:
        messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                       WaitTimeSeconds=0).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            return report
        for message in fresh:
            seen.add(message["MessageId"])
            info = json.loads(message["Body"])["DDBStreamBatchInfo"]
            span = f"{info['shardId']} {info['startSequenceNumber']}..{info['endSequenceNumber']}"
            report["batches"] += 1
            try:
                records = records_of(streams, info)
            except streams.exceptions.TrimmedDataAccessException:
                out(f"  {span}: no longer in the stream (kept 24 hours); its facts are not in the figures")
                report["left"] += 1
                continue
            if dry_run:
                out(f"  {span}: {len(records)} record(s)")
                continue
            try:
                outcome = projector.project(records)
            except BadRecord as err:
                outcome, problem = None, str(err)
            else:
                problem = f"stopped at {outcome.failed}" if outcome.failed else None
            if problem:
                out(f"  {span}: not counted ({problem}); left in the queue")
                report["left"] += 1
                continue
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            report["counted"] += outcome.counted
            report["repeated"] += outcome.repeated
            out(f"  {span}: {outcome.counted} fact(s) counted, {outcome.repeated} counted before")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list the set-aside batches without counting them")
    target.add_arguments(parser)
    args = parser.parse_args(argv)
    names = target.configure(args)
    report = replay(names["queue_urls"]["StatsDLQ"], dry_run=args.dry_run)
    print(f"StatsDLQ: {report['batches']} batch(es); {report['counted']} fact(s) counted, "
          f"{report['repeated']} counted before, {report['left']} batch(es) left")
    return 1 if report["left"] else 0


if __name__ == "__main__":
    sys.exit(main())
