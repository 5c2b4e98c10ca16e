"""The ops function as the fuzzer meets it: an HTTP server on loopback whose requests become the
API Gateway events the deployed API would send (payload 2.0), in front of moto (in-process),
the WeCom simulator and a corp with an org.

API Gateway's JWT authorizer is stood in for by one bearer token, TOKEN, which passes as the
corp's; anything else gets the authorizer's 401 (the real check is tested in the e2e tests).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from moto import mock_aws
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from infra.local import template as tpl
from infra.local.gateway import (
    UNAUTHORIZED,
    Target,
    find_route,
    http_event,
    http_response,
)
from tests.integration.conftest import create_queues, create_scrm_table
from tests.support.functions import LambdaContext, load_function

CORP = "wwfuzzcorp0001"
TOKEN = "fuzz-token"
OPS_ROUTES = tpl.load().functions["OpsApiFunction"].routes
TARGETS = [Target(route, "OpsApiFunction") for route in OPS_ROUTES]
ORG = [(2, "华东分公司", 1), (3, "上海大区", 2), (10, "徐汇店", 3), (11, "静安店", 3)]
STAFF = {"zhangsan": [10], "lisi": [10], "wangwu": [11]}


def wsgi_app(handler: Callable[[dict, Any], Any], claims: Callable[[], dict]):
    """API Gateway (routes of template.yaml, payload 2.0) in front of `handler`."""

    @Request.application
    def app(request: Request) -> Response:
        found = find_route(TARGETS, request.method, request.path)
        if found is None:
            return Response(json.dumps({"message": "Not Found"}), 404, content_type="application/json")
        if request.headers.get("Authorization", "") != f"Bearer {TOKEN}":
            status, body = UNAUTHORIZED
            return Response(json.dumps(body), status, content_type="application/json")
        target, params = found
        raw_path = request.environ["RAW_URI"].partition("?")[0]  # as sent: API Gateway's rawPath is not decoded
        event = http_event(request.method, raw_path, request.query_string.decode("latin-1"),
                           list(request.headers.items()), request.get_data(), target.route.route_key, params,
                           "$default", "203.0.113.9", claims())
        status, headers, data = http_response(handler(event, LambdaContext()))
        return Response(data, status, headers=headers)

    return app


def _claims() -> dict:
    now = int(time.time())
    return {"iss": "https://example.invalid", "aud": "scrm-ops", "sub": "fuzz", "iat": now, "exp": now + 3600,
            "scrm:corp": CORP}


@contextmanager
def serving() -> Iterator[str]:
    """The ops API on a free loopback port, with its own table, queues, simulator and corp; its URL."""
    from infra.local.wecom_sim import WeComSimulator

    saved = {name: os.environ.get(name) for name in ("EVENTS_QUEUE_URL", "JOBS_QUEUE_URL", "WECOM_API_BASE")}
    with mock_aws():
        create_scrm_table()
        queues = create_queues()
        os.environ["EVENTS_QUEUE_URL"] = queues["EventsQueue"]
        os.environ["JOBS_QUEUE_URL"] = queues["JobsQueue"]  # the bulk route starts a job
        sim = WeComSimulator()
        sim.start("127.0.0.1", 0)
        os.environ["WECOM_API_BASE"] = f"{sim.base_url}/cgi-bin"
        from scrm.domain.org import tree as org
        from scrm.platform.config import settings
        from scrm.platform.credentials import CorpCredentials
        from scrm.store import corps
        from scrm.wecom.apis.client import for_corp

        settings.cache_clear()
        corps.register(CorpCredentials(corp_id=CORP, token="tok", encoding_aes_key="k" * 43, secret="fuzz-secret",
                                       agent_id="1000002"))
        sim.add_corp(CORP, "fuzz-secret", "tok", "k" * 43, 1000002)
        for dept_id, name, parent in ORG:
            sim.add_department(CORP, dept_id, name, parent)
        for userid, departments in STAFF.items():
            sim.add_staff(CORP, userid, department=departments)
        org.full_sync(for_corp(CORP), CORP)
        server = make_server("127.0.0.1", 0, wsgi_app(load_function("ops_api").handler, _claims), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            sim.stop()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            settings.cache_clear()
