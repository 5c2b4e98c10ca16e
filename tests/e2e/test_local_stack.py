"""The local stack end to end: real HTTP in, real SQS batches, moto's redrive, the schedule."""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import time
import uuid
from urllib.parse import urlsplit

import boto3
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from scrm.store import keys
from scrm.store.inbox import event_item
from scrm.wecom.callback.crypto import WeComCrypto
from scrm.wecom.callback.events import normalize
from scrm.wecom.callback.wxml import parse_xml

from infra.local.gateway import claim_strings, http_response, match_path, parse_query
from infra.local.pollers import failed_ids
from infra.local.stack import shared_environment

pytestmark = pytest.mark.e2e


# --- helpers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corp(stack):
    return stack.corps[0]


@pytest.fixture(scope="module")
def crypto(corp):
    return WeComCrypto(corp.token, corp.encoding_aes_key, corp.corp_id)


def probe_fields(corp_id: str) -> dict:
    """A callback of a kind no handler claims: the worker stores it as a fact and marks it processed."""
    return {"ToUserName": corp_id, "FromUserName": "sys", "CreateTime": str(int(time.time())), "MsgType": "event",
            "Event": "e2e_probe", "Probe": uuid.uuid4().hex}


def probe_xml(fields: dict) -> str:
    return "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + "</xml>"


def store_event(stack, fields: dict, received_at: float):
    """The row the callback function writes before it enqueues (status received)."""
    event = normalize(fields["ToUserName"], fields)
    boto3.client("dynamodb").put_item(TableName=stack.table_name, Item=event_item(event, received_at))
    return event


def event_status(stack, corp_id: str, event_id: str) -> str | None:
    pk, sk = keys.event(corp_id, event_id)
    item = boto3.client("dynamodb").get_item(TableName=stack.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}})
    return item.get("Item", {}).get("status", {}).get("S")


def dead_letters(stack) -> list[dict]:
    sqs = boto3.client("sqs")
    found = []
    while batch := sqs.receive_message(QueueUrl=stack.queue_urls["EventsDLQ"], MaxNumberOfMessages=10,
                                       VisibilityTimeout=30, AttributeNames=["All"]).get("Messages", []):
        found += batch
    return found


def verification_query(crypto: WeComCrypto, echo: str) -> dict:
    echostr = crypto.encrypt(echo)
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    return {"msg_signature": crypto.signature(timestamp, nonce, echostr), "timestamp": timestamp,
            "nonce": nonce, "echostr": echostr}


# --- HTTP -----------------------------------------------------------------------------
def test_signed_url_verification_answers_the_decrypted_echostr(stack, corp, crypto):
    echo = "e2e-" + secrets.token_urlsafe(24)
    response = requests.get(stack.callback_url(corp.corp_id), params=verification_query(crypto, echo), timeout=5)
    assert response.status_code == 200
    assert response.text == echo


def test_routes_are_served_under_the_stage_name_too(stack, corp, crypto):
    stage = stack.template.parameters["StageName"]
    url = f"{stack.gateway_url}/{stage}/wecom/callback/{corp.corp_id}"
    response = requests.get(url, params=verification_query(crypto, "staged"), timeout=5)
    assert (response.status_code, response.text) == (200, "staged")


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("GET", "/wecom/callback"), ("PUT", "/wecom/callback/x")])
def test_an_unknown_route_is_404_like_an_http_api(stack, method, path):
    response = requests.request(method, stack.gateway_url + path, timeout=5)
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_a_post_with_a_bad_signature_is_403(stack, corp, crypto):
    body, query = crypto.seal(probe_xml(probe_fields(corp.corp_id)))
    query["msg_signature"] = "0" * 40
    response = requests.post(stack.callback_url(corp.corp_id), params=query, data=body.encode(), timeout=5)
    assert response.status_code == 403


def test_a_signed_post_is_accepted_and_processed_by_the_worker(stack, corp, crypto):
    fields = probe_fields(corp.corp_id)
    body, query = crypto.seal(probe_xml(fields))
    response = requests.post(stack.callback_url(corp.corp_id), params=query, data=body.encode(),
                             headers={"Content-Type": "text/xml"}, timeout=5)
    assert (response.status_code, response.text) == (200, "")
    stack.drain(timeout=30)
    event_id = normalize(corp.corp_id, parse_xml(probe_xml(fields))).event_id
    assert event_status(stack, corp.corp_id, event_id) == "processed"


def test_the_simulator_delivers_callbacks_to_the_gateway(stack, corp):
    if stack.sim is None:
        pytest.skip("WECOM_API_BASE is set: no simulator")
    stack.sim.add_staff(corp.corp_id, "e2e_staff")
    result = stack.sim.add_customer(corp.corp_id, "e2e_staff")
    assert result["callback_status"] == [200]
    stack.drain(timeout=30)


def test_the_event_is_an_http_api_v2_event_and_a_bare_string_result_is_json(stack, monkeypatch):
    seen = []

    def echo(event, context):
        seen.append((event, context))
        return "plain"

    monkeypatch.setitem(stack.stand_ins, "CallbackFunction", echo)
    netloc = urlsplit(stack.gateway_url).netloc
    conn = http.client.HTTPConnection(netloc, timeout=5)
    body = b"\xff\xfe binary"
    conn.putrequest("POST", "/wecom/callback/ww%20x?a=1&a=2&b=x%2By+z&empty=")
    conn.putheader("X-Repeated", "one")
    conn.putheader("X-Repeated", "two")
    conn.putheader("Cookie", "c1=v1; c2=v2")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    assert (response.status, response.read(), response.getheader("content-type")) == (200, b"plain", "application/json")

    event, context = seen[0]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /wecom/callback/{corp_id}"
    assert event["rawPath"] == "/wecom/callback/ww%20x"
    assert event["rawQueryString"] == "a=1&a=2&b=x%2By+z&empty="
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x+y+z", "empty": ""}
    assert event["pathParameters"] == {"corp_id": "ww x"}
    assert event["headers"]["x-repeated"] == "one,two"
    assert "cookie" not in event["headers"] and event["cookies"] == ["c1=v1", "c2=v2"]
    assert (event["isBase64Encoded"], base64.b64decode(event["body"])) == (True, body)
    http_ctx = event["requestContext"]["http"]
    assert (http_ctx["method"], http_ctx["path"], http_ctx["sourceIp"]) == ("POST", "/wecom/callback/ww%20x", "127.0.0.1")
    assert event["requestContext"]["stage"] == "$default"
    assert uuid.UUID(event["requestContext"]["requestId"])
    assert event["requestContext"]["timeEpoch"] > 0
    assert context.function_name == "CallbackFunction"
    assert 0 < context.get_remaining_time_in_millis() <= 4000  # the template's Timeout


def test_a_function_that_raises_is_a_500_like_api_gateway(stack, monkeypatch):
    def boom(event, context):
        raise RuntimeError("boom")

    monkeypatch.setitem(stack.stand_ins, "CallbackFunction", boom)
    response = requests.get(stack.callback_url("ww1"), timeout=5)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


def test_control_routes(stack):
    health = requests.get(f"{stack.gateway_url}/_local/health", timeout=5).json()
    assert health["status"] == "ok"
    assert set(health["functions"]) == set(stack.template.functions)
    depths = requests.get(f"{stack.gateway_url}/_local/queues", timeout=5).json()
    assert set(depths) == set(stack.template.queues)  # every queue, dead-letter queues included
    assert {"EventsQueue", "EventsDLQ", "WelcomeQueue", "WelcomeDLQ"} <= set(depths)
    assert set(depths["EventsDLQ"]) == {"visible", "in_flight", "delayed"}
    fired = requests.post(f"{stack.gateway_url}/_local/schedules/SweeperFunction", timeout=10)
    assert fired.status_code == 200 and fired.json()["function"] == "SweeperFunction"
    assert requests.post(f"{stack.gateway_url}/_local/schedules/WorkerFunction", timeout=5).status_code == 404


# --- the JWT authorizer of the ops routes -----------------------------------------------
@pytest.fixture
def ops_calls(stack, monkeypatch) -> list:
    """The events the ops function receives (it answers 200 without running)."""
    seen: list = []

    def record(event, context):
        seen.append(event)
        return {"statusCode": 200, "body": "{}"}

    monkeypatch.setitem(stack.stand_ins, "OpsApiFunction", record)
    return seen


def ops_get(stack, authorization: str | None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.get(f"{stack.gateway_url}/ops/stores", headers=headers, timeout=5)


def foreign_token(stack, claims: dict, kid: str = "scrm-local", algorithm: str = "RS256") -> str:
    """Signed with a key the stack never saw (under the stack's kid, unless told otherwise)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


REFUSED = {
    "no header": lambda stack, claims: None,
    "empty bearer": lambda stack, claims: "Bearer ",
    "not a jwt": lambda stack, claims: "Bearer not-a-jwt",
    "basic auth": lambda stack, claims: "Basic dXNlcjpwYXNz",
    "expired": lambda stack, claims: "Bearer " + stack.mint_token({**claims, "exp": int(time.time()) - 1}),
    "no exp": lambda stack, claims: "Bearer " + stack.mint_token({k: v for k, v in claims.items() if k != "exp"}),
    "not yet valid": lambda stack, claims: "Bearer " + stack.mint_token({**claims, "nbf": int(time.time()) + 600}),
    "other issuer": lambda stack, claims: "Bearer " + stack.mint_token({**claims, "iss": "https://evil.example"}),
    "other audience": lambda stack, claims: "Bearer " + stack.mint_token({**claims, "aud": "someone-else"}),
    "no audience": lambda stack, claims: "Bearer " + stack.mint_token({k: v for k, v in claims.items() if k != "aud"}),
    "foreign key": lambda stack, claims: "Bearer " + foreign_token(stack, claims),
    "unknown kid": lambda stack, claims: "Bearer " + foreign_token(stack, claims, kid="other"),
    "unsigned": lambda stack, claims: "Bearer " + jwt.encode(claims, None, algorithm="none",
                                                             headers={"kid": "scrm-local"}),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_ops_route_without_a_valid_token_is_401_and_the_function_never_runs(stack, corp, ops_calls, case):
    response = ops_get(stack, REFUSED[case](stack, stack.ops_claims(corp.corp_id)))
    assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})
    assert response.headers["www-authenticate"] == "Bearer"
    assert ops_calls == []


@pytest.mark.parametrize("shape", ["Bearer {}", "bearer {}", "{}"])
def test_a_valid_token_passes_its_claims_to_the_function_as_strings(stack, corp, ops_calls, shape):
    token = stack.ops_token(corp.corp_id)
    assert ops_get(stack, shape.format(token)).status_code == 200
    authorizer = ops_calls[0]["requestContext"]["authorizer"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert authorizer == {"jwt": {"claims": claim_strings(claims), "scopes": None}}
    assert authorizer["jwt"]["claims"]["scrm:corp"] == corp.corp_id
    assert authorizer["jwt"]["claims"]["exp"] == str(claims["exp"])
    assert claims["sub"] == "ops-local" and claims["exp"] - claims["iat"] == 12 * 3600


def test_the_audience_may_come_as_a_list_or_as_client_id(stack, corp, ops_calls):
    claims = stack.ops_claims(corp.corp_id)
    audience = claims.pop("aud")
    assert ops_get(stack, "Bearer " + stack.mint_token({**claims, "aud": ["other", audience]})).status_code == 200
    assert ops_get(stack, "Bearer " + stack.mint_token({**claims, "client_id": audience})).status_code == 200
    assert len(ops_calls) == 2


def test_routes_without_an_authorizer_get_no_claims(stack, monkeypatch):
    seen = []
    monkeypatch.setitem(stack.stand_ins, "CallbackFunction", lambda event, context: seen.append(event) or "")
    requests.get(stack.callback_url("ww1"), timeout=5)
    assert "authorizer" not in seen[0]["requestContext"]


def test_claims_reach_the_function_the_way_api_gateway_passes_them():
    assert claim_strings({"s": "x", "n": 5, "b": True, "l": ["a", "b"], "m": {"k": 1}}) == {
        "s": "x", "n": "5", "b": "true", "l": "[a b]", "m": '{"k":1}'}


def test_the_stack_prints_each_corps_token_and_writes_its_endpoints_for_one_run(stack, corp, tmp_path, monkeypatch):
    from infra.scripts import target

    token = stack.ops_token(corp.corp_id)
    assert f"ops token for {corp.corp_id}: {token}" in stack.describe()
    with pytest.raises(LookupError):
        stack.ops_token("wwnotacorp")

    monkeypatch.setattr(stack, "state_file", tmp_path / ".local" / "stack.json")
    stack._write_state()
    state = json.loads(stack.state_file.read_text())
    assert state == {"aws_endpoint_url": stack.endpoint, "region": stack.region, "table_name": stack.table_name,
                     "queue_urls": stack.queue_urls, "gateway_url": stack.gateway_url,
                     "sim_url": stack.sim.base_url if stack.sim else None, "wecom_api_base": f"{stack.sim.base_url}/cgi-bin",
                     "ops_tokens": {corp.corp_id: token}}
    assert stack.state_file.stat().st_mode & 0o777 == 0o600  # it holds bearer tokens

    # the operator commands find the stack through it
    for name in ("AWS_ENDPOINT_URL", "TABLE_NAME", "EVENTS_QUEUE_URL", "WELCOME_QUEUE_URL", "WECOM_API_BASE"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    monkeypatch.setattr(target, "LOCAL_STATE", stack.state_file)
    assert target.configure(argparse.Namespace(aws=False))["table_name"] == stack.table_name
    assert (os.environ["AWS_ENDPOINT_URL"], os.environ["EVENTS_QUEUE_URL"]) == (
        stack.endpoint, stack.queue_urls["EventsQueue"])

    stack._remove_state()
    assert not stack.state_file.exists()


# --- queues ---------------------------------------------------------------------------
@pytest.fixture
def short_visibility(stack):
    """The events queue retries after 1 s instead of the template's minutes, for this test."""
    sqs, url = boto3.client("sqs"), stack.queue_urls["EventsQueue"]
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})
    time.sleep(1.5)  # a receive already long-polling (1 s) would still hide its message for minutes
    yield
    if stack.running:  # the e2e session may have stopped the stack first
        sqs.set_queue_attributes(QueueUrl=url, Attributes=before)


def test_a_poison_message_ends_in_the_dlq_while_its_batch_mate_is_processed(stack, corp, monkeypatch,
                                                                              short_visibility):
    good = store_event(stack, probe_fields(corp.corp_id), time.time())
    poison = f"not json {uuid.uuid4()}"
    batches: list[list[str]] = []
    worker = stack.functions["WorkerFunction"]  # its instances, behind the recording below

    def recording(event, context):
        batches.append([r["body"] for r in event["Records"]])
        return worker.invoke(event)

    monkeypatch.setitem(stack.stand_ins, "WorkerFunction", recording)
    good_body = json.dumps(good.as_message())
    boto3.client("sqs").send_message_batch(QueueUrl=stack.queue_urls["EventsQueue"], Entries=[
        {"Id": "good", "MessageBody": good_body}, {"Id": "poison", "MessageBody": poison}])
    stack.drain(timeout=30)

    assert any(good_body in batch and poison in batch for batch in batches), batches
    assert event_status(stack, corp.corp_id, good.event_id) == "processed"
    max_receives = stack.template.queues["EventsQueue"].max_receive_count
    assert sum(batch.count(poison) for batch in batches) == max_receives
    assert sum(batch.count(good_body) for batch in batches) == 1
    assert poison in [m["Body"] for m in dead_letters(stack)]


def test_the_sweeper_re_enqueues_an_event_left_unprocessed(stack, corp):
    grace = int(stack.environments["SweeperFunction"]["PENDING_GRACE_SECONDS"])
    event = store_event(stack, probe_fields(corp.corp_id), time.time() - grace - 60)
    result = stack.fire_schedule("SweeperFunction")
    assert result["reenqueued"] >= 1
    stack.drain(timeout=30)
    assert event_status(stack, corp.corp_id, event.event_id) == "processed"


# --- the pieces, without the stack ----------------------------------------------------
def test_query_strings_are_decoded_once_and_repeated_keys_joined():
    assert parse_query("echostr=a%2Bb%3D&x=1&x=2&plus=a+b&flag") == {"echostr": "a+b=", "x": "1,2", "plus": "a+b",
                                                                        "flag": ""}
    assert parse_query("twice=%252B") == {"twice": "%2B"}


def test_path_templates_match_segment_by_segment():
    assert match_path("/wecom/callback/{corp_id}", "/wecom/callback/ww1") == {"corp_id": "ww1"}
    assert match_path("/wecom/callback/{corp_id}", "/wecom/callback/") is None
    assert match_path("/wecom/callback/{corp_id}", "/wecom/callback/ww1/more") is None
    assert match_path("/files/{key+}", "/files/a/b%20c") == {"key": "a/b c"}


@pytest.mark.parametrize("result, expected", [
    ({"statusCode": 201, "headers": {"x": "1"}, "body": "ok", "cookies": ["a=b"]}, (201, [("x", "1"), ("set-cookie", "a=b")], b"ok")),
    ({"statusCode": 200, "body": base64.b64encode(b"\x00").decode(), "isBase64Encoded": True}, (200, [], b"\x00")),
    ({"message": "hi"}, (200, [("content-type", "application/json")], b'{"message": "hi"}')),
    ("text", (200, [("content-type", "application/json")], b"text")),
])
def test_lambda_results_map_to_http_by_the_payload_2_rules(result, expected):
    assert http_response(result) == expected


@pytest.mark.parametrize("result, failed", [
    (None, set()), ({}, set()), ({"batchItemFailures": []}, set()),
    ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
    ({"batchItemFailures": [{"itemIdentifier": "unknown"}]}, {"m1", "m2"}),
    ({"batchItemFailures": [{"itemIdentifier": None}]}, {"m1", "m2"}),
    ("not a response", {"m1", "m2"}),
])
def test_batch_item_failures_follow_lambdas_rules(result, failed):
    assert failed_ids(result, {"m1", "m2"}) == failed


def test_the_stacks_own_process_gets_the_wiring_every_function_agrees_on():
    shared = shared_environment({
        "A": {"TABLE_NAME": "t", "POWERTOOLS_SERVICE_NAME": "a", "LEVEL": "INFO", "POWERTOOLS_LOG_LEVEL": "INFO"},
        "B": {"TABLE_NAME": "t", "POWERTOOLS_SERVICE_NAME": "b", "LEVEL": "DEBUG", "ONLY_B": "1"},
    })
    # what differs stays each function's own; Powertools' settings are the functions' business
    assert shared == {"TABLE_NAME": "t", "ONLY_B": "1"}
