"""The ops API resolver: every area's Router under /ops, behind three global middlewares and
one serializer, so that every route, present and future, gets them without a line of its own:

1. auth.require_corp: the caller's corp, from the verified token, before anything else;
2. inputs.checked_request: the request checked against its operation in docs/openapi.yaml;
3. idempotency.idempotent_posts: a POST with an Idempotency-Key runs at most once;

then the route, whose answer present.dumps writes (Chinese as Chinese, ISO times beside epoch
fields, names beside ids). Every exception is answered by scrm.entry.ops.errors.
"""
from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from scrm.entry.ops import (
    auth,
    campaigns,
    contact_ways,
    coupons,
    customers,
    errors,
    idempotency,
    inputs,
    jobs,
    org,
    present,
    stats,
    welcome_defaults,
)

PREFIX = "/ops"

app = APIGatewayHttpResolver(serializer=lambda data: present.dumps(data, app.context.get(auth.CONTEXT_KEY)))
app.use(middlewares=[auth.require_corp, inputs.checked_request, idempotency.idempotent_posts])
for area in (org, contact_ways, campaigns, coupons, customers, welcome_defaults, stats, jobs):
    app.include_router(area.router, prefix=PREFIX)
app.exception_handler(Exception)(errors.to_response)

# The resolver keeps the request being served in shared state (Powertools' BaseRouter.current_event
# and the resolver's context, cleared when a request ends): two requests served at once in one
# process would read each other's event and lose each other's corp. Lambda never does that, but a
# host running handlers on threads (the local gateway) does: requests take turns here.
_serving = threading.Lock()


def handle(event: dict, context: Any) -> dict:
    with _serving:
        return app.resolve(event, context)


def routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route, the path in OpenAPI / API Gateway form (/ops/ways/{id})."""
    return {(route.method, inputs.openapi_path(route.path))
            for route in app._static_routes + app._dynamic_routes}  # noqa: SLF001 - Powertools lists no public view
