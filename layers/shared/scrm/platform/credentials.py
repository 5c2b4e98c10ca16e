"""A corp's WeCom credentials: one Secrets Manager secret per corp, read with caching.

The callback path looks a corp up on every request, so lookups are cached (Powertools
parameters, 5 minutes) and unknown corps are remembered briefly too: a stranger probing
random corp ids must not turn into one Secrets Manager call per request.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass

from aws_lambda_powertools.utilities import parameters

from scrm.platform.config import settings

CORP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SECRET_MAX_AGE = 300
UNKNOWN_CORP_TTL = 60
_unknown: dict[str, float] = {}


class UnknownCorp(LookupError):
    pass


@dataclass(frozen=True)
class CorpCredentials:
    corp_id: str
    token: str
    encoding_aes_key: str
    secret: str
    agent_id: str
    receive_id: str = ""  # who WeCom encrypts for: the corp id, or a suite id for third-party apps

    @property
    def expected_receive_id(self) -> str:
        return self.receive_id or self.corp_id

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"CorpCredentials(corp_id={self.corp_id!r}, agent_id={self.agent_id!r})"

    @classmethod
    def from_json(cls, data: dict) -> "CorpCredentials":
        missing = [k for k in ("corp_id", "token", "encoding_aes_key", "secret", "agent_id") if not data.get(k)]
        if missing:
            raise ValueError(f"corp credentials miss {', '.join(missing)}")
        return cls(
            corp_id=str(data["corp_id"]),
            token=str(data["token"]),
            encoding_aes_key=str(data["encoding_aes_key"]),
            secret=str(data["secret"]),
            agent_id=str(data["agent_id"]),
            receive_id=str(data.get("receive_id") or ""),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def secret_name(corp_id: str) -> str:
    return f"{settings().secret_prefix}{corp_id}"


def _is_not_found(err: BaseException) -> bool:
    cause = err.__cause__ or err.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause else None
    return code == "ResourceNotFoundException"


def load(corp_id: str) -> CorpCredentials:
    """Credentials of a registered corp; UnknownCorp if there is none.

    Any other failure (Secrets Manager down, no permission) propagates: that is our
    infrastructure failing, and the callback must answer 5xx so that WeCom retries.
    """
    if not CORP_ID.match(corp_id or ""):
        raise UnknownCorp(corp_id)
    now = time.monotonic()
    if _unknown.get(corp_id, 0) > now:
        raise UnknownCorp(corp_id)
    try:
        data = parameters.get_secret(secret_name(corp_id), transform="json", max_age=SECRET_MAX_AGE)
    except parameters.exceptions.GetParameterError as err:
        if _is_not_found(err):
            _unknown[corp_id] = now + UNKNOWN_CORP_TTL
            raise UnknownCorp(corp_id) from None
        raise
    return CorpCredentials.from_json(data)


def forget_cache() -> None:
    """For tests and the local stack after registering a corp."""
    _unknown.clear()
    parameters.clear_caches()
