"""Every function runs on its own sample event (the files `sam local invoke -e` takes)."""
from __future__ import annotations

import datetime as dt

import pytest
from scrm.domain.stats import figures
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps

from tests.support.callbacks import VECTOR_A, sample
from tests.support.functions import LambdaContext, context_for, load_function


@pytest.fixture
def sample_corp(aws, simulated_wecom):
    corps.register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    simulated_wecom.add_staff(VECTOR_A["corp_id"], "zhangsan", "张三")
    return VECTOR_A


@pytest.mark.parametrize("function", ["worker", "welcome"])
def test_queue_functions_process_their_sample_batch(sample_corp, function):
    result = load_function(function).handler(sample(f"{function}/sqs_batch.json"), context_for(function))
    assert result == {"batchItemFailures": []}


def test_the_sweeper_runs_on_its_schedule_event(sample_corp):
    assert load_function("sweeper").handler(sample("sweeper/schedule.json"), context_for("sweeper")) == {
        "reenqueued": 0, "shards_left": 0}


def test_the_org_sync_runs_on_its_schedule_event(sample_corp):
    summary = load_function("org_sync").handler(sample("org_sync/schedule.json"), LambdaContext())
    assert summary["corps"] == 1 and summary["failed"] == []


def test_the_reconciliation_runs_on_its_schedule_event(sample_corp):
    context = LambdaContext(remaining_millis=900_000)
    report = load_function("reconcile").handler(sample("reconcile/schedule.json"), context)
    assert [r["corp_id"] for r in report["corps"]] == [VECTOR_A["corp_id"]]
    assert "error" not in report["corps"][0]


def test_the_stats_projector_counts_its_sample_batch_once(sample_corp):
    handler, batch = load_function("stats").handler, sample("stats/stream_batch.json")
    assert handler(batch, LambdaContext()) == {"batchItemFailures": []}
    assert handler(batch, LambdaContext()) == {"batchItemFailures": []}  # delivered again: counted once
    [day] = figures.daily(VECTOR_A["corp_id"], "staff", "zhangsan", dt.date(2026, 11, 25), dt.date(2026, 11, 25))
    assert day == {"day": "2026-11-25", "new_customers": 1, "lost_customers": 0, "deleted_customers": 0,
                   "welcomes_sent": 1, "coupons_issued": 1, "coupons_redeemed": 1}
