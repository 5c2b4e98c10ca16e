"""Running jobs: `start`, the steps the jobs function takes, the watchdog, the view.

A job is a row (keys.job) and its chunks are rows in the same partition (keys.job_chunk).
Every step is a message on the jobs queue (scrm.jobs.queue) and every change of a row is a
conditional write, so a duplicate message, a crash or two workers at once change nothing
twice:

* start: the job row is put unless it exists (a schedule firing twice finds the job its
  first firing made: ids are `<kind>-<key>`, a day for schedules), then a `plan` message.
* plan: one planner at a time (a lease on the job row) asks the kind for pages of chunks,
  writes each chunk row unless it exists, then advances the job's cursor, chunk count and
  total in one update conditional on the cursor it started from. Chunks numbered below
  settled + window are dispatched (a message each); the rest wait their turn, so one job's
  ten thousand chunks never bury another job's ten.
* chunk: claimed with a lease (pending, or waiting and due, or running with its lease
  lapsed: a crashed run, counted); run; settled (done, failed or skipped) conditionally on
  still holding the lease, then the job's counters are added to. The n-th settle
  dispatches chunk n-1+window, and the settle that completes a planned job sends `finish`.
  A chunk that must wait (a rate-limit block, a WeCom backoff, a 24 h takeover) goes back
  to waiting with `not_before` and a delayed message.
* finish: once every chunk row has settled, the kind's `finish` makes the result; the job
  becomes done (failed if it failed outright or nothing succeeded) and leaves the active index.

Counters are added after the settle they count, so a crash in between loses a count and
never doubles one; `finish` counts again from the rows. Whatever a crash or a lost message
leaves behind (a job quiet for STALL seconds) the watchdog (`sweep`, every few minutes)
finds through the active-jobs index and sends again: a plan nobody holds, a chunk whose
message is gone, a finish nobody sent.
"""
from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pynamodb.exceptions import PutError

from scrm.jobs import queue
from scrm.jobs.kinds import (
    Chunk,
    ChunkReport,
    Context,
    Done,
    Failed,
    Kind,
    Registry,
    UnknownKind,
    Wait,
)
from scrm.jobs.queue import BadMessage, Message
from scrm.platform.credentials import UnknownCorp
from scrm.platform.errors import NotFound, ScrmError
from scrm.platform.observability import log
from scrm.store import keys
from scrm.store.models import Job, JobChunk, condition_failed, update_if
from scrm.wecom.apis.errors import RateLimited, TransientError, WeComError, corp_wide

JOB_TTL = 90 * 24 * 3600
JOB_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
JOB_ID = re.compile(r"[a-z][a-z0-9-]{0,80}")
FINAL = ("done", "failed")
SETTLED = ("done", "failed", "skipped")
LEASE_MARGIN = 60  # a lease outlives its step's budget by this much
SAFETY = 10  # seconds kept free at the end of an invocation
FINISH_SECONDS = 120
STALL = 600  # a job without progress this long is looked at by the watchdog
BACKOFF_BASE, BACKOFF_CAP = 30, queue.MAX_DELAY
clock = time.time  # every step reads the time here (tests run jobs on a virtual clock)


# --- starting and reading ---------------------------------------------------------------
def job_id_for(kind: Kind, key: str | None = None) -> str:
    """`<kind>-<key>`; a random key when none is given (every start a new job)."""
    key = uuid.uuid4().hex[:16] if key is None else key
    if not JOB_KEY.fullmatch(key):
        raise ValueError(f"job key {key!r} must match {JOB_KEY.pattern}")
    return f"{kind.name}-{key}"


def start(corp_id: str, kind: Kind, params: dict | None = None, *, key: str | None = None,
          now: float | None = None) -> Job:
    """Start a job of `kind` for the corp, or find the one `key` started before."""
    now = clock() if now is None else now
    job_id = job_id_for(kind, key)
    pk, sk = keys.job(corp_id, job_id)
    row = Job(pk, sk, job_id=job_id, corp_id=corp_id, kind=kind.name, params=params or {}, state="queued",
              window=kind.window, created_at=int(now), updated_at=int(now), expires_at=int(now) + JOB_TTL,
              GSI2PK=keys.ACTIVE_JOBS, GSI2SK=keys.active_job_sk(int(now), corp_id, job_id))
    try:
        row.save(condition=Job.PK.does_not_exist())
    except PutError as err:
        if not condition_failed(err):
            raise
        row = Job.get(pk, sk, consistent_read=True)
        if row.state != "queued":
            return row
        # queued still: the first start may have died before its message (a duplicate is harmless)
    queue.send(Message(corp_id, job_id, kind.name, "plan"))
    log.info("job started", corp_id=corp_id, job_id=job_id, kind=kind.name)
    return row


def get_job(corp_id: str, job_id: str) -> Job:
    """A job of the corp; NotFound for another corp's job or none at all."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFound("no such job", "job_id")
    try:
        return Job.get(*keys.job(corp_id, job_id))
    except Job.DoesNotExist:
        raise NotFound("no such job", "job_id") from None


def view(job: Job) -> dict:
    return {"job_id": job.job_id, "kind": job.kind, "state": job.state, "total": int(job.total),
            "done": int(job.done), "failed": int(job.failed), "result": job.result, "error": job.error,
            "created_at": int(job.created_at), "finished_at": int(job.finished_at) if job.finished_at else None}


def chunks_of(job: Job) -> Iterator[JobChunk]:
    return JobChunk.query(job.PK, JobChunk.SK.startswith(keys.CHUNK_PREFIX), consistent_read=True)


# --- the jobs function ------------------------------------------------------------------
def handle(registry: Registry, event: dict, context: Any, metrics: Metrics | None = None) -> dict:
    """An SQS batch of job steps (partial batch failures), or a scheduled event: the watchdog."""
    if "Records" not in event:
        looked = sweep(registry)
        if metrics is not None:
            metrics.add_metric(name="JobStepsResent", unit=MetricUnit.Count, value=looked["messages_sent"])
        return looked
    lambda_deadline = clock() + context.get_remaining_time_in_millis() / 1000 - SAFETY
    if metrics is not None:
        metrics.add_metric(name="JobSteps", unit=MetricUnit.Count, value=len(event["Records"]))
    failures = []
    for record in event["Records"]:
        try:
            message = Message.parse(record["body"])
            kind = registry.get(message.kind)
            need = FINISH_SECONDS if message.step == "finish" else kind.chunk_seconds
            if lambda_deadline - clock() < need:
                queue.send(message)  # out of time for this one: a fresh message, taken by the next invocation
                continue
            deadline = min(clock() + need, lambda_deadline)
            {"plan": _plan, "chunk": _chunk, "finish": _finish}[message.step](kind, message, deadline, metrics)
        except (BadMessage, UnknownKind) as err:
            log.error("jobs message refused", error=str(err), message_id=record.get("messageId"))
            failures.append(record["messageId"])  # to the dead-letter queue, where it is seen
        except Exception:  # noqa: BLE001 - this record comes back; the others go on
            log.exception("job step failed", message_id=record.get("messageId"))
            failures.append(record["messageId"])
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def _context(kind: Kind, job: Job, deadline: float, chunk: JobChunk | None = None) -> Context:
    return Context(corp_id=job.corp_id, job_id=job.job_id, kind=kind.name, params=job.params or {},
                   started_at=float(job.created_at), deadline=deadline,
                   chunk_id=chunk.chunk_id if chunk is not None else None,
                   attempt=int(chunk.attempts) if chunk is not None else 1, clock=clock)


def _load(message: Message, consistent: bool = True) -> Job | None:
    try:
        return Job.get(*keys.job(message.corp, message.job), consistent_read=consistent)
    except Job.DoesNotExist:
        log.warning("jobs message for a job that does not exist", corp_id=message.corp, job_id=message.job)
        return None


# --- plan ---------------------------------------------------------------------------------
def _plan(kind: Kind, message: Message, deadline: float, metrics: Metrics | None) -> None:
    job = _load(message)
    if job is None or job.state in FINAL or job.planned:
        return
    owner, now = uuid.uuid4().hex, clock()
    held = update_if(job, [Job.state.set("running"), Job.plan_owner.set(owner),
                           Job.plan_lease_until.set(round(deadline + LEASE_MARGIN, 3)), Job.updated_at.set(int(now))],
                     (Job.plan_lease_until < now) & Job.state.is_in("queued", "running") & (Job.planned == False))  # noqa: E712
    if not held:
        return  # another planner holds it; if it dies, the watchdog sends this again
    ctx = _context(kind, job, deadline)
    while True:
        try:
            page = kind.plan(ctx, job.plan_cursor)
        except RateLimited as err:
            _replan(job, owner, message, max(1.0, err.blocked_until - clock()) + random.uniform(0, 5))
            return
        except TransientError as err:
            if job.plan_retries >= kind.max_retries:
                _fail(kind, job, f"wecom_{err.errcode}")
            else:
                update_if(job, [Job.plan_retries.add(1)], Job.plan_owner == owner)
                _replan(job, owner, message, _backoff(int(job.plan_retries)))
            return
        except (WeComError, ScrmError, UnknownCorp) as err:
            _fail(kind, job, _error_text(err))
            return
        except Exception:  # noqa: BLE001 - a bug or an outage: retried like a transient failure, then the job fails
            log.exception("planning failed", corp_id=job.corp_id, job_id=job.job_id)
            if job.plan_retries >= kind.max_retries:
                _fail(kind, job, "plan_crashed")
            else:
                update_if(job, [Job.plan_retries.add(1)], Job.plan_owner == owner)
                _replan(job, owner, message, _backoff(int(job.plan_retries)))
            return
        first, count = int(job.next_seq), len(page.chunks)
        now = clock()
        for offset, chunk in enumerate(page.chunks):
            _put_chunk(job, _seq_id(first + offset), chunk, now)
        actions = [Job.next_seq.set(first + count), Job.chunks.add(count),
                   Job.total.add(sum(c.size for c in page.chunks)), Job.updated_at.set(int(now))]
        actions.append(Job.plan_cursor.set(page.cursor) if page.cursor is not None else Job.plan_cursor.remove())
        if page.cursor is None:
            actions += [Job.planned.set(True), Job.plan_owner.remove(), Job.plan_lease_until.set(0)]
        if not update_if(job, actions, (Job.plan_owner == owner) & (Job.next_seq == first)):
            log.warning("planner lost its lease", corp_id=job.corp_id, job_id=job.job_id)
            return
        eligible = int(job.settled) + int(job.window)
        queue.send_all([_chunk_message(job, _seq_id(n)) for n in range(first, min(first + count, eligible))])
        if page.cursor is None:
            if job.settled >= job.chunks:
                queue.send(Message(job.corp_id, job.job_id, job.kind, "finish"))
            return
        if ctx.time_left() < kind.chunk_seconds / 4:  # the next page in a fresh invocation
            _replan(job, owner, message, 0)
            return


def _replan(job: Job, owner: str, message: Message, delay: float) -> None:
    if update_if(job, [Job.plan_owner.remove(), Job.plan_lease_until.set(0)], Job.plan_owner == owner):
        queue.send(message, delay)


def _put_chunk(job: Job, chunk_id: str, chunk: Chunk, now: float) -> bool:
    row = JobChunk(*keys.job_chunk(job.corp_id, job.job_id, chunk_id), job_id=job.job_id, chunk_id=chunk_id,
                   payload=chunk.payload, size=chunk.size, state="pending", updated_at=int(now),
                   expires_at=int(job.created_at) + JOB_TTL)
    try:
        row.save(condition=JobChunk.PK.does_not_exist())
    except PutError as err:
        if not condition_failed(err):
            raise
        return False  # written by an earlier attempt of this page: it may have run already
    return True


def _seq_id(seq: int) -> str:
    return f"{seq:06d}"


def _chunk_message(job: Job, chunk_id: str) -> Message:
    return Message(job.corp_id, job.job_id, job.kind, "chunk", chunk_id)


# --- chunk --------------------------------------------------------------------------------
def _chunk(kind: Kind, message: Message, deadline: float, metrics: Metrics | None) -> None:
    now = clock()
    if message.not_before is not None and message.not_before > now:
        queue.send(message, message.not_before - now)  # the next link of a long wait
        return
    job = _load(message, consistent=False)
    if job is None:
        return
    owner = uuid.uuid4().hex
    chunk, verdict = _claim(job, message.chunk, owner, now, round(deadline + LEASE_MARGIN, 3))
    if verdict != "run":
        return  # settled, someone else's, or not yet due: this message was a duplicate
    if chunk.crashes > kind.max_crashes:
        _settle(kind, job, chunk, owner, Failed(f"crashed_{int(chunk.crashes)}_times"), metrics)
        return
    if job.state == "failed":
        _settle(kind, job, chunk, owner, None, metrics)  # skipped
        return
    ctx = _context(kind, job, deadline, chunk)
    try:
        outcome = kind.run(ctx, chunk.payload)
        if not isinstance(outcome, (Done, Failed, Wait)):
            raise TypeError(f"{kind.name}.run returned {type(outcome).__name__}, not Done, Failed or Wait")
    except RateLimited as err:  # a 45009 block or a spent budget: everyone waits for its end
        outcome = Wait(max(1.0, err.blocked_until - clock()) + random.uniform(0, 5), reason="rate_limited")
    except TransientError as err:
        if chunk.retries >= kind.max_retries:
            outcome = Failed(f"wecom_{err.errcode}")
        else:
            _wait(job, chunk, owner, Wait(_backoff(int(chunk.retries) + 1), reason=f"wecom_{err.errcode}"), True)
            return
    except (WeComError, ScrmError, UnknownCorp) as err:
        if isinstance(err, UnknownCorp) or isinstance(err, WeComError) and corp_wide(err):
            _fail(kind, job, _error_text(err))
        outcome = Failed(_error_text(err))
    except Exception:  # noqa: BLE001 - a bug or an outage: the chunk is run again later, counted as a crash
        log.exception("chunk crashed", corp_id=job.corp_id, job_id=job.job_id, chunk_id=chunk.chunk_id)
        if update_if(chunk, [JobChunk.state.set("pending"), JobChunk.crashes.add(1), JobChunk.owner.remove(),
                             JobChunk.lease_until.set(0), JobChunk.updated_at.set(int(clock()))],
                     (JobChunk.state == "running") & (JobChunk.owner == owner)):
            queue.send(message, _backoff(int(chunk.crashes)))
        return
    if isinstance(outcome, Wait):
        _wait(job, chunk, owner, outcome, False)
    else:
        _settle(kind, job, chunk, owner, outcome, metrics)


def _claim(job: Job, chunk_id: str, owner: str, now: float, lease_until: float) -> tuple[JobChunk | None, str]:
    """Take the chunk: (row, "run"), or (row or None, why not: "settled" | "busy" | "early" |
    "missing"). A chunk whose lease lapsed while running is taken over, its crash counted."""
    row = JobChunk(*keys.job_chunk(job.corp_id, job.job_id, chunk_id))
    claim = [JobChunk.state.set("running"), JobChunk.owner.set(owner), JobChunk.lease_until.set(lease_until),
             JobChunk.attempts.add(1), JobChunk.updated_at.set(int(now)), JobChunk.not_before.remove()]
    due = (JobChunk.state == "pending") | ((JobChunk.state == "waiting") & (JobChunk.not_before <= now))
    if update_if(row, claim, due & JobChunk.PK.exists()):
        return row, "run"
    try:
        current = JobChunk.get(row.PK, row.SK, consistent_read=True)
    except JobChunk.DoesNotExist:
        log.warning("jobs message for a chunk that does not exist", job_id=job.job_id, chunk_id=chunk_id)
        return None, "missing"
    if current.state in SETTLED:
        return current, "settled"
    if current.state != "running" or current.lease_until >= now:
        return current, "early" if current.state == "waiting" else "busy"
    # running, its lease lapsed: the run died; take it over, counting the crash
    if not update_if(row, [*claim, JobChunk.crashes.add(1)],
                     (JobChunk.state == "running") & (JobChunk.lease_until == current.lease_until)):
        return current, "busy"
    log.warning("chunk taken over after a crash", job_id=job.job_id, chunk_id=chunk_id, crashes=row.crashes)
    return row, "run"


def _wait(job: Job, chunk: JobChunk, owner: str, wait: Wait, retried: bool) -> None:
    now = clock()
    not_before = round(now + max(0.0, wait.seconds), 3)
    actions = [JobChunk.state.set("waiting"), JobChunk.not_before.set(not_before), JobChunk.owner.remove(),
               JobChunk.lease_until.set(0), JobChunk.updated_at.set(int(now))]
    if wait.payload is not None:
        actions.append(JobChunk.payload.set(wait.payload))
    if retried:
        actions.append(JobChunk.retries.add(1))
    if update_if(chunk, actions, (JobChunk.state == "running") & (JobChunk.owner == owner)):
        queue.send(Message(job.corp_id, job.job_id, job.kind, "chunk", chunk.chunk_id, not_before), wait.seconds)
        log.info("chunk waits", job_id=job.job_id, chunk_id=chunk.chunk_id, seconds=round(wait.seconds),
                 reason=wait.reason)
    else:
        log.warning("chunk lost its lease while running", job_id=job.job_id, chunk_id=chunk.chunk_id)


def _settle(kind: Kind, job: Job, chunk: JobChunk, owner: str, outcome: Done | Failed | None,
            metrics: Metrics | None) -> None:
    """Record the chunk's end (None: skipped), then count it on the job and pass the turn on."""
    size, now = int(chunk.size), clock()
    spawn: tuple[Chunk, ...] = ()
    if outcome is None:
        state, done, failed, result, error = "skipped", 0, 0, None, None
    elif isinstance(outcome, Done):
        failed = min(size, outcome.failed)
        state, result, error, spawn = "done", outcome.result, None, outcome.spawn
        done = size - failed if outcome.done is None else outcome.done
    else:
        state, result, error, done = "failed", outcome.result, outcome.error, outcome.done
        failed = size - done if outcome.failed is None else outcome.failed
    new = [c for n, c in enumerate(spawn) if _put_chunk(job, f"{chunk.chunk_id}.{n:03d}", c, now)]
    actions = [JobChunk.state.set(state), JobChunk.done.set(done), JobChunk.failed.set(failed),
               JobChunk.owner.remove(), JobChunk.lease_until.set(0), JobChunk.updated_at.set(int(now)),
               JobChunk.result.set(result) if result is not None else JobChunk.result.remove(),
               JobChunk.error.set(error) if error is not None else JobChunk.error.remove()]
    if not update_if(chunk, actions, (JobChunk.state == "running") & (JobChunk.owner == owner)):
        log.warning("chunk lost its lease while running", job_id=job.job_id, chunk_id=chunk.chunk_id)
        return
    if state == "failed":
        log.warning("chunk failed", job_id=job.job_id, chunk_id=chunk.chunk_id, error=error)
        if metrics is not None:
            metrics.add_metric(name="JobChunksFailed", unit=MetricUnit.Count, value=1)
    counted = Job(job.PK, job.SK)
    counted.update(actions=[Job.settled.add(1), Job.done.add(done), Job.failed.add(failed),
                            Job.chunks.add(len(new)), Job.total.add(sum(c.size for c in new)),
                            Job.updated_at.set(int(now))])
    turn = int(counted.settled) - 1 + int(counted.window)
    messages = [_chunk_message(job, _seq_id(turn))] if turn < counted.next_seq else []
    messages += [_chunk_message(job, f"{chunk.chunk_id}.{n:03d}") for n in range(len(spawn))]
    queue.send_all(messages)
    if counted.planned and counted.settled >= counted.chunks:
        queue.send(Message(job.corp_id, job.job_id, job.kind, "finish"))


def _fail(kind: Kind, job: Job, error: str) -> None:
    """The job fails as a whole (a corp-wide refusal, a plan that cannot be made): no more
    pages; chunks not yet run are skipped; the result is still made once all have settled."""
    if update_if(job, [Job.state.set("failed"), Job.error.set(error), Job.planned.set(True),
                       Job.plan_owner.remove(), Job.plan_lease_until.set(0), Job.updated_at.set(int(clock()))],
                 Job.state.is_in("queued", "running")):
        log.error("job failed", corp_id=job.corp_id, job_id=job.job_id, kind=kind.name, error=error)
        if job.settled >= job.chunks:
            queue.send(Message(job.corp_id, job.job_id, job.kind, "finish"))


def _backoff(retry: int) -> float:
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, retry - 1)) * random.uniform(0.8, 1.2)


def _error_text(err: Exception) -> str:
    if isinstance(err, WeComError):
        return f"wecom_{err.errcode}"
    if isinstance(err, ScrmError):
        return f"{err.field}: {err.reason}" if err.field else err.reason
    if isinstance(err, UnknownCorp):
        return "unknown_corp"
    return type(err).__name__


# --- finish -------------------------------------------------------------------------------
def _finish(kind: Kind, message: Message, deadline: float, metrics: Metrics | None) -> None:
    job = _load(message)
    if job is None or job.finished_at or not job.planned:
        return
    rows = list(chunks_of(job))
    if any(row.state not in SETTLED for row in rows):
        return  # a count was lost or came early: the last settle sends finish again
    reports = [ChunkReport(r.chunk_id, r.payload, int(r.size), r.state, int(r.done or 0), int(r.failed or 0),
                           r.result, r.error) for r in rows]
    result = kind.finish(_context(kind, job, deadline), reports)
    done, failed = sum(r.done for r in reports), sum(r.failed for r in reports)
    state = "failed" if job.state == "failed" or (failed and not done) else "done"
    now = int(clock())
    finished = update_if(job, [Job.state.set(state), Job.result.set(result), Job.finished_at.set(now),
                               Job.updated_at.set(now), Job.total.set(sum(r.size for r in reports)),
                               Job.done.set(done), Job.failed.set(failed), Job.chunks.set(len(rows)),
                               Job.settled.set(len(rows)), Job.GSI2PK.remove(), Job.GSI2SK.remove()],
                         Job.finished_at.does_not_exist())
    if finished:
        log.info("job finished", corp_id=job.corp_id, job_id=job.job_id, kind=kind.name, state=state,
                 total=int(job.total), done=done, failed=failed)
        if metrics is not None:
            metrics.add_metric(name="JobsFailed" if state == "failed" else "JobsDone", unit=MetricUnit.Count, value=1)


# --- the watchdog -------------------------------------------------------------------------
def sweep(registry: Registry, now: float | None = None) -> dict:
    """Send again what a crash or a lost message left undone in jobs quiet for STALL seconds."""
    now = clock() if now is None else now
    looked = sent = 0
    for job in Job.gsi2.query(keys.ACTIVE_JOBS):
        if now - job.updated_at < STALL:
            continue
        looked += 1
        try:
            registry.get(job.kind)
        except UnknownKind:
            log.error("active job of a kind this deployment does not run", job_id=job.job_id, kind=job.kind)
            continue
        messages = _overdue(job, now)
        queue.send_all(messages)
        sent += len(messages)
    if sent:
        log.warning("jobs watchdog re-sent steps", jobs=looked, messages=sent)
    return {"jobs_looked_at": looked, "messages_sent": sent}


def _overdue(job: Job, now: float) -> list[Message]:
    plan = Message(job.corp_id, job.job_id, job.kind, "plan")
    if job.state == "queued" or (not job.planned and job.plan_lease_until < now):
        return [plan]
    rows = list(chunks_of(job))
    settled = sum(row.state in SETTLED for row in rows)
    messages = []
    for row in rows:
        spawned = "." in row.chunk_id
        stale = now - row.updated_at >= STALL
        if row.state == "pending" and stale and (spawned or int(row.chunk_id) < settled + int(job.window)) \
                or row.state == "running" and row.lease_until < now \
                or row.state == "waiting" and (row.not_before or 0) < now - STALL:
            messages.append(_chunk_message(job, row.chunk_id))
    if job.planned and settled == len(rows):
        messages.append(Message(job.corp_id, job.job_id, job.kind, "finish"))
    return messages
