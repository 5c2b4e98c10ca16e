"""The org tree from the command line: a full sync now, and the placement rule per corp.

    python -m infra.scripts.org sync [--corp ww...] [--aws] [--no-wait]   # all corps without --corp
    python -m infra.scripts.org rule --corp ww... --show [--aws]
    python -m infra.scripts.org rule --corp ww... --file rule.json [--aws]

A sync is a job per corp, run by the jobs function of the target (the running local stack,
or AWS): the command starts them, waits for each and prints its report (with --no-wait, only
the job ids; `GET /ops/jobs/{job_id}` shows them later).

rule.json is a depth rule, {"mode": "depth", "branch": 2, "region": 3, "store": 4}, or an
explicit one, {"mode": "explicit", "branches": [...], "regions": {...}, "stores": {...}}
(see scrm/domain/org/tree.py). Setting a rule re-places the stored departments at once;
staff follow at the next sync, so run `sync` after changing it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from infra.scripts import target

WAIT_SECONDS = 900.0
POLL_SECONDS = 0.5


def _wait(corp_id: str, job_id: str, timeout: float) -> dict:
    """The job's view once it has finished; SystemExit if it has not within `timeout`."""
    from scrm.jobs import runner

    give_up = time.monotonic() + timeout
    while True:
        job = runner.view(runner.get_job(corp_id, job_id))
        if job["finished_at"]:
            return job
        if time.monotonic() > give_up:
            raise SystemExit(f"{corp_id}: org sync job {job_id} still {job['state']} after {timeout:.0f} s; "
                             "is the jobs function running?")
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="full sync of departments and staff from WeCom")
    sync.add_argument("--corp", help="only this corp (default: every registered corp)")
    sync.add_argument("--no-wait", action="store_true", help="start the jobs and print their ids")
    sync.add_argument("--timeout", type=float, default=WAIT_SECONDS, help="seconds to wait for each job")
    rule = commands.add_parser("rule", help="show or set how departments map to branch/region/store")
    rule.add_argument("--corp", required=True)
    shown = rule.add_mutually_exclusive_group(required=True)
    shown.add_argument("--show", action="store_true")
    shown.add_argument("--file", help="JSON file with the rule")
    for command in (sync, rule):
        target.add_arguments(command)
    args = parser.parse_args(argv)
    target.configure(args)

    from scrm.domain.org import tree as org
    from scrm.entry.jobs import start_org_sync
    from scrm.platform.errors import ScrmError
    from scrm.store.corps import registered

    try:
        if args.command == "sync":
            started = [(corp_id, start_org_sync(corp_id)) for corp_id in ([args.corp] if args.corp else registered())]
            status = 0
            for corp_id, job_id in started:  # the jobs run side by side; their reports come in turn
                if args.no_wait:
                    print(f"{corp_id}: org sync job {job_id} started")
                    continue
                job = _wait(corp_id, job_id, args.timeout)
                print(f"{corp_id}: org sync job {job_id} {job['state']}")
                print(json.dumps(job["result"], ensure_ascii=False, indent=2, default=str))
                status = status or (0 if job["state"] == "done" else 1)
            return status
        elif args.show:
            print(json.dumps(org.rule_of(args.corp), ensure_ascii=False, indent=2))
        else:
            with open(args.file, encoding="utf-8") as handle:
                org.set_rule(args.corp, json.load(handle))
            print(f"rule set for {args.corp}; run `sync` to re-place its staff")
    except (ScrmError, ValueError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
