"""The local stack runs each function as Lambda would: in processes of its own.

Each instance is a process with the function's environment and no one else's, its own
Powertools logger and service name; a crashed instance is replaced; moto runs apart; and
drain() still waits for everything, invocations in flight included.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import pytest
import requests
from scrm.wecom.callback.crypto import WeComCrypto

from infra.local.functions import FunctionError
from infra.local.pollers import sqs_event

pytestmark = pytest.mark.e2e


def environment_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
    return {name.decode(): value.decode() for name, value in pairs}


def instance_pids(stack, function: str) -> list[int]:
    pids = stack.functions[function].pids()
    return pids["idle"] + pids["busy"]


def json_lines(stack, function: str) -> list[dict]:
    lines = []
    for path in stack.functions[function].log_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def post_probe(stack, corp) -> requests.Response:
    crypto = WeComCrypto(corp.token, corp.encoding_aes_key, corp.corp_id)
    xml = (f"<xml><ToUserName>{corp.corp_id}</ToUserName><FromUserName>sys</FromUserName>"
           f"<CreateTime>{int(time.time())}</CreateTime><MsgType>event</MsgType><Event>e2e_probe</Event>"
           f"<Probe>{uuid.uuid4().hex}</Probe></xml>")
    body, query = crypto.seal(xml)
    return requests.post(stack.callback_url(corp.corp_id), params=query, data=body.encode(), timeout=10)


def slow_worker_batch(stack, corp) -> dict:
    """An SQS batch whose one event makes the worker call WeCom (an edit: the profile is fetched)."""
    body = {"corp_id": corp.corp_id, "event_id": uuid.uuid4().hex[:40], "kind": "external_contact",
            "event_type": "change_external_contact", "change_type": "edit_external_contact",
            "create_time": int(time.time()),
            "fields": {"ToUserName": corp.corp_id, "FromUserName": "sys", "CreateTime": str(int(time.time())),
                       "MsgType": "event", "Event": "change_external_contact", "ChangeType": "edit_external_contact",
                       "UserID": "zhangsan", "ExternalUserID": "wmSlowProbe0001"}}
    message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "local-probe", "Body": json.dumps(body),
               "MD5OfBody": "", "Attributes": {"ApproximateReceiveCount": "1"}}
    return sqs_event([message], stack.queues["EventsQueue"].arn, stack.region)


@pytest.fixture(scope="module")
def corp(stack):
    return stack.corps[0]


@pytest.fixture
def slow_wecom(stack):
    """Every WeCom call takes 2 s (and then succeeds), until the test ends."""
    if stack.sim is None:
        pytest.skip("WECOM_API_BASE is set: no simulator")
    stack.sim.set_faults(1.0, ["timeout"], timeout_sleep=2)
    yield
    stack.sim.set_faults(0, [])


def test_every_function_and_moto_run_in_processes_of_their_own(stack):
    pids = {name: instance_pids(stack, name) for name in stack.template.functions}
    assert all(pids.values()), pids  # each has a warm instance
    everyone = [pid for group in pids.values() for pid in group] + [stack._moto.pid, os.getpid()]
    assert len(set(everyone)) == len(everyone)


def test_an_instance_has_its_functions_environment_and_no_one_elses(stack):
    assert "PYTEST_CURRENT_TEST" in os.environ  # set in this process when the stack started
    for name in stack.template.functions:
        for pid in instance_pids(stack, name):
            env = environment_of(pid)
            assert {k: env[k] for k in stack.environments[name]} == stack.environments[name], name
            assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
            assert env["AWS_ENDPOINT_URL"] == stack.endpoint
            assert "PYTEST_CURRENT_TEST" not in env and "PYTHONPATH" not in env
    sweeper = environment_of(instance_pids(stack, "SweeperFunction")[0])
    callback = environment_of(instance_pids(stack, "CallbackFunction")[0])
    assert sweeper["POWERTOOLS_SERVICE_NAME"] == "sweeper" and "PENDING_GRACE_SECONDS" in sweeper
    assert callback["POWERTOOLS_SERVICE_NAME"] == "callback" and "PENDING_GRACE_SECONDS" not in callback


def test_each_functions_log_lines_carry_its_own_name_and_service(stack, corp):
    assert post_probe(stack, corp).status_code == 200
    stack.drain(timeout=30)
    stack.fire_schedule("SweeperFunction")
    for function, service in (("CallbackFunction", "callback"), ("WorkerFunction", "worker"),
                              ("SweeperFunction", "sweeper")):
        lines = json_lines(stack, function)
        assert lines, function
        assert {line["service"] for line in lines} == {service}, function
        assert {line["function_name"] for line in lines if "function_name" in line} <= {function}
    assert any(line.get("message") == "callback accepted" for line in json_lines(stack, "CallbackFunction"))


def test_the_moto_server_counts_each_functions_requests_apart(stack, corp):
    before = stack.aws_requests("CallbackFunction")
    assert post_probe(stack, corp).status_code == 200
    after = stack.aws_requests("CallbackFunction")
    after.subtract(before)
    assert after["dynamodb:PutItem"] == 1 and after["sqs:SendMessage"] == 1
    stack.drain(timeout=30)


def test_a_killed_idle_instance_is_replaced_on_the_next_request(stack, corp):
    victims = instance_pids(stack, "CallbackFunction")
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert post_probe(stack, corp).status_code == 200
    replacements = instance_pids(stack, "CallbackFunction")
    assert replacements and not set(replacements) & set(victims)
    stack.drain(timeout=30)


def test_an_instance_that_dies_mid_invocation_fails_that_invocation_only(stack, corp, slow_wecom):
    outcome: list = []

    def work():
        try:
            outcome.append(stack.invoke("WorkerFunction", slow_worker_batch(stack, corp)))
        except FunctionError as err:
            outcome.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 20
    while not stack.functions["WorkerFunction"].pids()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    [busy] = stack.functions["WorkerFunction"].pids()["busy"]
    os.kill(busy, signal.SIGKILL)
    thread.join(timeout=30)
    [error] = outcome
    assert isinstance(error, FunctionError)
    assert (error.error_type, error.error_message) == ("Runtime.ExitError", "Runtime exited with error: signal: 9")
    stack.sim.set_faults(0, [])
    assert stack.invoke("WorkerFunction", slow_worker_batch(stack, corp)) == {"batchItemFailures": []}
    assert busy not in instance_pids(stack, "WorkerFunction")  # a new instance served it


def test_drain_waits_for_an_invocation_in_flight(stack, corp, slow_wecom):
    thread = threading.Thread(target=stack.invoke, args=("WorkerFunction", slow_worker_batch(stack, corp)))
    thread.start()
    deadline = time.monotonic() + 20
    while not stack.functions["WorkerFunction"].pids()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stack.drain(timeout=60)
    assert not thread.is_alive()
    thread.join()


def test_a_handlers_exception_is_reported_in_lambdas_shape_and_the_instance_lives_on(stack):
    pids = instance_pids(stack, "WorkerFunction")
    with pytest.raises(FunctionError) as raised:
        stack.invoke("WorkerFunction", {"not": "an SQS event"})
    assert raised.value.function == "WorkerFunction"
    assert raised.value.error_type and raised.value.stack_trace
    assert set(instance_pids(stack, "WorkerFunction")) == set(pids)
