"""A local API Gateway HTTP API: the template's HttpApi routes, payload format 2.0.

Requests become the event API Gateway would send (lower-cased headers, cookies split out,
query parameters percent-decoded once with repeated keys joined by ",", path parameters,
a base64 body when it is not UTF-8) and the function's result is mapped back to HTTP by
the HTTP API rules. The same routes are served under /<StageName>/ as the deployed URL
has them. /_local/ holds the stack's control routes (health, schedules, queue depths).

A route with a JWT authorizer is served only with a token that API Gateway would accept:
taken from the identity source header (with or without "Bearer "), signed by a key of the
issuer (matched by `kid`, RS256), with the configured `iss`, an `aud` or `client_id` among the
audiences, and not expired (nor used before `nbf`). Otherwise the answer is API Gateway's
401 {"message": "Unauthorized"} and the function is not called. The function receives the
claims in requestContext.authorizer.jwt, as strings, the way API Gateway passes them.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import unquote

import jwt

from infra.local.functions import FunctionError
from infra.local.moto_server import LocalServer
from infra.local.template import ACCOUNT_ID, NoSuchFunction, Route

log = logging.getLogger("infra.local.gateway")

NOT_FOUND = (404, {"message": "Not Found"})
INTERNAL_ERROR = (500, {"message": "Internal Server Error"})
UNAUTHORIZED = (401, {"message": "Unauthorized"})


class Controls(Protocol):
    """What the /_local/ routes need from the stack."""

    def health(self) -> dict: ...

    def fire_schedule(self, logical_id: str) -> Any: ...

    def queue_depths(self) -> dict: ...


@dataclass(frozen=True)
class JwtAuthorizer:
    """An HTTP API JWT authorizer: JwtConfiguration plus the issuer's public keys by kid."""

    name: str
    issuer: str
    audience: tuple[str, ...]
    keys: dict[str, Any]
    header: str = "authorization"  # from IdentitySource $request.header.<name>, lower case

    def claims(self, headers: dict[str, str]) -> dict | None:
        """The token's claims if API Gateway would let the request through, else None."""
        value = headers.get(self.header, "").strip()
        token = value[7:].strip() if value[:7].lower() == "bearer " else value
        if not token:
            return None
        try:
            key = self.keys.get(jwt.get_unverified_header(token).get("kid"))
            if key is None:
                return None
            claims = jwt.decode(token, key, algorithms=["RS256"], issuer=self.issuer,
                                options={"require": ["exp", "iss"], "verify_aud": False})
        except jwt.PyJWTError:
            return None
        audiences = claims.get("aud")
        audiences = set(audiences) if isinstance(audiences, list) else {audiences}
        if not (audiences | {claims.get("client_id")}) & set(self.audience):
            return None
        return claims


def claim_strings(claims: dict) -> dict[str, str]:
    """Claims as API Gateway passes them to the function: every value a string, arrays as "[a b]"."""
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return "[" + " ".join(text(v) for v in value) + "]"
        if isinstance(value, dict):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    return {name: text(value) for name, value in claims.items()}


@dataclass(frozen=True)
class Target:
    route: Route
    function: str  # logical id
    authorizer: JwtAuthorizer | None = None


# --- routing --------------------------------------------------------------------------
def match_path(template: str, path: str) -> dict[str, str] | None:
    """Path parameters if `path` fits `template` segment by segment ({name+} takes the rest)."""
    want = template.strip("/").split("/")
    have = path.strip("/").split("/")
    params: dict[str, str] = {}
    for i, segment in enumerate(want):
        if segment.startswith("{") and segment.endswith("+}"):
            rest = have[i:]
            if not rest or rest == [""]:
                return None
            params[segment[1:-2]] = unquote("/".join(rest))
            return params
        if i >= len(have):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            if not have[i]:
                return None
            params[segment[1:-1]] = unquote(have[i])
        elif unquote(have[i]) != segment:
            return None
    return params if len(have) == len(want) else None


def find_route(targets: list[Target], method: str, path: str) -> tuple[Target, dict] | None:
    """The most specific matching route: fewer path variables win, then an exact method over ANY.

    A path that matches with another method is still 404, as on an HTTP API."""
    best = None
    for target in targets:
        if target.route.method not in (method, "ANY"):
            continue
        params = match_path(target.route.path, path)
        if params is None:
            continue
        rank = (target.route.path.count("{"), target.route.method == "ANY")
        if best is None or rank < best[0]:
            best = (rank, target, params)
    return (best[1], best[2]) if best else None


def parse_query(raw: str) -> dict[str, str]:
    """Percent-decoded once; '+' stays '+' (decoding it as a space breaks base64 values)."""
    params: dict[str, str] = {}
    for pair in raw.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key, value = unquote(key), unquote(value)
        params[key] = f"{params[key]},{value}" if key in params else value
    return params


# --- events and responses -------------------------------------------------------------
def http_event(method: str, raw_path: str, raw_query: str, headers: list[tuple[str, str]],
               body: bytes, route_key: str, path_params: dict, stage: str, source_ip: str,
               claims: dict | None = None) -> dict:
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-proto", "http")
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": merged.get("host", "127.0.0.1"),
            "domainPrefix": merged.get("host", "127.0.0.1").split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": stage,
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claim_strings(claims), "scopes": None}}
    if cookies:
        event["cookies"] = cookies
    query = parse_query(raw_query)
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = path_params
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A function's result as HTTP, by the HTTP API payload 2.0 rules.

    A dict with statusCode is a full response; anything else is JSON with status 200 (a
    string is sent as is)."""
    if isinstance(result, dict) and "statusCode" in result:
        body = result.get("body") or ""
        if not isinstance(body, str):
            raise TypeError("the response body must be a string")
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        headers += [("set-cookie", c) for c in result.get("cookies") or []]
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return int(result["statusCode"]), headers, data
    text = result if isinstance(result, str) else json.dumps(result)
    return 200, [("content-type", "application/json")], text.encode("utf-8")


# --- the server -----------------------------------------------------------------------
class Gateway:
    def __init__(self, targets: list[Target], invoke: Callable[[str, dict], Any], controls: Controls,
                 stage: str | None, port: int):
        self.targets = targets
        self.invoke = invoke
        self.controls = controls
        self.stage = stage
        self._server = LocalServer(("127.0.0.1", port), _handler_class(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
               source_ip: str) -> tuple[int, list[tuple[str, str]], bytes]:
        raw_path, _, raw_query = target.partition("?")
        if raw_path.startswith("/_local/"):
            return _json(*self._control(method, raw_path))
        path, stage = raw_path, "$default"
        if self.stage and self.stage != "$default" and raw_path.startswith(f"/{self.stage}/"):
            path, stage = raw_path[len(self.stage) + 1:], self.stage
        found = find_route(self.targets, method, path)
        if found is None:
            return _json(*NOT_FOUND)
        target_route, params = found
        claims = None
        if target_route.authorizer is not None:
            claims = target_route.authorizer.claims({name.lower(): value for name, value in headers})
            if claims is None:
                status, headers_out, data = _json(*UNAUTHORIZED)
                return status, [*headers_out, ("www-authenticate", "Bearer")], data
        event = http_event(method, raw_path, raw_query, headers, body,
                           target_route.route.route_key, params, stage, source_ip, claims)
        try:
            return http_response(self.invoke(target_route.function, event))
        except FunctionError as err:  # its traceback is in the function's own log
            log.error("%s on %s %s", err, method, raw_path)
            return _json(*INTERNAL_ERROR)
        except Exception:  # noqa: BLE001 - API Gateway answers 500 whatever the function did
            log.exception("%s failed on %s %s", target_route.function, method, raw_path)
            return _json(*INTERNAL_ERROR)

    def _control(self, method: str, path: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")  # ["_local", ...]
        if method == "GET" and parts == ["_local", "health"]:
            return 200, self.controls.health()
        if method == "GET" and parts == ["_local", "queues"]:
            return 200, self.controls.queue_depths()
        if method == "POST" and len(parts) == 3 and parts[1] == "schedules":
            try:
                return 200, {"function": parts[2], "result": self.controls.fire_schedule(parts[2])}
            except NoSuchFunction as err:
                return 404, {"message": str(err)}
            except FunctionError as err:
                log.error("scheduled run failed: %s", err)
                return INTERNAL_ERROR
            except Exception:  # noqa: BLE001 - report the failure, keep serving
                log.exception("scheduled run of %s failed", parts[2])
                return INTERNAL_ERROR
        return NOT_FOUND


def _json(status: int, payload: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("content-type", "application/json")], json.dumps(payload, default=str).encode("utf-8")


def _handler_class(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one write, at once: written apart on a kept-open
        # connection, the body would wait out the client's delayed ACK (40 ms).
        wbufsize = -1
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, data = gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                                   self.client_address[0])
            try:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting, as WeCom does after 5 s
                log.warning("%s %s: the client left before the answer", self.command, self.path.partition("?")[0])
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.info("%s %s", self.address_string(), format % args)

    return Handler
