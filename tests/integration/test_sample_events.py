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


@pytest.mark.parametrize(("function", "kind"), [("org_sync", "org-sync"), ("reconcile", "reconcile")])
def test_the_nightly_functions_start_a_job_per_corp_on_their_schedule_event(sample_corp, function, kind):
    started = load_function(function).handler(sample(f"{function}/schedule.json"), LambdaContext())
    assert started["failed"] == []
    assert started["jobs"] == [{"corp_id": VECTOR_A["corp_id"], "job_id": f"{kind}-2026-11-26", "state": "queued"}]


def test_the_stats_projector_counts_its_sample_batch_once(sample_corp):
    handler, batch = load_function("stats").handler, sample("stats/stream_batch.json")
    assert handler(batch, LambdaContext()) == {"batchItemFailures": []}
    assert handler(batch, LambdaContext()) == {"batchItemFailures": []}  # delivered again: counted once
    [day] = figures.daily(VECTOR_A["corp_id"], "staff", "zhangsan", dt.date(2026, 11, 25), dt.date(2026, 11, 25))
    assert day == {"day": "2026-11-25", "new_customers": 1, "lost_customers": 0, "deleted_customers": 0,
                   "welcomes_sent": 1, "coupons_issued": 1, "coupons_redeemed": 1}


def test_the_jobs_function_runs_its_sample_step_and_its_watchdog_schedule(sample_corp):
    from scrm.domain.org.tree import SYNC_KIND
    from scrm.jobs import runner

    job = runner.start(VECTOR_A["corp_id"], SYNC_KIND, key="2026-11-26")  # the job the sample's step is of
    jobs = load_function("jobs")
    assert jobs.handler(sample("jobs/sqs_batch.json"), LambdaContext(remaining_millis=900_000)) == {
        "batchItemFailures": []}
    assert runner.get_job(VECTOR_A["corp_id"], job.job_id).chunks == 1  # planned
    assert jobs.handler(sample("jobs/schedule.json"), LambdaContext()) == {"jobs_looked_at": 0, "messages_sent": 0}
