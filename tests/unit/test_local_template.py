"""The local stack's reading of template.yaml: the model it builds and how it resolves values."""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from infra.local import template as tpl

REGION = "us-east-1"


@pytest.fixture(scope="module")
def template() -> tpl.Template:
    return tpl.load()


def local_resolver(template: tpl.Template, parameters: dict | None = None) -> tpl.Resolver:
    queues = {q: tpl.LocalQueue(f"local-{q}", f"http://127.0.0.1:4566/{tpl.ACCOUNT_ID}/local-{q}",
                                f"arn:aws:sqs:{REGION}:{tpl.ACCOUNT_ID}:local-{q}") for q in template.queues}
    tables = {t: f"local-{t}" for t in template.tables}
    return tpl.Resolver(template, tables, queues, REGION, parameters)


# --- loading --------------------------------------------------------------------------
def test_short_tags_load_as_their_long_form():
    text = """
    A: !Ref X
    B: !GetAtt Q.Arn
    C: !Sub "${X}-${Q.QueueName}"
    D: !Not [!Equals [!Ref X, ""]]
    E: !If [Cond, !Join [",", [a, b]], !Select [0, [c]]]
    F: !GetAtt [Q, Arn]
    """
    data = yaml.load(text, Loader=tpl._Loader)  # noqa: S506 - SafeLoader subclass
    assert data["A"] == {"Ref": "X"}
    assert data["B"] == {"Fn::GetAtt": ["Q", "Arn"]}
    assert data["C"] == {"Fn::Sub": "${X}-${Q.QueueName}"}
    assert data["D"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "X"}, ""]}]}
    assert data["E"] == {"Fn::If": ["Cond", {"Fn::Join": [",", ["a", "b"]]}, {"Fn::Select": [0, ["c"]]}]}
    assert data["F"] == {"Fn::GetAtt": ["Q", "Arn"]}


def test_every_function_of_the_template_is_in_the_model_with_every_event(template):
    raw = {k: r for k, r in template.resources.items() if r["Type"] == tpl.FUNCTION_TYPE}
    assert set(template.functions) == set(raw)
    for logical_id, resource in raw.items():
        fn = template.functions[logical_id]
        names = {r.event for r in fn.routes} | {s.event for s in fn.sqs_sources} | {s.event for s in fn.schedules}
        assert names == set(resource["Properties"].get("Events", {})), logical_id
        assert fn.module_path.is_file(), fn.module_path
        assert fn.layers == ["layers/shared"]


def test_the_callback_routes_worker_source_and_sweeper_schedule(template):
    callback = template.functions["CallbackFunction"]
    assert {r.route_key for r in callback.routes} == {"GET /wecom/callback/{corp_id}", "POST /wecom/callback/{corp_id}"}
    assert callback.timeout == 4
    worker = template.functions["WorkerFunction"]
    assert worker.sqs_sources == [tpl.SqsSource("Events", "EventsQueue", 10, True)]
    sweeper = template.functions["SweeperFunction"]
    assert sweeper.schedules == [tpl.Schedule("Sweep", "rate(5 minutes)")]


def test_environment_is_globals_merged_with_the_functions_own(template):
    sweeper = template.functions["SweeperFunction"].environment
    assert sweeper["TABLE_NAME"] == {"Ref": "ScrmTable"}
    assert sweeper["POWERTOOLS_SERVICE_NAME"] == "sweeper"
    assert sweeper["PENDING_GRACE_SECONDS"] == "60"
    assert "PENDING_GRACE_SECONDS" not in template.functions["WorkerFunction"].environment


def test_tables_and_queues_come_with_their_template_properties(template):
    assert set(template.tables) == {"ScrmTable"}
    table = template.tables["ScrmTable"].properties
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["GSI1", "GSI2"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    order = [q.logical_id for q in template.queues_in_creation_order()]
    assert order.index("EventsDLQ") < order.index("EventsQueue")
    events = template.queues["EventsQueue"]
    assert (events.dlq, events.max_receive_count) == ("EventsDLQ", 5)
    assert template.dlq_ids() == {"EventsDLQ", "WelcomeDLQ", "JobsDLQ"}
    assert template.queues["WelcomeQueue"].dlq == "WelcomeDLQ"
    assert template.queues["EventsDLQ"].dlq is None


def test_parameters_carry_their_defaults(template):
    assert template.parameters["StageName"] == "prod"
    assert template.parameters["AlarmEmail"] == ""
    assert template.http_api_stage == {"Ref": "StageName"}


# --- resolving ------------------------------------------------------------------------
def test_every_functions_environment_resolves_to_local_values(template):
    resolver = local_resolver(template)
    for fn in template.functions.values():
        env = resolver.environment(fn)
        assert env["TABLE_NAME"] == "local-ScrmTable"
        assert env["EVENTS_QUEUE_URL"] == f"http://127.0.0.1:4566/{tpl.ACCOUNT_ID}/local-EventsQueue"
        assert env["SECRET_PREFIX"] == "scrm/corp/"
        assert env["WECOM_API_BASE"] == "https://qyapi.weixin.qq.com/cgi-bin"
        assert all(isinstance(v, str) for v in env.values())


def test_parameter_overrides_replace_defaults(template):
    resolver = local_resolver(template, {"SecretPrefix": "local/", "StageName": "dev"})
    assert resolver.environment(template.functions["WorkerFunction"])["SECRET_PREFIX"] == "local/"
    assert resolver.resolve(template.http_api_stage) == "dev"


def test_unknown_parameter_override_is_refused(template):
    with pytest.raises(tpl.UnresolvableError, match="NoSuchParameter"):
        local_resolver(template, {"NoSuchParameter": "x"})


def test_get_att_and_sub_resolve_arns_names_and_pseudo_parameters(template):
    r = local_resolver(template)
    assert r.resolve({"Fn::GetAtt": ["EventsDLQ", "Arn"]}) == f"arn:aws:sqs:{REGION}:{tpl.ACCOUNT_ID}:local-EventsDLQ"
    assert r.resolve({"Fn::GetAtt": ["EventsDLQ", "QueueName"]}) == "local-EventsDLQ"
    assert r.resolve({"Fn::Sub": "${ScrmTable.Arn}/index/*"}) == \
        f"arn:aws:dynamodb:{REGION}:{tpl.ACCOUNT_ID}:table/local-ScrmTable/index/*"
    assert r.resolve({"Fn::Sub": "arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}:${SecretPrefix}*"}) == \
        f"arn:aws:x:{REGION}:{tpl.ACCOUNT_ID}:scrm/corp/*"
    assert r.resolve({"Fn::Sub": ["${Name}-${!Literal}", {"Name": {"Ref": "StageName"}}]}) == "prod-${Literal}"
    assert r.resolve(True) == "true" and r.resolve(60) == "60"


def test_an_unknown_ref_names_the_function_and_the_variable(template):
    fn = template.functions["WorkerFunction"]
    broken = dataclasses.replace(fn, environment={**fn.environment, "BROKEN": {"Ref": "NoSuchThing"}})
    with pytest.raises(tpl.UnresolvableError, match=r"WorkerFunction: environment variable BROKEN: !Ref NoSuchThing"):
        local_resolver(template).environment(broken)


@pytest.mark.parametrize("value, message", [
    ({"Fn::GetAtt": ["ScrmTable", "StreamArn"]}, "ScrmTable.StreamArn"),
    ({"Fn::GetAtt": ["Missing", "Arn"]}, "Missing.Arn"),
    ({"Fn::If": ["HasAlarmEmail", "a", "b"]}, "Fn::If"),
    ({"Fn::Sub": "${Missing}"}, "Missing"),
    (["a", "list"], "not a value"),
])
def test_what_cannot_be_resolved_is_an_error_not_a_guess(template, value, message):
    with pytest.raises(tpl.UnresolvableError, match=re.escape(message)):
        local_resolver(template).resolve(value)


def test_a_template_with_an_event_type_the_stack_cannot_run_is_refused(tmp_path):
    text = tpl.TEMPLATE_PATH.read_text(encoding="utf-8").replace("Type: Schedule", "Type: Kinesis")
    (tmp_path / "template.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(tpl.TemplateError, match="SweeperFunction.Sweep: event type Kinesis"):
        tpl.load(tmp_path / "template.yaml")
