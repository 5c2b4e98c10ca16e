"""Request input at the edge: the JSON body read strictly, then the whole request (path,
query, described headers, body) checked against its operation in docs/openapi.yaml
(scrm.entry.ops.contract) by the `checked_request` middleware, before any route runs.

A route reads what was checked: `body(router)`, `query(router)`, `header(router, name)`.
It never parses the event itself, so a route cannot accept what its description refuses.

Strict JSON, beyond what a schema can say: a key given twice in one object is refused
(naming it: with "amount": 100, "amount": 999999 a parser keeps the last, silently), NaN
and Infinity are not JSON, nesting deeper than MAX_DEPTH is refused before it can exhaust
the parser's stack, the body must be UTF-8 and at most MAX_BODY_BYTES. Every failure is a
Malformed naming the field (`body` for the body as a whole), answered 400.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from scrm.entry.ops import contract
from scrm.platform.errors import Malformed

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 16  # the deepest body the API describes is 3 levels (a welcome's link)
DEFAULT_LIMIT = 50
CONTEXT_KEY = "checked_request"
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True)
class Checked:
    body: Any
    query: dict[str, Any]
    headers: dict[str, str]  # described headers only, by lower-case name


# --- strict JSON ------------------------------------------------------------------------
class _Duplicate(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_constant(token: str) -> None:
    raise ValueError(f"{token} is not JSON")  # Python's json would accept NaN and Infinity


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _depth(text: str) -> int:
    """How deeply arrays and objects nest, strings left out (bounded before parsing)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub('""', text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(text: str, field: str = "body") -> Any:
    """`text` as JSON under the strict rules above; Malformed naming `field` (or the repeated key)."""
    if _depth(text) > MAX_DEPTH:
        raise Malformed(f"nests deeper than {MAX_DEPTH} levels", field)
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_object)
    except _Duplicate as dup:
        raise Malformed("appears twice in one JSON object; give each field once",
                      dup.key[:contract.FIELD_NAME_MAX]) from None
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise Malformed("is not valid JSON", field) from None


def _raw_body(event: dict) -> str | None:
    raw = event.get("body")
    if not raw:
        return None
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
    except (binascii.Error, ValueError):
        raise Malformed("is not valid base64", "body") from None
    if len(data) > MAX_BODY_BYTES:
        raise Malformed(f"must be at most {MAX_BODY_BYTES} bytes", "body")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("is not UTF-8", "body") from None


# --- the request against its operation ------------------------------------------------------
def _query(event: dict, op: contract.Operation) -> dict[str, Any]:
    params = event.get("queryStringParameters") or {}
    described = op.of("query")
    unknown = sorted(set(params) - set(described))
    if unknown:
        raise Malformed("is not a known query parameter", unknown[0][:contract.FIELD_NAME_MAX])
    given: dict[str, Any] = {}
    for name, param in described.items():
        if name not in params:
            if param.required:
                raise Malformed("is required", name)
            continue
        value: Any = params[name]  # API Gateway joins a repeated parameter with ','
        if param.integer and contract.QUERY_INTEGER.fullmatch(value):
            value = int(value)
        contract.check(param.validator, value, name)
        given[name] = value
    return given


def _path(event: dict, op: contract.Operation) -> None:
    values = event.get("pathParameters") or {}
    for name, param in op.of("path").items():
        contract.check(param.validator, values.get(name, ""), name)


def _headers(event: dict, op: contract.Operation) -> dict[str, str]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    given = {}
    for name, param in op.of("header").items():
        if name not in headers:
            if param.required:
                raise Malformed("is required", param.name)
            continue
        contract.check(param.validator, headers[name], param.name)
        given[name] = headers[name]
    return given


def _body(event: dict, op: contract.Operation) -> Any:
    text = _raw_body(event)
    if op.body is None:
        if text is not None:
            raise Malformed("this route takes no body", "body")
        return None
    if text is None:
        if op.body_required:
            raise Malformed("a JSON object is required", "body")
        return None
    value = parse_json(text)
    contract.check(op.body, value, "")
    return value


def check_request(event: dict, op: contract.Operation) -> Checked:
    """Every part of the request against `op`, in the order a caller reads the URL: path, query,
    headers, body. Malformed at the first part that does not match."""
    _path(event, op)
    query = _query(event, op)
    headers = _headers(event, op)
    return Checked(_body(event, op), query, headers)


def openapi_path(route_path: str) -> str:
    """A Powertools route path (/ops/ways/<id>) in OpenAPI form (/ops/ways/{id})."""
    return route_path.replace("<", "{").replace(">", "}")


def checked_request(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response:
    """Global middleware: the matched route's request checked against its description."""
    route = app.context.get("_route")
    # Powertools serves a path no route matches through a catch-all route of its own: its 404
    registered = route is not None and (route in app._static_routes or route in app._dynamic_routes)  # noqa: SLF001
    if registered:
        op = contract.operation(route.method, openapi_path(route.path))
        app.append_context(**{CONTEXT_KEY: check_request(app.current_event.raw_event, op)})
    return next_middleware(app)


# --- what routes read -------------------------------------------------------------------------
def _checked(router: BaseRouter) -> Checked:
    return router.context[CONTEXT_KEY]


def body(router: BaseRouter) -> dict[str, Any]:
    """The checked JSON body (a route with a required body always has one)."""
    return dict(_checked(router).body or {})


def query(router: BaseRouter) -> dict[str, Any]:
    return dict(_checked(router).query)


def header(router: BaseRouter, name: str) -> str | None:
    """A described header as checked (None when absent, or when no route matched)."""
    checked = router.context.get(CONTEXT_KEY)
    return checked.headers.get(name.lower()) if checked is not None else None


def page_args(params: dict[str, Any]) -> dict[str, Any]:
    """limit (default 50) and cursor of a listing, from checked query parameters."""
    return {"limit": params.get("limit", DEFAULT_LIMIT), "cursor": params.get("cursor")}


def listing(items: list, next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def path(value: str) -> str:
    """A path parameter as the route receives it (percent-encoded in the raw path), decoded once
    as API Gateway decodes pathParameters, which the description already checked."""
    return unquote(value)
