"""One local stack (moto server, the functions' processes, WeCom simulator, gateway,
pollers) for every e2e test.

Ports are all 0, so it runs beside a `make up` stack; the corp is fresh each session. The
queues keep the template's visibility timeout, as in production: a first attempt that
fails is retried minutes later, not in a second, so a test that needs a retry to pass
fails, as a customer would miss that welcome. A test that needs fast dead-lettering
shortens one queue's timeout itself (`short_visibility`). The functions' logs go to a
temporary directory, one file per instance (`stack.functions[...].log_files()`).

The stack is stopped as soon as the last e2e test has run, not at the end of the session:
while it runs, AWS_ENDPOINT_URL points at its moto server, and other tests' in-process
moto mocks would quietly send their requests there.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from infra.local.stack import TEMPLATE_VISIBILITY, LocalStack, demo_corp

HERE = Path(__file__).parent
STACK = pytest.StashKey[LocalStack]()


def _is_e2e(item) -> bool:
    return item is not None and HERE in Path(item.path).parents


def pytest_collection_modifyitems(items):
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(request, tmp_path_factory):
    corp = demo_corp(f"wwe2e{secrets.token_hex(4)}")
    local = LocalStack(moto_port=0, http_port=0, sim_port=0, visibility=TEMPLATE_VISIBILITY, corps=[corp],
                       parameters={}, logs=tmp_path_factory.mktemp("function-logs"))
    request.config.stash[STACK] = local
    yield local.start()
    local.stop()


@pytest.fixture(autouse=True)
def _stack_running(request):
    """Restart the stack if other tests ran in between (start() is a no-op while it runs)."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").start()


def pytest_runtest_teardown(item, nextitem):
    if _is_e2e(item) and not _is_e2e(nextitem) and STACK in item.config.stash:
        item.config.stash[STACK].stop()
