"""Long jobs: a job with an id and a progress row, its work in chunks that run on the jobs
queue's Lambdas, resumable after a crash and never doing a chunk twice at once.

Domain modules define a `Kind` (scrm.jobs.kinds); scrm.entry.jobs lists the kinds the
deployment runs; `scrm.jobs.runner.start` starts one; `GET /ops/jobs/{job_id}` shows it.
This layer knows no domain module.
"""
