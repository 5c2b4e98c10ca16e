"""The ops API resolver: every area's Router under /ops, the caller's corp established first,
every exception answered by scrm.entry.ops.errors."""
from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from scrm.entry.ops import (
    auth,
    campaigns,
    contact_ways,
    coupons,
    customers,
    errors,
    jobs,
    org,
)

PREFIX = "/ops"

app = APIGatewayHttpResolver()
app.use(middlewares=[auth.require_corp])
for area in (org, contact_ways, campaigns, coupons, customers, jobs):
    app.include_router(area.router, prefix=PREFIX)
app.exception_handler(Exception)(errors.to_response)


def routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route, the path in OpenAPI / API Gateway form (/ops/ways/{id})."""
    return {(route.method, route.path.replace("<", "{").replace(">", "}"))
            for route in app._static_routes + app._dynamic_routes}  # noqa: SLF001 - Powertools lists no public view
