"""The ops API's description (docs/openapi.yaml) is its validation: every request is checked
against the operation it is routed to, before the route runs.

The document ships in the package (openapi.yaml here links to docs/openapi.yaml; the layer
build copies the file), is read once per process and compiled one operation at a time, on
its first request. Schemas are OpenAPI 3.0; they become JSON Schema (draft 7) the way
Schemathesis converts them, so the fuzzer and this module read the same rules:
`nullable: true` means "or null". Two rules are stricter than plain JSON Schema and are said
in the document's introduction: a JSON integer is written without a fraction or exponent
(1.0 is not 1), patterns are ECMA 262 regexes as JSON Schema says (`$` ends the string, `\s`
is ECMA's white space), and query and path values are strings unless the parameter says
integer.

A route that has no operation in the document is not served (a 500 that names the route in
the log): a route cannot exist without its description.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend

from scrm.platform.errors import Malformed

DOCUMENT = Path(__file__).with_name("openapi.yaml")
QUERY_INTEGER = re.compile(r"-?[0-9]{1,18}")
FIELD_NAME_MAX = 64  # an unknown field's name is echoed back, cut to this length
_TYPES = Draft7Validator.TYPE_CHECKER.redefine(
    # Python's json reads 1.0 as a float: only an int (never a bool) is a JSON integer here.
    "integer", lambda _checker, value: type(value) is int)  # noqa: E721


# JSON Schema patterns are ECMA 262 regexes; Python's differ in two places that matter here:
# `$` also matches before a final newline ("zhangsan\n" would pass ^...$), and `\s` also
# matches \x1c-\x1f and \x85 (ECMA does not) but not \ufeff (ECMA does). Patterns are read
# the ECMA way: a final `$` as `\Z`, `\s` and `\S` as ECMA's classes.
_ECMA_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


@lru_cache(maxsize=None)
def _regex(pattern: str) -> re.Pattern:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    pattern = re.sub(r"(?<!\\)\\([sS])", lambda m: f"[{'^' if m.group(1) == 'S' else ''}{_ECMA_SPACE}]", pattern)
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Any:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = extend(Draft7Validator, validators={"pattern": _pattern}, type_checker=_TYPES)
_ARTICLE = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
            "array": "an array", "object": "an object", "null": "null"}


class UndescribedRoute(Exception):
    """A route is served that docs/openapi.yaml does not describe: a bug, answered 500."""


@lru_cache(maxsize=1)
def document() -> dict:
    return yaml.load(DOCUMENT.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes anyOf [..., null]."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and not ("enum" in out and None not in out["enum"]):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@lru_cache(maxsize=1)
def _components() -> dict:
    return json_schema(document().get("components", {}))


def _validator(schema: dict) -> _Validator:
    # `#/components/...` references resolve against the document's components, carried along.
    return _Validator({**json_schema(schema), "components": _components()})


def _resolved(node: dict) -> dict:
    """A parameter (or a schema) with a local $ref followed."""
    while "$ref" in node:
        target: Any = document()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path | query | header
    required: bool
    integer: bool
    validator: _Validator


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[Parameter, ...]
    body: _Validator | None
    body_required: bool

    def of(self, location: str) -> dict[str, Parameter]:
        return {p.name.lower() if location == "header" else p.name: p
                for p in self.parameters if p.location == location}


@lru_cache(maxsize=None)
def operation(method: str, path: str) -> Operation:
    """The operation at `path` (OpenAPI form, /ops/ways/{id}); UndescribedRoute if none."""
    item = document().get("paths", {}).get(path) or {}
    op = item.get(method.lower())
    if op is None:
        raise UndescribedRoute(f"{method} {path} is not described in docs/openapi.yaml")
    params = []
    for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
        param = _resolved(raw)
        schema = _resolved(param.get("schema", {}))
        params.append(Parameter(param["name"], param["in"], bool(param.get("required")),
                                schema.get("type") == "integer", _validator(param.get("schema", {}))))
    body = op.get("requestBody")
    content = (body or {}).get("content", {}).get("application/json")
    return Operation(method.upper(), path, tuple(params), _validator(content["schema"]) if content else None,
                     bool(body and body.get("required")))


# --- turning a schema failure into a 400 that names the field ---------------------------------
def _field(prefix: str, path: Any) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in path]
    return ".".join(parts) or "body"


def _problem(error: ValidationError) -> tuple[str, list]:
    """(message, extra path) for the most specific failure."""
    kind, value = error.validator, error.validator_value
    instance = error.instance
    if kind == "required":
        missing = next(name for name in value if name not in instance)
        return "is required", [missing]
    if kind == "additionalProperties":
        unknown = sorted(set(instance) - set(error.schema.get("properties", {})))
        return "is not a known field", [unknown[0][:FIELD_NAME_MAX] if unknown else "?"]
    if kind == "type":
        wanted = value if isinstance(value, list) else [value]
        return f"must be {' or '.join(_ARTICLE.get(t, t) for t in wanted)}", []
    if kind == "anyOf" and {"type": "null"} in value:  # a nullable value: the non-null form failed
        inner = [e for e in error.context if e.schema != {"type": "null"}]
        if inner:
            deepest = max(inner, key=lambda e: len(e.relative_path))
            message, extra = _problem(deepest)
            return message, [*deepest.relative_path, *extra]
    messages = {
        "maxLength": lambda v: f"must be at most {v} characters",
        "minLength": lambda v: "must not be empty",
        "pattern": lambda v: "must not be blank" if v == r"\S" else f"must match {v}",
        "enum": lambda v: f"must be one of {', '.join(str(x) for x in v)}",
        "minimum": lambda v: f"must be at least {v}",
        "maximum": lambda v: f"must be at most {v}",
        "maxItems": lambda v: f"must have at most {v} items",
        "minItems": lambda v: f"must have at least {v} item{'s' if v != 1 else ''}",
        "uniqueItems": lambda v: "must not list an item twice",
        "minProperties": lambda v: "must not be empty" if error.absolute_path else "names nothing to change",
        "maxProperties": lambda v: f"must have at most {v} fields",
        "not": lambda v: f"must not combine {' and '.join(v.get('required', []))}" if isinstance(v, dict)
        else "combines fields that exclude each other",
        "oneOf": lambda v: "must match exactly one of the forms described",
        "anyOf": lambda v: "must match one of the forms described",
        "const": lambda v: f"must be {v}",
    }
    message = messages.get(kind)
    return (message(value) if message else f"is not valid ({kind})"), []


def check(validator: _Validator, value: Any, prefix: str) -> None:
    """Malformed (400) naming the field (prefix + JSON path) if `value` does not match."""
    errors = sorted(validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        error = errors[0]
        message, extra = _problem(error)
        raise Malformed(message, _field(prefix, [*error.absolute_path, *extra]))
