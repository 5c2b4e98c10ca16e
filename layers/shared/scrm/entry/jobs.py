"""The jobs this deployment runs, and the entry points that start and run them.

KINDS lists every kind (a domain module's plan, run and finish); the jobs function runs
their steps (`handle`), the nightly schedules start one job per registered corp
(`start_nightly`), the ops API and the operator commands start the rest. A kind is added
by writing it in its domain module and listing it here.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Metrics

from scrm.domain.contact_ways import bulk
from scrm.domain.customers import reconcile
from scrm.domain.org import tree
from scrm.jobs import runner
from scrm.jobs.kinds import Kind, Registry
from scrm.platform.config import business_day
from scrm.platform.observability import log
from scrm.store.corps import registered

KINDS = Registry([bulk.KIND, reconcile.KIND, tree.SYNC_KIND])


def handle(event: dict, context: Any, metrics: Metrics | None = None) -> dict:
    """The jobs function: a batch of job steps from the jobs queue, or the watchdog's schedule."""
    return runner.handle(KINDS, event, context, metrics)


def scheduled_at(event: dict) -> float:
    """When EventBridge meant the schedule to fire (its `time`); now if the event has none."""
    try:
        return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return time.time()


def start_nightly(kind: Kind, event: dict) -> dict:
    """One job of `kind` per registered corp, its id made of the schedule's business day, so
    that a schedule firing twice (or retried by EventBridge) starts each corp's job once."""
    day = business_day(scheduled_at(event))
    started, failed = [], []
    for corp_id in registered():
        try:
            job = runner.start(corp_id, kind, key=day)
        except Exception:  # noqa: BLE001 - one corp's failure must not keep the others from their job
            log.exception("could not start a job", corp_id=corp_id, kind=kind.name)
            failed.append(corp_id)
            continue
        started.append({"corp_id": corp_id, "job_id": job.job_id, "state": job.state})
    return {"day": day, "kind": kind.name, "jobs": started, "failed": failed}


def start_org_sync(corp_id: str) -> str:
    """A full org sync of one corp now (the operator command); its job id."""
    return runner.start(corp_id, tree.SYNC_KIND).job_id
