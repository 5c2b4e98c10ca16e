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
        names = {r.event for r in fn.routes} | {s.event for s in fn.sqs_sources} | {s.event for s in fn.schedules} \
            | {s.event for s in fn.stream_sources}
        assert names == set(resource["Properties"].get("Events", {})), logical_id
        assert fn.module_path.is_file(), fn.module_path
        assert fn.layers == ["layers/shared"]


def test_the_callback_routes_worker_source_and_sweeper_schedule(template):
    callback = template.functions["CallbackFunction"]
    assert {r.route_key for r in callback.routes} == {"GET /wecom/callback/{corp_id}", "POST /wecom/callback/{corp_id}"}
    assert callback.timeout == 4
    worker = template.functions["WorkerFunction"]
    assert worker.sqs_sources == [tpl.SqsSource("Events", "EventsQueue", 4, True, {"Ref": "WorkerMaxConcurrency"})]
    sweeper = template.functions["SweeperFunction"]
    assert sweeper.schedules == [tpl.Schedule("Sweep", "rate(5 minutes)")]


def test_the_stats_projector_reads_the_tables_stream_with_lambdas_error_handling(template):
    assert template.tables["ScrmTable"].stream_view_type == "NEW_AND_OLD_IMAGES"
    [source] = template.functions["StatsFunction"].stream_sources
    assert (source.event, source.table, source.starting_position) == ("TableStream", "ScrmTable", "TRIM_HORIZON")
    assert (source.batch_size, source.batching_window) == (100, 5)
    assert source.report_batch_item_failures and source.bisect_on_error
    assert (source.maximum_retry_attempts, source.maximum_record_age, source.on_failure) == (10, -1, "StatsDLQ")
    assert source.enabled
    assert [sorted(p["dynamodb"]["NewImage"]["entity"]["S"]) for p in source.filters] == [["Coupon", "Follow"],
                                                                                          ["Welcome"]]


@pytest.mark.parametrize("change, message", [
    (("Stream: !GetAtt ScrmTable.StreamArn", "Stream: !GetAtt ScrmTable.Arn"), "Stream must be !GetAtt"),
    (("StartingPosition: TRIM_HORIZON", "StartingPosition: AT_TIMESTAMP"), "StartingPosition"),
    (("        StreamViewType: NEW_AND_OLD_IMAGES\n", ""), "with a StreamSpecification"),
    (("Destination: !GetAtt StatsDLQ.Arn", "Destination: !GetAtt EventsQueue.QueueUrl"), "OnFailure.Destination"),
    (("- Pattern: '{", "- Pattern: '{{"), "JSON Pattern"),
])
def test_a_stream_source_the_stack_cannot_run_as_written_is_refused(tmp_path, change, message):
    text = tpl.TEMPLATE_PATH.read_text(encoding="utf-8")
    assert change[0] in text
    (tmp_path / "template.yaml").write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(tpl.TemplateError, match=message):
        tpl.load(tmp_path / "template.yaml")


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
    # StatsDLQ: a stream's OnFailure; ScheduledFailures: the scheduled functions' asynchronous OnFailure
    assert template.dlq_ids() == {"EventsDLQ", "WelcomeDLQ", "JobsDLQ", "StatsDLQ", "ScheduledFailures"}
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


def test_conditions_and_if_follow_the_parameters_and_no_value_leaves_a_property_out(template):
    reserved = template.functions["CallbackFunction"].reserved_concurrency
    assert local_resolver(template).resolve_optional(reserved) == template.parameters["CallbackReservedConcurrency"]
    off = local_resolver(template, {"CallbackReservedConcurrency": "0"})
    assert off.condition("ReservesCallbackConcurrency") is False
    assert off.resolve_optional(reserved) is None
    with pytest.raises(tpl.NoValue):
        off.resolve(reserved)
    assert local_resolver(template, {"AlarmEmail": "ops@example.com"}).resolve(
        {"Fn::If": ["HasAlarmEmail", "mail", "none"]}) == "mail"
    assert local_resolver(template).resolve({"Fn::If": ["HasAlarmEmail", "mail", "none"]}) == "none"


@pytest.mark.parametrize("value, message", [
    ({"Fn::GetAtt": ["ScrmTable", "StreamArn"]}, "ScrmTable.StreamArn"),
    ({"Fn::GetAtt": ["Missing", "Arn"]}, "Missing.Arn"),
    ({"Fn::If": ["NoSuchCondition", "a", "b"]}, "NoSuchCondition"),
    ({"Fn::Select": [0, ["a"]]}, "Fn::Select"),
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


# --- what the stack reads for concurrency and streams ---------------------------------
def test_reserved_and_maximum_concurrency_are_read_raw_for_the_stack_to_resolve(tmp_path):
    text = tpl.TEMPLATE_PATH.read_text(encoding="utf-8")
    text = text.replace("      CodeUri: functions/worker\n",
                        "      CodeUri: functions/worker\n      ReservedConcurrentExecutions: 7\n")
    (tmp_path / "template.yaml").write_text(text, encoding="utf-8")
    template = tpl.load(tmp_path / "template.yaml")
    assert template.functions["WorkerFunction"].reserved_concurrency == 7
    assert template.functions["CallbackFunction"].reserved_concurrency["Fn::If"][0] == "ReservesCallbackConcurrency"
    assert template.functions["SweeperFunction"].reserved_concurrency is None
    [welcomes] = template.functions["WelcomeFunction"].sqs_sources
    assert welcomes.maximum_concurrency == {"Ref": "WelcomeMaxConcurrency"}
    assert template.functions["CallbackFunction"].runtime == "python3.12"  # from Globals


def test_a_tables_stream_is_created_as_the_api_spells_it():
    from infra.local.stack import create_table_request

    props = tpl.load().tables["ScrmTable"].properties
    request = create_table_request(props)
    assert request["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert "SSESpecification" not in request and "TimeToLiveSpecification" not in request
    without = {k: v for k, v in props.items() if k != "StreamSpecification"}
    assert "StreamSpecification" not in create_table_request(without)


def test_a_stream_arn_resolves_once_the_table_has_a_stream(template):
    queues = {q: tpl.LocalQueue(q, f"http://x/{q}", f"arn:aws:sqs:{REGION}:{tpl.ACCOUNT_ID}:{q}") for q in template.queues}
    arn = f"arn:aws:dynamodb:{REGION}:{tpl.ACCOUNT_ID}:table/t/stream/2024-01-01T00:00:00.000"
    resolver = tpl.Resolver(template, {"ScrmTable": "t"}, queues, REGION, streams={"ScrmTable": arn})
    assert resolver.resolve({"Fn::GetAtt": ["ScrmTable", "StreamArn"]}) == arn


def test_a_function_instance_sees_its_own_variables_and_lambdas_not_the_shells(template, monkeypatch):
    from infra.local.functions import lambda_environment

    monkeypatch.setenv("SOMETHING_OF_THE_SHELL", "1")
    fn = template.functions["SweeperFunction"]
    env = lambda_environment(fn, {"TABLE_NAME": "t", "PENDING_GRACE_SECONDS": "60"}, region=REGION,
                             endpoint="http://127.0.0.1:1", runtime=fn.runtime)
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "SweeperFunction" and env["_HANDLER"] == "app.handler"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12" and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert (env["TABLE_NAME"], env["PENDING_GRACE_SECONDS"]) == ("t", "60")
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == "/dev/null"  # never a real account
    assert "SOMETHING_OF_THE_SHELL" not in env
