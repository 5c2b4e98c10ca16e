"""The one place where anything raised while serving an ops request becomes an HTTP answer.

Every error answer has the same JSON body, so a client handles them all one way:

    {"error": <short machine-readable reason>, "field": <request field at fault or null>,
     "message": <human-readable text>}

| raised                                          | status      | error                                   |
|-------------------------------------------------|-------------|-----------------------------------------|
| Unauthorized / Forbidden (scrm.entry.ops.auth)  | 401 / 403   | unauthorized / forbidden, unknown_corp  |
| scrm.platform.errors.Malformed: not what docs/openapi.yaml allows | 400 | invalid                     |
| scrm.platform.errors.Invalid: well-formed, refused on meaning | 422 | invalid                          |
| scrm.platform.errors.NotFound / Conflict        | 404 / 409   | not_found / conflict                    |
| scrm.domain.coupons.CouponError                 | its .status | its .reason                             |
| idempotency: key in use / reused with another body | 409 / 422 | idempotency_in_progress / idempotency_key_reused |
| scrm.platform.credentials.UnknownCorp           | 403         | unknown_corp                            |
| WeCom RateLimited                               | 429         | wecom_rate_limited (+ Retry-After)      |
| WeCom TransientError                            | 503         | wecom_unavailable (+ Retry-After)       |
| WeCom answered an unexpected HTTP status (4xx)  | 502         | wecom_unexpected_answer                 |
| WeCom ConfigurationError / TokenError           | 502         | wecom_configuration                     |
| any other WeComError                            | 422         | wecom_refused                           |
| a route that does not exist                     | 404         | no_route                                |
| anything else                                   | 500         | internal_error (nothing internal leaks) |

A domain error's message is its reason ("must be 1-64 characters"). A CouponError's reason
is already a code (unknown_code, expired, ...): it becomes `error`, and the field a reason is
about (the code, the template id) is named when the error names none.

WeCom's answers are quoted as WeCom gave them (HTTP status, errcode, errmsg): the operator
who reads the message is the corp's own, and WeCom's errmsg carries what they need to act
(the egress IP it saw, its own lookup link). Requests' exceptions, which quote our URL and
so the token, never reach a message (scrm.wecom.apis.client masks them). A 5xx other than
WeCom's is always our infrastructure: its exception is logged with its traceback.
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
from scrm.platform.times import readable
from scrm.wecom.apis.client import NO_ANSWER
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

    def __init__(self, message: str, error: str | None = None, field: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.error = error or self.error
        self.field = field
        self.retry_after = retry_after


class Unauthorized(ApiError):
    status = 401
    error = "unauthorized"


class Forbidden(ApiError):
    status = 403
    error = "forbidden"


class InProgress(ApiError):
    status = 409
    error = "idempotency_in_progress"


class KeyReused(ApiError):
    status = 422
    error = "idempotency_key_reused"


@dataclass(frozen=True)
class Answer:
    status: int
    error: str
    message: str
    field: str | None = None
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field, "message": self.message}


def wecom_said(exc: WeComError) -> str:
    """What WeCom answered, quoted: the HTTP status when it was not 200, else errcode and errmsg."""
    if exc.http_status is not None:
        return f"HTTP {exc.http_status} ({exc.errmsg or 'no body'})"
    if exc.errmsg.startswith(NO_ANSWER):
        return exc.errmsg
    return f"errcode {exc.errcode} ({exc.errmsg or 'no errmsg'})"


def _wecom(exc: WeComError) -> Answer:
    api, said = exc.api or "the API", wecom_said(exc)
    if isinstance(exc, RateLimited):
        wait = max(1, math.ceil(exc.blocked_until - time.time()))
        return Answer(429, "wecom_rate_limited", f"WeCom rate-limits {api} for this corp until "
                      f"{readable(exc.blocked_until)}; retry after {wait} s", retry_after=wait)
    if isinstance(exc, TransientError):
        return Answer(503, "wecom_unavailable", f"WeCom did not complete {api}: {said}; retry later",
                      retry_after=RETRY_TRANSIENT)
    if isinstance(exc, ConfigurationError) and exc.http_status is not None:
        return Answer(502, "wecom_unexpected_answer", f"WeCom answered {api} with {said}; an operator must "
                      "check the WeCom API base URL (WECOM_API_BASE) and any proxy in front of WeCom")
    if isinstance(exc, (ConfigurationError, TokenError)):
        return Answer(502, "wecom_configuration", f"WeCom refused {api} with {said}; an operator must check "
                      "the corp's secret, app permissions and trusted IPs")
    return Answer(422, "wecom_refused", f"WeCom refused {api} with {said}")


def answer_for(exc: Exception) -> Answer:
    """The HTTP answer for an exception."""
    if isinstance(exc, ApiError):
        return Answer(exc.status, exc.error, exc.message, exc.field, exc.retry_after)
    if isinstance(exc, CouponError):  # before ScrmError, which it extends
        return Answer(exc.status, exc.reason, exc.message, exc.field or _COUPON_FIELDS.get(exc.reason))
    if isinstance(exc, ScrmError):
        code = next((c for cls, c in _SCRM_CODES.items() if isinstance(exc, cls)), "error")
        if exc.status >= 500:
            return Answer(500, "internal_error", "internal error")
        return Answer(exc.status, code, exc.reason, exc.field)
    if isinstance(exc, UnknownCorp):
        return Answer(403, "unknown_corp", "the caller's corp is not registered")
    if isinstance(exc, WeComError):
        return _wecom(exc)
    if isinstance(exc, NotFoundError):
        return Answer(404, "no_route", "no such route")
    return Answer(500, "internal_error", "internal error")


def to_response(exc: Exception) -> Response:
    """The resolver's only exception handler (registered for Exception)."""
    answer = answer_for(exc)
    if isinstance(exc, WeComError):
        log.warning("wecom call failed", api=exc.api, errcode=exc.errcode, errmsg=exc.errmsg,
                    http_status=exc.http_status, status=answer.status)
    elif answer.status >= 500:
        log.error("ops request failed", exc_info=exc)
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
    return Response(status_code=answer.status, content_type=content_types.APPLICATION_JSON, body=answer.body(),
                    headers=headers)
