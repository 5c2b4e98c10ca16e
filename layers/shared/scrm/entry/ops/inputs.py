"""Request input, checked strictly at the edge: the JSON body, the query string, path parameters.

Each field is declared once (type, required, nullable, bounds) and every failure is an
Invalid naming the field, so a caller learns what to fix from the 400 itself. Strict means:
JSON types are not coerced (true is not 1, 1.0 is not 1, "5" is not 5), unknown body fields
and query parameters are refused rather than ignored (a typo must not silently drop a change),
and strings have a documented maximum length. Domain modules still check meaning (is this
userid active staff, is this a store of the corp); this module checks shape.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from scrm.platform.errors import Invalid
from scrm.store.paging import MAX_LIMIT

MAX_BODY_BYTES = 64 * 1024
DEFAULT_LIMIT = 50
CURSOR_MAX = 2048
EPOCH_MAX = 4102444800  # 2100-01-01: any later "epoch seconds" is a unit mistake (milliseconds)
FIELD_NAME_MAX = 64  # an unknown field's name is echoed back, cut to this length

# Identifier shapes (WeCom's own rules where WeCom defines the identifier).
USERID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # WeCom: letters, digits, _-.@, 1-64
STORE_ID = re.compile(r"[1-9][0-9]{0,9}")  # a department id
WECOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # config_id, tag id, external_userid
CAMPAIGN_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
TEMPLATE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
CHANNEL = re.compile(r"[A-Za-z0-9_-]{1,16}")
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CURSOR = re.compile(r"[A-Za-z0-9_=-]+")


@dataclass(frozen=True)
class Field:
    kind: str  # JSON type, as the OpenAPI document names it: string | integer | array | object
    required: bool = False
    nullable: bool = False  # null accepted (PATCH: null clears the value)
    max_length: int | None = None  # characters of a string; items of an array
    minimum: int | None = None
    maximum: int | None = None
    pattern: re.Pattern | None = None  # a string, or each item of an array of strings
    item_max: int | None = None  # characters of each item of an array of strings
    choices: tuple[str, ...] = ()


def string(max_length: int, *, required: bool = False, nullable: bool = False, pattern: re.Pattern | None = None,
           choices: tuple[str, ...] = ()) -> Field:
    return Field("string", required, nullable, max_length=max_length, pattern=pattern, choices=choices)


def integer(minimum: int, maximum: int, *, required: bool = False, nullable: bool = False) -> Field:
    return Field("integer", required, nullable, minimum=minimum, maximum=maximum)


def strings(max_items: int, item_max: int, *, pattern: re.Pattern | None = None, required: bool = False,
            nullable: bool = False) -> Field:
    return Field("array", required, nullable, max_length=max_items, pattern=pattern, item_max=item_max)


def json_object(*, required: bool = False, nullable: bool = False) -> Field:
    return Field("object", required, nullable)


def epoch(*, required: bool = False, nullable: bool = False) -> Field:
    return integer(0, EPOCH_MAX, required=required, nullable=nullable)


PAGE = {"limit": integer(1, MAX_LIMIT), "cursor": string(CURSOR_MAX, pattern=CURSOR)}


# --- checking one value ---------------------------------------------------------------
def _string(name: str, value: Any, spec: Field) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string", name)
    if not value.strip():
        raise Invalid("must not be empty", name)
    if spec.max_length is not None and len(value) > spec.max_length:
        raise Invalid(f"must be at most {spec.max_length} characters", name)
    if spec.choices and value not in spec.choices:
        raise Invalid(f"must be one of {', '.join(spec.choices)}", name)
    if spec.pattern is not None and not spec.pattern.fullmatch(value):
        raise Invalid(f"must match {spec.pattern.pattern}", name)
    return value


def _integer(name: str, value: Any, spec: Field) -> int:
    if type(value) is not int:  # noqa: E721 - bool is an int subclass and must not pass
        raise Invalid("must be an integer", name)
    if spec.minimum is not None and value < spec.minimum:
        raise Invalid(f"must be at least {spec.minimum}", name)
    if spec.maximum is not None and value > spec.maximum:
        raise Invalid(f"must be at most {spec.maximum}", name)
    return value


def _array(name: str, value: Any, spec: Field) -> list[str]:
    if not isinstance(value, list):
        raise Invalid("must be an array of strings", name)
    if spec.max_length is not None and len(value) > spec.max_length:
        raise Invalid(f"must have at most {spec.max_length} items", name)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or (spec.item_max and len(item) > spec.item_max) or (
                spec.pattern is not None and not spec.pattern.fullmatch(item)):
            pattern = f" matching {spec.pattern.pattern}" if spec.pattern is not None else ""
            raise Invalid(f"item {i} must be a string of 1-{spec.item_max} characters{pattern}", name)
    return value


def check(name: str, value: Any, spec: Field) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise Invalid("must not be null", name)
    if spec.kind == "string":
        return _string(name, value, spec)
    if spec.kind == "integer":
        return _integer(name, value, spec)
    if spec.kind == "array":
        return _array(name, value, spec)
    if not isinstance(value, dict):
        raise Invalid("must be an object", name)
    return value


# --- whole requests -------------------------------------------------------------------
def _refuse_constant(token: str) -> None:
    raise ValueError(f"{token} is not JSON")  # Python's json would accept NaN and Infinity


def _unknown(name: str) -> str:
    return name[:FIELD_NAME_MAX]


def body(event: dict, spec: dict[str, Field]) -> dict[str, Any]:
    """The fields of the JSON object in the body that the request gave (absent ones left out)."""
    raw = event.get("body")
    if not raw:
        raise Invalid("a JSON object is required", "body")
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
    except (binascii.Error, ValueError):
        raise Invalid("is not valid base64", "body") from None
    if len(data) > MAX_BODY_BYTES:
        raise Invalid(f"must be at most {MAX_BODY_BYTES} bytes", "body")
    try:
        parsed = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        raise Invalid("is not valid JSON", "body") from None
    if not isinstance(parsed, dict):
        raise Invalid("must be a JSON object", "body")
    unknown = sorted(set(parsed) - set(spec))
    if unknown:
        raise Invalid("is not a known field", _unknown(unknown[0]))
    given = {}
    for name, field in spec.items():
        if name in parsed:
            given[name] = check(name, parsed[name], field)
        elif field.required:
            raise Invalid("is required", name)
    return given


def changes(event: dict, spec: dict[str, Field]) -> dict[str, Any]:
    """A PATCH body: like `body`, and it must name at least one field to change."""
    fields = body(event, spec)
    if not fields:
        raise Invalid("names nothing to change", "body")
    return fields


def query(event: dict, spec: dict[str, Field]) -> dict[str, Any]:
    """Query parameters, each converted to its field's type (API Gateway joins repeats with ',')."""
    params = event.get("queryStringParameters") or {}
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise Invalid("is not a known query parameter", _unknown(unknown[0]))
    given: dict[str, Any] = {}
    for name, field in spec.items():
        if name not in params:
            if field.required:
                raise Invalid("is required", name)
            continue
        value: Any = params[name]
        if field.kind == "integer":
            if not re.fullmatch(r"[0-9]{1,10}", value):
                raise Invalid("must be an integer", name)
            value = int(value)
        given[name] = check(name, value, field)
    return given


def page_args(params: dict[str, Any]) -> dict[str, Any]:
    """limit (default 50) and cursor of a listing, from checked query parameters."""
    return {"limit": params.get("limit", DEFAULT_LIMIT), "cursor": params.get("cursor")}


def listing(items: list, next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def path(value: str, name: str, pattern: re.Pattern, max_length: int = 64) -> str:
    """A path parameter, percent-decoded once as API Gateway decodes pathParameters."""
    return _string(name, unquote(value), string(max_length, pattern=pattern))
