"""Who is calling: the corp named in the JWT that API Gateway's authorizer already verified.

API Gateway's JWT authorizer (template.yaml: OpsJwt) checks the token's signature, issuer,
audience and expiry before the function runs, and passes the token's claims in
`requestContext.authorizer.jwt.claims`. The caller's corp is the `scrm:corp` claim and
nothing else: no route takes a corp from its path, query or body, so a token of corp A
cannot even name corp B.

The claim must name a registered corp (its Corp row): a token minted for a corp that was
never registered, or for a typo, is refused before any route runs.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from scrm.entry.ops.errors import Forbidden, Unauthorized
from scrm.platform.credentials import CORP_ID
from scrm.store import keys
from scrm.store.models import Corp

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

CORP_CLAIM = "scrm:corp"
KNOWN_TTL = 60.0  # seconds a registered corp is remembered (a corp is never unregistered)
CONTEXT_KEY = "corp_id"
_known: dict[str, float] = {}


def claims_of(event: dict[str, Any]) -> dict[str, Any]:
    """The verified claims API Gateway passed; Unauthorized if there are none."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims")
    if not isinstance(claims, dict) or not claims:
        raise Unauthorized("a bearer token is required")
    return claims


def is_registered(corp_id: str) -> bool:
    now = time.monotonic()
    if _known.get(corp_id, 0) > now:
        return True
    try:
        Corp.get(*keys.corp(corp_id))
    except Corp.DoesNotExist:
        return False
    _known[corp_id] = now + KNOWN_TTL
    return True


def caller_corp(event: dict[str, Any]) -> str:
    corp_id = claims_of(event).get(CORP_CLAIM)
    if not isinstance(corp_id, str) or not corp_id:
        raise Forbidden(f"the token carries no {CORP_CLAIM} claim")
    if not CORP_ID.fullmatch(corp_id) or not is_registered(corp_id):
        raise Forbidden("the token's corp is not registered", error="unknown_corp")
    return corp_id


def forget_cache() -> None:
    """For tests and the local stack, whose tables start empty."""
    _known.clear()


def require_corp(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response:
    """Global middleware: no route (and no 404) runs before the caller's corp is established."""
    app.append_context(**{CONTEXT_KEY: caller_corp(app.current_event.raw_event)})
    return next_middleware(app)


def current_corp(router: BaseRouter) -> str:
    """The corp of the request being served (set by require_corp)."""
    return router.context[CONTEXT_KEY]
