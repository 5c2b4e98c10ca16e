"""Move dead-lettered callback events back to the events queue, after fixing the cause.

    python -m infra.scripts.replay_dlq [--aws] [--dry-run] [--limit N]

Safe to run at any time: the worker's effects are idempotent, so an event that is
replayed after all was processed once already changes nothing.
"""
from __future__ import annotations

import argparse
import sys

from infra.scripts import target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list what is in the DLQ without moving it")
    parser.add_argument("--limit", type=int, default=None, help="move at most N messages")
    target.add_arguments(parser)
    args = parser.parse_args(argv)
    names = target.configure(args)

    from scrm.entry.recovery import describe_dead_letters, replay_dead_letters

    for dlq_url, queue_url in names["redrives"]:
        dlq, queue = dlq_url.rsplit("/", 1)[-1], queue_url.rsplit("/", 1)[-1]
        if args.dry_run:
            letters = describe_dead_letters(dlq_url)
            print(f"{dlq}: {len(letters)} message(s) seen")
            for letter in letters:
                print(f"  {letter}")
            continue
        moved = replay_dead_letters(dlq_url, queue_url, limit=args.limit)
        print(f"{dlq}: moved {moved} message(s) back to {queue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
