"""`Idempotency-Key` on every POST: a client retry gets the first answer, never a second object.

Powertools' idempotency utility (DynamoDBPersistenceLayer) keeps one record per corp, route
and key in the one table: PK `keys.idempotency(corp_id)`, SK `IDEMPOTENCY#<md5 of route and
key>`, expiring through the table's TTL attribute (`expires_at`) after EXPIRES_AFTER.

* The first request with a key runs; a 2xx answer is stored (status, headers, body) and
  every retry with the same key and the same body gets it back, with `Idempotent-Replayed:
  true`. A refusal (4xx/5xx) is not stored: nothing was created, so the retry runs again.
* The same key with another body (compared as parsed JSON, so spacing and key order do not
  count) is refused: 422 idempotency_key_reused.
* The same key while the first request still runs: 409 idempotency_in_progress; a request
  that died keeps its key only until its Lambda's time is up (the in-progress expiry).

The middleware applies to every POST route, so a new creating POST is covered by being a
POST; its description lists the header (components/parameters/IdempotencyKey).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from scrm.entry.ops import inputs
from scrm.entry.ops.auth import CONTEXT_KEY as CORP_KEY
from scrm.entry.ops.errors import InProgress, KeyReused
from scrm.platform.config import settings
from scrm.store import keys
from scrm.store.models import TTL_ATTRIBUTE

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
EXPIRES_AFTER = 24 * 3600  # how long a key is remembered: a day of client retries
IN_PROGRESS_RETRY = 1  # seconds to wait before retrying while the first request runs
CONFIG = IdempotencyConfig(event_key_jmespath="[route, key]", payload_validation_jmespath="body",
                           raise_on_no_idempotency_key=True, expires_after_seconds=EXPIRES_AFTER)


class _NotKept(Exception):
    """Carries a refusal out of the idempotent call, so that Powertools forgets the key."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


def _run(next_middleware: NextMiddleware, app: APIGatewayHttpResolver, ran: list, *, request: dict) -> dict:
    ran.append(True)
    response = next_middleware(app)
    if not 200 <= response.status_code < 300:
        raise _NotKept(response)
    return {"status": response.status_code, "headers": dict(response.headers or {}), "body": response.body}


@lru_cache(maxsize=None)
def _client() -> Any:
    return boto3.client("dynamodb")


@lru_cache(maxsize=256)
def _guarded(corp_id: str):
    """`_run` made idempotent within the corp's partition (a persistence layer per corp: its PK is static)."""
    layer = DynamoDBPersistenceLayer(table_name=settings().table_name, key_attr="PK", sort_key_attr="SK",
                                     static_pk_value=keys.idempotency(corp_id), expiry_attr=TTL_ATTRIBUTE,
                                     boto3_client=_client())
    return idempotent_function(data_keyword_argument="request", persistence_store=layer, config=CONFIG,
                               key_prefix=keys.IDEMPOTENCY_PREFIX)(_run)


def forget_clients() -> None:
    """For tests and the local stack, whose endpoints and tables change between runs."""
    _client.cache_clear()
    _guarded.cache_clear()


def idempotent_posts(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response:
    """Global middleware, after the request was checked: a POST with the header runs at most once."""
    route = app.context.get("_route")
    key = inputs.header(app, HEADER) if route is not None and route.method == "POST" else None  # None: not checked
    if key is None:
        return next_middleware(app)
    request = {"route": f"POST {inputs.openapi_path(route.path)}", "key": key,
               "body": inputs.body(app)}
    ran: list[bool] = []  # empty after the call: the answer was replayed
    CONFIG.register_lambda_context(app.lambda_context)
    try:
        answer = _guarded(app.context[CORP_KEY])(next_middleware, app, ran, request=request)
    except _NotKept as refused:
        return refused.response
    except IdempotencyValidationError:
        raise KeyReused(f"this {HEADER} was first used with a different request body; a new request needs "
                        "a new key", field=HEADER) from None
    except IdempotencyAlreadyInProgressError:
        raise InProgress(f"a request with this {HEADER} is still running; retry in a moment", field=HEADER,
                         retry_after=IN_PROGRESS_RETRY) from None
    headers = dict(answer["headers"])
    if not ran:
        headers[REPLAYED] = "true"
    return Response(status_code=answer["status"], body=answer["body"], headers=headers)
