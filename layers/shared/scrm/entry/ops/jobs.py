"""GET /ops/jobs/{job_id}: a long job's progress and, once finished, its result."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from scrm.entry.ops.auth import current_corp
from scrm.entry.ops.inputs import path
from scrm.jobs import runner

router = APIGatewayHttpRouter()


@router.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict:
    return runner.view(runner.get_job(current_corp(router), path(job_id)))
