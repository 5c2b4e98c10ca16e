"""The queue consumers are sized so that a slow WeCom fails records, never whole batches.

Read from files only: the template, and the worker's time budget from its source (ast), so
the numbers the code runs by and the numbers the template sizes by can never drift apart.
"""
from __future__ import annotations

import ast

import pytest

from infra.local import template as tpl

RAW = tpl.load_yaml(tpl.TEMPLATE_PATH)
RESOURCES = RAW["Resources"]
CONSUMERS = ["WorkerFunction", "WelcomeFunction"]


def constants(path: str) -> dict[str, float]:
    tree = ast.parse((tpl.REPO_ROOT / path).read_text(encoding="utf-8"))
    return {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, (int, float))
            for t in node.targets if isinstance(t, ast.Name)}


WORKER = constants("layers/shared/scrm/entry/worker.py")
# the record budget each consumer's handler passes to scrm.entry.worker.handle_batch
BUDGETS = {"WorkerFunction": WORKER["RECORD_BUDGET"],
           "WelcomeFunction": constants("layers/shared/scrm/entry/welcome.py")["RECORD_BUDGET"]}
RECOVERY = constants("layers/shared/scrm/entry/recovery.py")


def sqs_events(logical_id: str) -> list[dict]:
    events = RESOURCES[logical_id]["Properties"]["Events"].values()
    return [e["Properties"] for e in events if e["Type"] == "SQS"]


def queue_of(source: dict) -> dict:
    return RESOURCES[source["Queue"]["Fn::GetAtt"][0]]["Properties"]


def timeout(logical_id: str) -> int:
    return int(RESOURCES[logical_id]["Properties"].get("Timeout", RAW["Globals"]["Function"]["Timeout"]))


@pytest.mark.parametrize("logical_id", CONSUMERS)
def test_a_full_batch_of_the_slowest_records_fits_the_timeout(logical_id):
    for source in sqs_events(logical_id):
        needed = source["BatchSize"] * BUDGETS[logical_id] + WORKER["RESERVE"]
        assert needed <= timeout(logical_id), f"{logical_id}: {needed} s of work in a {timeout(logical_id)} s timeout"


@pytest.mark.parametrize("logical_id", CONSUMERS)
def test_the_visibility_timeout_is_six_times_the_function_timeout(logical_id):
    for source in sqs_events(logical_id):
        assert int(queue_of(source)["VisibilityTimeout"]) >= 6 * timeout(logical_id)


@pytest.mark.parametrize("logical_id", CONSUMERS)
def test_concurrency_is_capped_and_the_last_receive_is_known(logical_id):
    env = RESOURCES[logical_id]["Properties"]["Environment"]["Variables"]
    for source in sqs_events(logical_id):
        assert source["ScalingConfig"]["MaximumConcurrency"]
        assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert int(env["MAX_RECEIVE_COUNT"]) == int(queue_of(source)["RedrivePolicy"]["maxReceiveCount"])


def test_the_callback_has_concurrency_of_its_own():
    reserved = RESOURCES["CallbackFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved["Fn::If"][1] == {"Ref": "CallbackReservedConcurrency"}
    assert int(RAW["Parameters"]["CallbackReservedConcurrency"]["Default"]) >= 10


def test_the_sweeper_stops_before_its_timeout():
    assert RECOVERY["SWEEP_RESERVE"] < timeout("SweeperFunction")
