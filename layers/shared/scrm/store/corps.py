"""Registered corps: the Corp rows the scheduled jobs walk, and registering a corp
(its two secrets in Secrets Manager, see scrm.platform.credentials, and its row in the table)."""
from __future__ import annotations

import time

import boto3

from scrm.platform import credentials
from scrm.platform.credentials import CorpCredentials, secret_values
from scrm.store import keys
from scrm.store.models import Corp


def registered() -> list[str]:
    """Every registered corp's id, sorted (GSI1 CORPS): what the scheduled jobs walk."""
    return sorted(row.corp_id for row in Corp.gsi1.query(keys.CORPS_INDEX_PK))


def register(creds: CorpCredentials, name: str | None = None) -> bool:
    """Create or update a corp's two secrets (`/callback`: token and EncodingAESKey; `/app`:
    the app secret) and its Corp row; True if the corp is new.

    Used by `infra/scripts/register_corp.py` (locally and against AWS) and by the local
    stack at start. The secret values are never logged or printed.
    """
    client = boto3.client("secretsmanager")
    created = False
    for secret_id, value in secret_values(creds).items():
        try:
            client.create_secret(Name=secret_id, SecretString=value,
                                 Description=f"WeCom {secret_id.rsplit('/', 1)[-1]} credentials of corp {creds.corp_id}")
            created = True
        except client.exceptions.ResourceExistsException:
            client.put_secret_value(SecretId=secret_id, SecretString=value)
    pk, sk = keys.corp(creds.corp_id)
    Corp(pk, sk, corp_id=creds.corp_id, name=name, agent_id=creds.agent_id,
         registered_at=int(time.time()), GSI1PK=keys.CORPS_INDEX_PK, GSI1SK=creds.corp_id).save()
    credentials.forget_cache()
    return created
