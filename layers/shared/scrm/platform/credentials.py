"""A corp's WeCom credentials: two Secrets Manager secrets per corp, read with caching.

* `<prefix><corp_id>/callback`: the callback token and EncodingAESKey (and the receive id),
  all the internet-facing callback needs to verify and decrypt; its IAM reads only these.
* `<prefix><corp_id>/app`: the app secret (and agent id), which every function calling
  WeCom's API reads; the callback can never read it, so a flaw in the code that parses what
  the internet sends cannot leak the key to the corp's customer data.

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
CALLBACK, APP = "callback", "app"  # the two secrets' name suffixes
_unknown: dict[str, float] = {}  # secret name -> until when it is known not to exist


class UnknownCorp(LookupError):
    pass


@dataclass(frozen=True)
class CallbackCredentials:
    """What verifying and decrypting a corp's callbacks takes (the `/callback` secret)."""

    corp_id: str
    token: str
    encoding_aes_key: str
    receive_id: str = ""  # who WeCom encrypts for: the corp id, or a suite id for third-party apps

    @property
    def expected_receive_id(self) -> str:
        return self.receive_id or self.corp_id

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"CallbackCredentials(corp_id={self.corp_id!r})"


@dataclass(frozen=True)
class AppCredentials:
    """What calling WeCom's API as the corp's app takes (the `/app` secret)."""

    corp_id: str
    secret: str
    agent_id: str

    def __repr__(self) -> str:
        return f"AppCredentials(corp_id={self.corp_id!r}, agent_id={self.agent_id!r})"


@dataclass(frozen=True)
class CorpCredentials:
    """Everything a corp registers with (corp.json): split into the two secrets on the way in."""

    corp_id: str
    token: str
    encoding_aes_key: str
    secret: str
    agent_id: str
    receive_id: str = ""

    @property
    def expected_receive_id(self) -> str:
        return self.receive_id or self.corp_id

    @property
    def callback(self) -> CallbackCredentials:
        return CallbackCredentials(self.corp_id, self.token, self.encoding_aes_key, self.receive_id)

    @property
    def app(self) -> AppCredentials:
        return AppCredentials(self.corp_id, self.secret, self.agent_id)

    def __repr__(self) -> str:
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


def secret_name(corp_id: str, part: str) -> str:
    """`<prefix><corp_id>/callback` or `<prefix><corp_id>/app`."""
    if part not in (CALLBACK, APP):
        raise ValueError(f"no such secret part {part!r}")
    return f"{settings().secret_prefix}{corp_id}/{part}"


def legacy_secret_name(corp_id: str) -> str:
    """The one secret per corp that deployments before the split hold (migration only)."""
    return f"{settings().secret_prefix}{corp_id}"


def secret_values(creds: CorpCredentials) -> dict[str, str]:
    """The two secrets' names and JSON values for a corp's registration."""
    return {secret_name(creds.corp_id, CALLBACK): json.dumps(asdict(creds.callback)),
            secret_name(creds.corp_id, APP): json.dumps(asdict(creds.app))}


def _is_not_found(err: BaseException) -> bool:
    cause = err.__cause__ or err.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause else None
    return code == "ResourceNotFoundException"


def _load(corp_id: str, part: str) -> dict:
    """Any failure but a missing secret (Secrets Manager down, no permission) propagates:
    that is our infrastructure failing, and the callback must answer 5xx so that WeCom retries."""
    if not CORP_ID.match(corp_id or ""):
        raise UnknownCorp(corp_id)
    name = secret_name(corp_id, part)
    now = time.monotonic()
    if _unknown.get(name, 0) > now:
        raise UnknownCorp(corp_id)
    try:
        return parameters.get_secret(name, transform="json", max_age=SECRET_MAX_AGE)
    except parameters.exceptions.GetParameterError as err:
        if _is_not_found(err):
            _unknown[name] = now + UNKNOWN_CORP_TTL
            raise UnknownCorp(corp_id) from None
        raise


def load_callback(corp_id: str) -> CallbackCredentials:
    """A registered corp's callback token and key; UnknownCorp if there is none."""
    data = _load(corp_id, CALLBACK)
    missing = [k for k in ("token", "encoding_aes_key") if not data.get(k)]
    if missing:
        raise ValueError(f"callback credentials of {corp_id} miss {', '.join(missing)}")
    return CallbackCredentials(corp_id, str(data["token"]), str(data["encoding_aes_key"]),
                               str(data.get("receive_id") or ""))


def load_app(corp_id: str) -> AppCredentials:
    """A registered corp's app secret; UnknownCorp if there is none."""
    data = _load(corp_id, APP)
    missing = [k for k in ("secret", "agent_id") if not data.get(k)]
    if missing:
        raise ValueError(f"app credentials of {corp_id} miss {', '.join(missing)}")
    return AppCredentials(corp_id, str(data["secret"]), str(data["agent_id"]))


def forget_cache() -> None:
    """For tests and the local stack after registering a corp."""
    _unknown.clear()
    parameters.clear_caches()
