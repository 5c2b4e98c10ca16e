"""Register (or update) a corp: its credentials go to two Secrets Manager secrets, a Corp row to the table.

    python -m infra.scripts.register_corp --file corp.json          # the local stack
    python -m infra.scripts.register_corp --file corp.json --aws    # the deployed stack
    python -m infra.scripts.register_corp --from-legacy ww... --aws # split a deployment's old secret

corp.json: {"corp_id", "token", "encoding_aes_key", "secret", "agent_id"} (WeCom admin
console → the app → 接收消息 for token and EncodingAESKey; the app's Secret). They are
stored apart: `<prefix><corp_id>/callback` (token, EncodingAESKey), which only the callback
reads, and `<prefix><corp_id>/app` (the app secret), which the callback cannot read.
--from-legacy reads the one secret `<prefix><corp_id>` that deployments before the split
hold and writes the two from it (the old secret is left alone). Without --file or
--from-legacy the values are asked for, secrets without echo. Nothing secret is printed.
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


def read_legacy_secret(corp_id: str) -> dict:
    import boto3
    from scrm.platform.credentials import legacy_secret_name

    client = boto3.client("secretsmanager")
    try:
        value = client.get_secret_value(SecretId=legacy_secret_name(corp_id))["SecretString"]
    except client.exceptions.ResourceNotFoundException:
        raise ValueError(f"no secret {legacy_secret_name(corp_id)} to split") from None
    return json.loads(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="JSON file with the corp's credentials")
    source.add_argument("--from-legacy", metavar="CORP_ID", help="split the corp's secret of before the split")
    parser.add_argument("--name", help="a display name for the corp")
    target.add_arguments(parser)
    args = parser.parse_args(argv)
    target.configure(args)

    from scrm.platform.credentials import APP, CALLBACK, CorpCredentials, secret_name
    from scrm.store.corps import register
    from scrm.wecom.callback.crypto import CryptoError, WeComCrypto

    try:
        data = read_legacy_secret(args.from_legacy) if args.from_legacy else read_credentials(args.file)
        creds = CorpCredentials.from_json(data)
        WeComCrypto(creds.token, creds.encoding_aes_key, creds.corp_id)  # fail now on a bad key, not per callback
    except (ValueError, CryptoError) as err:
        print(f"invalid credentials: {err}", file=sys.stderr)
        return 2
    created = register(creds, name=args.name)
    print(f"corp {creds.corp_id} {'registered' if created else 'updated'}: secrets "
          f"{secret_name(creds.corp_id, CALLBACK)} and {secret_name(creds.corp_id, APP)}; "
          f"callback path: /wecom/callback/{creds.corp_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
