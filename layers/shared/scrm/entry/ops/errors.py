"""The one place where anything raised while serving an ops request becomes an HTTP answer.

Every error answer has the same JSON body, so a client handles them all one way:

    {"error": <short machine-readable reason>, "field": <request field at fault or null>,
     "message": <human-readable text>}

| raised                                    | status      | error                                   |
|-------------------------------------------|-------------|-----------------------------------------|
| Unauthorized / Forbidden (scrm.entry.ops.auth)  | 401 / 403   | unauthorized / forbidden, unknown_corp  |
| scrm.platform.errors.Invalid / NotFound / Conflict | 400/404/409 | invalid / not_found / conflict          |
| scrm.domain.coupons.CouponError           | its .status | its .reason                             |
| scrm.platform.credentials.UnknownCorp     | 403         | unknown_corp                            |
| WeCom RateLimited                         | 429         | wecom_rate_limited (+ Retry-After)      |
| WeCom TransientError                      | 503         | wecom_unavailable (+ Retry-After)       |
| WeCom ConfigurationError / TokenError     | 502         | wecom_configuration (a safe message)    |
| any other WeComError                      | 422         | wecom_refused (errcode in the message)  |
| a route that does not exist               | 404         | no_route                                |
| anything else                             | 500         | internal_error (nothing internal leaks) |

A domain error's message is its reason ("must be 1-64 characters"). A CouponError's reason
is already a code (unknown_code, expired, ...): it becomes `error`, and the field a reason is
about (the code, the template id) is named when the error names none.

WeCom's errmsg is logged, never returned: it can quote our server's IP or hint at the
credentials.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from scrm.domain.coupons import CouponError
from scrm.platform.credentials import UnknownCorp
from scrm.platform.errors import Conflict, Invalid, NotFound, ScrmError
from scrm.platform.observability import log
from scrm.wecom.apis.errors import (
    ConfigurationError,
    RateLimited,
    TokenError,
    TransientError,
    WeComError,
)

RETRY_TRANSIENT = 5  # seconds a client should wait before retrying after a WeCom outage
_SCRM_CODES: dict[type[ScrmError], str] = {Invalid: "invalid", NotFound: "not_found", Conflict: "conflict"}
# The request field each CouponError reason is about, when the error does not name one.
_COUPON_FIELDS = {"unknown_code": "code", "template_not_found": "template_id", "template_exists": "template_id"}


class ApiError(Exception):
    """An answer decided at the API's edge (authentication), not by a domain module."""

    status = 400
    error = "bad_request"

    def __init__(self, message: str, error: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.error = error or self.error
        self.field = field


class Unauthorized(ApiError):
    status = 401
    error = "unauthorized"


class Forbidden(ApiError):
    status = 403
    error = "forbidden"


@dataclass(frozen=True)
class Answer:
    status: int
    error: str
    message: str
    field: str | None = None
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field, "message": self.message}


def answer_for(exc: Exception) -> Answer:
    """The HTTP answer for an exception."""
    if isinstance(exc, ApiError):
        return Answer(exc.status, exc.error, exc.message, exc.field)
    if isinstance(exc, CouponError):  # before ScrmError, which it extends
        return Answer(exc.status, exc.reason, exc.message, exc.field or _COUPON_FIELDS.get(exc.reason))
    if isinstance(exc, ScrmError):
        code = next((c for cls, c in _SCRM_CODES.items() if isinstance(exc, cls)), "error")
        if exc.status >= 500:
            return Answer(500, "internal_error", "internal error")
        return Answer(exc.status, code, exc.reason, exc.field)
    if isinstance(exc, UnknownCorp):
        return Answer(403, "unknown_corp", "the caller's corp is not registered")
    if isinstance(exc, RateLimited):
        wait = max(1, math.ceil(exc.blocked_until - time.time()))
        return Answer(429, "wecom_rate_limited", f"WeCom rate-limits {exc.api or 'this API'}; retry later",
                      retry_after=wait)
    if isinstance(exc, TransientError):
        return Answer(503, "wecom_unavailable", "WeCom did not answer in time; retry later",
                      retry_after=RETRY_TRANSIENT)
    if isinstance(exc, (ConfigurationError, TokenError)):
        return Answer(502, "wecom_configuration",
                      f"WeCom refused this corp's configuration (errcode {exc.errcode}); an operator must check "
                      "the corp's secret, app permissions and trusted IPs")
    if isinstance(exc, WeComError):
        return Answer(422, "wecom_refused", f"WeCom refused the request (errcode {exc.errcode})")
    if isinstance(exc, NotFoundError):
        return Answer(404, "no_route", "no such route")
    return Answer(500, "internal_error", "internal error")


def to_response(exc: Exception) -> Response:
    """The resolver's only exception handler (registered for Exception)."""
    answer = answer_for(exc)
    if isinstance(exc, WeComError):
        log.warning("wecom call failed", api=exc.api, errcode=exc.errcode, errmsg=exc.errmsg, status=answer.status)
    elif answer.status >= 500:
        log.exception("ops request failed")
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
    return Response(status_code=answer.status, content_type=content_types.APPLICATION_JSON, body=answer.body(),
                    headers=headers)
