"""Typed WeCom API errors: callers branch on the class (or `errcode`), never on `errmsg`.

| class                | errcodes                                        | done before raising     |
|----------------------|-------------------------------------------------|-------------------------|
| `ConfigurationError` | 40001 40013 41001 41002 41004 48002 60011 60020, HTTP 4xx | nothing: never retried |
| `RateLimited`        | 45009                                           | ApiBlock row written    |
| `OverBudget`         | (none: our own rate budget is spent)            | nothing sent            |
| `TransientError`     | -1 45033, HTTP 5xx/429, timeouts, connection errors | up to 3 retries     |
| `TokenError`         | 40014 42001                                     | one refresh, one retry  |
| `GoneError`          | 60111 40003 84061 40096                         | nothing                 |
| `WeComError`         | anything else                                   | nothing                 |

The welcome-message codes stay plain `WeComError` with their errcode because only the caller
knows what they mean for its event (FACTS §6): 41050 the code expired (final), 41051 the
welcome was already delivered (final, counts as sent), 41096 another app is sending (may retry
while the 20 s window lasts).
"""
from __future__ import annotations

CONFIGURATION_CODES = frozenset({
    40001,  # invalid secret: looping on it bans our IP for an hour (FACTS §5.1)
    40013,  # invalid corpid
    41001,  # access_token missing: a bug in how we build the request
    41002,  # corpid missing
    41004,  # corpsecret missing
    48002,  # API not permitted for this app (客户联系 可调用应用)
    60011,  # outside the app's visible range
    60020,  # caller IP not in 企业可信IP
})
CONCURRENCY_LIMITED = 45033
TRANSIENT_CODES = frozenset({-1, CONCURRENCY_LIMITED})
TOKEN_CODES = frozenset({40014, 42001})
GONE_CODES = frozenset({60111, 40003, 84061, 40096})
RATE_LIMITED = 45009
# Configuration errors that fail every call of the corp alike (60011 is about one member).
CORP_WIDE_CODES = CONFIGURATION_CODES - {60011}
WELCOME_EXPIRED, WELCOME_DELIVERED, WELCOME_BUSY = 41050, 41051, 41096


class WeComError(Exception):
    """A WeCom call that did not succeed. `errcode` is WeCom's; failures below the API
    (HTTP status, timeout, connection) use -1 and set `http_status` when there was one."""

    def __init__(self, errcode: int, errmsg: str = "", api: str = "", *, http_status: int | None = None):
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        self.http_status = http_status
        # Set by the client when it repeated this call after an attempt whose outcome it
        # could not know (read timeout, 5xx): that attempt may have taken effect, so a
        # "done already" answer (41051 for a welcome) may be our own earlier call arriving.
        self.earlier_attempt_unknown = False
        super().__init__(f"{api or 'wecom'}: errcode {errcode}: {errmsg}")


class ConfigurationError(WeComError):
    """Wrong secret, app permissions, visible range, trusted IP or endpoint: an operator must act."""


class RateLimited(WeComError):
    """45009, or an ApiBlock row still in force: do not call `api` before `blocked_until`."""

    def __init__(self, errcode: int, errmsg: str = "", api: str = "", *, blocked_until: float):
        super().__init__(errcode, errmsg, api)
        self.blocked_until = blocked_until


class OverBudget(RateLimited):
    """The corp's rate budget for `api` (scrm.wecom.apis.governor) is spent until
    `blocked_until` and the caller's deadline comes first: WeCom was not called."""


class TransientError(WeComError):
    """Still failing after the retries (or out of time). `outcome_unknown` is set when the last
    attempt may have taken effect (a read timeout or 5xx of a call we chose not to repeat)."""

    def __init__(self, errcode: int, errmsg: str = "", api: str = "", *,
                 http_status: int | None = None, outcome_unknown: bool = False):
        super().__init__(errcode, errmsg, api, http_status=http_status)
        self.outcome_unknown = outcome_unknown


class TokenError(WeComError):
    """The token was refused again right after a refresh."""


class GoneError(WeComError):
    """The member, customer or member-customer relationship no longer exists."""


def corp_wide(err: WeComError) -> bool:
    """Whether every call of the corp would fail the same way (a wrong secret, a missing
    permission, an untrusted IP, a wrong endpoint): callers stop rather than repeat it per item."""
    return isinstance(err, ConfigurationError) and (
        err.errcode in CORP_WIDE_CODES or err.errcode == -1 or err.api == "gettoken")


def error_for(errcode: int, errmsg: str, api: str) -> WeComError:
    """The exception for an errcode the client does not handle itself (not 45009)."""
    if errcode in CONFIGURATION_CODES:
        return ConfigurationError(errcode, errmsg, api)
    if errcode in GONE_CODES:
        return GoneError(errcode, errmsg, api)
    if errcode in TRANSIENT_CODES:
        return TransientError(errcode, errmsg, api)
    if errcode in TOKEN_CODES:
        return TokenError(errcode, errmsg, api)
    return WeComError(errcode, errmsg, api)
