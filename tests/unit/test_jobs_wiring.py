"""The jobs the deployment runs fit the function and queue that run them (template.yaml)."""
from __future__ import annotations

from pathlib import Path

import yaml
from scrm.entry.jobs import KINDS
from scrm.jobs import runner

from infra.local import template as tpl

TEMPLATE = tpl.load()
FUNCTION = TEMPLATE.functions["JobsFunction"]
QUEUE = TEMPLATE.queues["JobsQueue"].properties
OPENAPI = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text(encoding="utf-8"))


def test_every_kind_has_room_for_a_chunk_in_one_invocation():
    # a step is only started with its whole budget left, so a longer one would be deferred forever
    for kind in KINDS:
        assert kind.chunk_seconds + runner.SAFETY <= FUNCTION.timeout, kind.name
    assert runner.FINISH_SECONDS + runner.SAFETY <= FUNCTION.timeout


def test_a_crashed_chunk_lease_lapses_before_sqs_hands_its_message_out_again():
    visibility = int(QUEUE["VisibilityTimeout"])
    assert visibility >= FUNCTION.timeout  # Lambda refuses a shorter one
    for kind in KINDS:
        assert kind.chunk_seconds + runner.LEASE_MARGIN < visibility, kind.name


def test_the_jobs_function_reads_its_queue_and_has_a_watchdog():
    [source] = FUNCTION.sqs_sources
    assert (source.queue, source.report_batch_item_failures) == ("JobsQueue", True)
    assert [s.expression for s in FUNCTION.schedules] == ["rate(5 minutes)"]
    assert runner.STALL >= 2 * 300  # a job is looked at only after two watchdog rounds without progress


def test_the_api_names_every_kind_it_may_show():
    assert OPENAPI["components"]["schemas"]["Job"]["properties"]["kind"]["enum"] == [k.name for k in KINDS]
