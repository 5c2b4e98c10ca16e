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

    from scrm.recovery import describe_dead_letters, replay_dead_letters

    if args.dry_run:
        for letter in describe_dead_letters(names["events_dlq_url"]):
            print(letter)
        return 0
    moved = replay_dead_letters(names["events_dlq_url"], names["events_queue_url"], limit=args.limit)
    print(f"moved {moved} message(s) from the dead-letter queue back to the events queue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
