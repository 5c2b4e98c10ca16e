"""The jobs layer with a toy kind, on moto and a virtual clock (tests/support/jobs.py).

Each chunk of the toy kind makes one effect, recorded exactly once with scrm.store.once (a
domain's own idempotency) and counted in RUNS every time `run` is called, so a test can
tell "run again" from "done again". Params steer it: pages, crashes, failures, waits.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from scrm.jobs import runner
from scrm.jobs.kinds import Chunk, Context, Done, Failed, Kind, Page, Registry, Wait
from scrm.platform.errors import Invalid, NotFound
from scrm.store import keys
from scrm.store.models import Job, JobChunk, Once
from scrm.store.once import run_once
from scrm.wecom.apis.errors import ConfigurationError, RateLimited, TransientError

from tests.support.jobs import VISIBILITY, Crash, JobsQueue

CORP, OTHER = "wwjobs0001", "wwjobs0002"
RUNS: list[tuple[str, int]] = []  # (chunk id, attempt) of every run


def plan(ctx: Context, cursor: Any) -> Page:
    params, first = ctx.params, cursor or 0
    if params.get("crash_planning_at") == first and _first_time(ctx, f"plan{first}"):
        raise Crash
    last = min(params["chunks"], first + params.get("page", params["chunks"]))
    chunks = [Chunk({"n": n}, size=2) for n in range(first, last)]
    return Page(chunks, last if last < params["chunks"] else None)


def _first_time(ctx: Context, what: str) -> bool:
    return run_once(ctx.corp_id, "toy-first", f"{ctx.job_id}:{what}", [])


def run(ctx: Context, payload: dict) -> Any:
    n, params = payload["n"], ctx.params
    RUNS.append((ctx.chunk_id, ctx.attempt))
    if payload.get("child"):
        effect(ctx)
        return Done(result={"n": n})
    if n in params.get("slow", []):
        time.sleep(0.3)
    if n in params.get("transient", []) and ctx.attempt <= params.get("transient_times", 1):
        raise TransientError(-1, "system busy", "externalcontact/list")
    if n in params.get("rate_limited", []) and ctx.attempt == 1:
        raise RateLimited(45009, "freq", "externalcontact/list", blocked_until=runner.clock() + 60)
    if n in params.get("corp_wide", []):
        raise ConfigurationError(48002, "api forbidden", "externalcontact/list")
    if n in params.get("invalid", []):
        raise Invalid("not a store", "store_id")
    if n in params.get("wait", []) and ctx.attempt == 1:
        return Wait(3600, payload={**payload, "waited": True}, reason="takeover")
    effect(ctx)
    if n in params.get("crash_after_effect", []) and ctx.attempt <= params.get("crashes", 1):
        raise Crash
    if n in params.get("bug", []) and ctx.attempt == 1:
        raise KeyError("a bug")
    if n in params.get("fail", []):
        return Failed("toy_refused", done=1)
    spawn = tuple(Chunk({"n": n * 100 + i, "child": True}) for i in range(params.get("spawn", {}).get(str(n), 0)))
    return Done(result={"n": n, "waited": payload.get("waited", False)}, spawn=spawn)


def effect(ctx: Context) -> None:
    run_once(ctx.corp_id, "toy", f"{ctx.job_id}:{ctx.chunk_id}", [])


def finish(ctx: Context, reports: list) -> dict:
    return {"done": sorted(r.result["n"] for r in reports if r.state == "done"),
            "failed": sorted((r.payload["n"], r.error) for r in reports if r.state == "failed"),
            "skipped": sorted(r.payload["n"] for r in reports if r.state == "skipped"),
            "waited": sorted(r.result["n"] for r in reports if r.state == "done" and r.result.get("waited"))}


TOY = Kind("toy", plan=plan, run=run, finish=finish, chunk_seconds=60, window=3, max_crashes=2, max_retries=2)


@pytest.fixture
def jobs(aws, monkeypatch) -> JobsQueue:
    RUNS.clear()
    return JobsQueue(monkeypatch, Registry([TOY]))


def effects(job: Job) -> list[str]:
    return sorted(row.PK.rsplit(keys.SEP, 1)[-1] for row in Once.scan(Once.effect == "toy")
                  if row.PK.rsplit(keys.SEP, 1)[-1].startswith(f"{job.job_id}:"))


def chunk(job: Job, chunk_id: str) -> JobChunk:
    return JobChunk.get(*keys.job_chunk(CORP, job.job_id, chunk_id))


def state_of(job: Job, chunk_id: str) -> str | None:
    try:
        return chunk(job, chunk_id).state
    except JobChunk.DoesNotExist:
        return None


def reload(job: Job) -> Job:
    return runner.get_job(CORP, job.job_id)


def start(**params: Any) -> Job:
    return runner.start(CORP, TOY, params)


def test_a_job_runs_every_chunk_once_and_reports_progress_in_items(jobs):
    job = start(chunks=7, page=3)
    assert runner.view(reload(job))["state"] == "queued"

    jobs.run()

    done = runner.view(reload(job))
    assert {k: done[k] for k in ("kind", "state", "total", "done", "failed")} == {
        "kind": "toy", "state": "done", "total": 14, "done": 14, "failed": 0}
    assert done["result"] == {"done": list(range(7)), "failed": [], "skipped": [], "waited": []}
    assert done["finished_at"] >= done["created_at"]
    assert sorted(c for c, _ in RUNS) == [f"{n:06d}" for n in range(7)]
    assert len(effects(job)) == 7
    assert reload(job).GSI2PK is None  # out of the active index


def test_no_more_than_the_window_is_dispatched_ahead_of_the_settled_chunks(jobs):
    job = start(chunks=10)
    jobs.run(max_steps=1)  # the plan step: every chunk written, three dispatched
    assert [m["chunk"] for m in jobs.sent if m["step"] == "chunk"] == ["000000", "000001", "000002"]
    assert reload(job).chunks == 10

    jobs.run()

    chunk_messages = [m["chunk"] for m in jobs.sent if m["step"] == "chunk"]
    assert sorted(chunk_messages) == [f"{n:06d}" for n in range(10)]  # each sent once: no duplicates
    assert reload(job).state == "done"


def test_starting_with_the_same_key_twice_finds_the_first_job(jobs):
    one = runner.start(CORP, TOY, {"chunks": 2}, key="2026-12-02")
    jobs.run()
    two = runner.start(CORP, TOY, {"chunks": 5}, key="2026-12-02")
    assert two.job_id == one.job_id and two.state == "done" and two.total == 4
    assert jobs.pending == 0  # nothing sent for a job already started
    other_corp = runner.start(OTHER, TOY, {"chunks": 1}, key="2026-12-02")
    assert other_corp.state == "queued"  # the key is per corp


def test_a_crash_mid_chunk_resumes_without_repeating_the_effect(jobs):
    job = start(chunks=3, crash_after_effect=[1])

    jobs.run()

    row = chunk(job, "000001")
    assert (row.state, row.crashes, row.attempts) == ("done", 1, 2)
    assert RUNS.count(("000001", 2)) == 1  # run again, as the lease lapsed ...
    assert effects(job).count(f"{job.job_id}:000001") == 1  # ... and the effect happened once
    assert runner.view(reload(job))["state"] == "done" and reload(job).done == 6
    assert jobs.now - job.created_at >= VISIBILITY  # it came back when SQS would hand it out again


def test_a_chunk_that_keeps_crashing_fails_alone(jobs):
    job = start(chunks=2, crash_after_effect=[0], crashes=99)

    jobs.run()

    row = chunk(job, "000000")
    assert (row.state, row.error, row.crashes) == ("failed", "crashed_3_times", 3)
    final = runner.view(reload(job))
    assert (final["state"], final["done"], final["failed"]) == ("done", 2, 2)
    assert final["result"]["failed"] == [[0, "crashed_3_times"]]


def test_an_exception_in_a_chunk_is_retried_at_once_and_counted(jobs):
    job = start(chunks=1, bug=[0])
    jobs.run()
    row = chunk(job, "000000")
    assert (row.state, row.crashes) == ("done", 1)
    assert jobs.now - job.created_at < VISIBILITY  # released at once: no wait for a lapsed lease


def test_two_workers_given_the_same_chunk_run_it_once(jobs):
    job = start(chunks=1, slow=[0])
    jobs.run(max_steps=1)  # plan
    [message] = jobs.bodies()
    jobs.drop(lambda m: False)
    body = json.dumps(message)

    workers = [threading.Thread(target=jobs.step, args=(body,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    jobs.run()

    assert RUNS == [("000000", 1)]
    final = reload(job)
    assert (final.state, final.done, final.settled) == ("done", 2, 1)


def test_a_planner_crash_resumes_from_the_page_it_was_on(jobs):
    job = start(chunks=7, page=3, crash_planning_at=3)

    jobs.run()

    final = reload(job)
    assert (final.state, final.chunks, final.total) == ("done", 7, 14)
    assert sorted(c for c, _ in RUNS) == [f"{n:06d}" for n in range(7)]


def test_failed_chunks_are_counted_and_a_job_where_nothing_succeeded_fails(jobs):
    partly = start(chunks=3, fail=[1])
    nothing = start(chunks=2, fail=[0, 1], invalid=[])
    jobs.run()

    partial = runner.view(reload(partly))
    assert (partial["state"], partial["done"], partial["failed"]) == ("done", 5, 1)
    assert partial["result"]["failed"] == [[1, "toy_refused"]]
    none = runner.view(reload(nothing))
    assert (none["state"], none["done"], none["failed"]) == ("done", 2, 2)  # each chunk did one item

    refused = start(chunks=2, invalid=[0, 1])
    jobs.run()
    final = runner.view(reload(refused))
    assert (final["state"], final["done"], final["failed"]) == ("failed", 0, 4)
    assert final["result"]["failed"] == [[0, "store_id: not a store"], [1, "store_id: not a store"]]


def test_a_corp_wide_refusal_fails_the_job_and_skips_the_rest(jobs):
    job = start(chunks=8, corp_wide=[0])

    jobs.run()

    final = runner.view(reload(job))
    assert (final["state"], final["error"]) == ("failed", "wecom_48002")
    assert final["result"]["failed"] == [[0, "wecom_48002"]]
    assert final["result"]["skipped"]  # not run once the job had failed
    assert len(RUNS) < 8


def test_transient_failures_wait_with_backoff_then_give_up(jobs):
    job = start(chunks=2, transient=[0, 1], transient_times=1)
    jobs.run()
    assert reload(job).state == "done" and chunk(job, "000000").retries == 1

    stubborn = start(chunks=1, transient=[0], transient_times=99)
    jobs.run()
    row = JobChunk.get(*keys.job_chunk(CORP, stubborn.job_id, "000000"))
    assert (row.state, row.error, row.retries) == ("failed", "wecom_-1", 2)


def test_a_rate_limited_chunk_waits_for_the_block_to_end(jobs):
    job = start(chunks=2, rate_limited=[0])
    jobs.run(until=lambda: state_of(job, "000000") == "waiting")
    row = chunk(job, "000000")
    assert row.not_before >= jobs.now + 60 and row.retries == 0

    jobs.run()
    assert reload(job).state == "done"
    assert jobs.now >= row.not_before


def test_a_chunk_can_wait_longer_than_sqs_delays_a_message(jobs):
    job = start(chunks=1, wait=[0])

    jobs.run()

    final = runner.view(reload(job))
    assert final["state"] == "done" and final["result"]["waited"] == [0]
    relays = [m for m in jobs.sent if m.get("not_before")]
    assert len(relays) >= 4  # an hour in links of at most 15 minutes
    assert jobs.now - job.created_at >= 3600


def test_chunks_spawned_while_running_join_the_job(jobs):
    job = start(chunks=2, spawn={"1": 3})

    jobs.run()

    final = runner.view(reload(job))
    assert (final["total"], final["done"]) == (4 + 3, 7)
    assert final["result"]["done"] == [0, 1, 100, 101, 102]
    assert chunk(job, "000001.002").state == "done"


def test_the_watchdog_sends_again_what_a_lost_message_left_undone(jobs):
    job = start(chunks=4)
    jobs.run(max_steps=1)  # planned; three chunk messages sent
    assert jobs.drop(lambda m: m.get("chunk") != "000001") == 1  # SQS lost one

    jobs.run()
    assert reload(job).state == "running"  # stuck: its turn never comes back

    assert jobs.sweep()["jobs_looked_at"] == 0  # not quiet long enough yet
    jobs.advance(runner.STALL)
    assert jobs.sweep() == {"jobs_looked_at": 1, "messages_sent": 1}
    jobs.run()
    final = reload(job)
    assert (final.state, final.done) == ("done", 8)


def test_the_watchdog_finishes_a_job_whose_finish_was_lost(jobs):
    job = start(chunks=1)
    jobs.run(max_steps=2)  # plan, the chunk
    assert [m["step"] for m in jobs.bodies()] == ["finish"]
    jobs.drop(lambda m: False)  # lost
    jobs.advance(runner.STALL)
    assert jobs.sweep()["messages_sent"] == 1
    jobs.run()
    assert reload(job).state == "done"


def test_a_job_is_seen_by_its_own_corp_only(jobs):
    job = start(chunks=1)
    assert runner.get_job(CORP, job.job_id).job_id == job.job_id
    with pytest.raises(NotFound):
        runner.get_job(OTHER, job.job_id)
    with pytest.raises(NotFound):
        runner.get_job(CORP, "Not A Job!")


def test_a_bad_message_is_refused_to_the_dead_letter_queue(jobs):
    event = {"Records": [{"messageId": "m1", "body": "{not json"},
                         {"messageId": "m2", "body": '{"corp": "c", "job": "j", "kind": "nope", "step": "plan"}'}]}
    from tests.support.functions import LambdaContext

    answer = runner.handle(Registry([TOY]), event, LambdaContext(remaining_millis=900_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}


def test_a_batch_short_of_time_hands_its_records_on(jobs):
    from tests.support.functions import LambdaContext

    job = start(chunks=1)
    [plan_message] = [json.dumps(m) for m in jobs.bodies()]
    jobs.drop(lambda m: False)
    answer = runner.handle(Registry([TOY]), {"Records": [{"messageId": "m1", "body": plan_message}]},
                           LambdaContext(remaining_millis=30_000))  # less than a chunk's 60 s
    assert answer == {"batchItemFailures": []}
    assert reload(job).state == "queued" and jobs.pending == 1  # sent again, for the next invocation
