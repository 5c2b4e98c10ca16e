"""The org tree from the command line: a full sync now, and the placement rule per corp.

    python -m infra.scripts.org sync [--corp ww...] [--aws]      # all corps without --corp
    python -m infra.scripts.org rule --corp ww... --show [--aws]
    python -m infra.scripts.org rule --corp ww... --file rule.json [--aws]

rule.json is a depth rule, {"mode": "depth", "branch": 2, "region": 3, "store": 4}, or an
explicit one, {"mode": "explicit", "branches": [...], "regions": {...}, "stores": {...}}
(see scrm/org.py). Setting a rule re-places the stored departments at once; staff follow
at the next sync, so run `sync` after changing it.
"""
from __future__ import annotations

import argparse
import json
import sys

from infra.scripts import target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="full sync of departments and staff from WeCom")
    sync.add_argument("--corp", help="only this corp (default: every registered corp)")
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
    from scrm.platform.errors import ScrmError
    from scrm.wecom.apis.client import for_corp

    try:
        if args.command == "sync":
            if args.corp:
                report = org.full_sync(for_corp(args.corp), args.corp)
            else:
                report = org.sync_all()
            print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
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
