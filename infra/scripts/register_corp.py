"""Register (or update) a corp: its credentials go to Secrets Manager, a Corp row to the table.

    python -m infra.scripts.register_corp --file corp.json          # the local stack
    python -m infra.scripts.register_corp --file corp.json --aws    # the deployed stack

corp.json: {"corp_id", "token", "encoding_aes_key", "secret", "agent_id"} (WeCom admin
console → the app → 接收消息 for token and EncodingAESKey; the app's Secret). Without
--file the values are asked for, secrets without echo. Nothing secret is printed.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from infra.scripts import target


def read_credentials(path: str | None) -> dict:
    if path:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    return {
        "corp_id": input("corp id: ").strip(),
        "agent_id": input("agent id: ").strip(),
        "token": getpass.getpass("callback token: ").strip(),
        "encoding_aes_key": getpass.getpass("EncodingAESKey: ").strip(),
        "secret": getpass.getpass("app secret: ").strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="JSON file with the corp's credentials")
    parser.add_argument("--name", help="a display name for the corp")
    target.add_arguments(parser)
    args = parser.parse_args(argv)
    target.configure(args)

    from scrm.platform.credentials import CorpCredentials
    from scrm.store.corps import register
    from scrm.wecom.callback.crypto import CryptoError, WeComCrypto

    try:
        creds = CorpCredentials.from_json(read_credentials(args.file))
        WeComCrypto(creds.token, creds.encoding_aes_key, creds.corp_id)  # fail now on a bad key, not per callback
    except (ValueError, CryptoError) as err:
        print(f"invalid credentials: {err}", file=sys.stderr)
        return 2
    created = register(creds, name=args.name)
    print(f"corp {creds.corp_id} {'registered' if created else 'updated'}; "
          f"callback path: /wecom/callback/{creds.corp_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
