"""What the deployed template must hold beyond its wiring: alarms that can notify, logs that
are kept and bounded, encrypted queues, failures that land somewhere, and the trusted-IP option.

Read from template.yaml only (checkov, in `make test`, scans the rest).
"""
from __future__ import annotations

import pytest

from infra.local import template as tpl

RAW = tpl.load_yaml(tpl.TEMPLATE_PATH)
RESOURCES = RAW["Resources"]
FUNCTIONS = {k: r for k, r in RESOURCES.items() if r["Type"] == tpl.FUNCTION_TYPE}
QUEUES = {k: r for k, r in RESOURCES.items() if r["Type"] == tpl.QUEUE_TYPE}
WECOM_CALLERS = {"WorkerFunction", "WelcomeFunction", "JobsFunction", "OpsApiFunction"}


def _scheduled(props: dict) -> bool:
    return any(e["Type"] == "Schedule" for e in (props.get("Events") or {}).values())


def test_the_alarm_topic_uses_a_key_cloudwatch_may_use():
    key = RESOURCES["AlarmTopic"]["Properties"]["KmsMasterKeyId"]
    assert key == {"Ref": "DataKey"}, "alias/aws/sns cannot be used by CloudWatch: alarms would never notify"
    statements = RESOURCES["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"].get("Service") == "cloudwatch.amazonaws.com" and "kms:GenerateDataKey*" in s["Action"]
               for s in statements)


@pytest.mark.parametrize("queue", sorted(QUEUES))
def test_every_queue_is_encrypted_with_the_stacks_key(queue):
    assert QUEUES[queue]["Properties"]["KmsMasterKeyId"] == {"Ref": "DataKey"}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_logs_to_a_group_with_retention_and_may_use_the_key(function):
    props = FUNCTIONS[function]["Properties"]
    group = RESOURCES[props["LoggingConfig"]["LogGroup"]["Ref"]]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    statements = [s for p in props["Policies"] if isinstance(p, dict) and "Statement" in p for s in p["Statement"]]
    assert any(s.get("Resource") == {"Fn::GetAtt": ["DataKey", "Arn"]} for s in statements)
    assert not any("dynamodb:BatchWriteItem" in _as_list(s.get("Action")) for s in statements), "unused grant"


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("function", sorted(f for f, r in FUNCTIONS.items() if _scheduled(r["Properties"])))
def test_a_scheduled_function_has_an_on_failure_destination_and_an_errors_alarm(function):
    config = FUNCTIONS[function]["Properties"]["EventInvokeConfig"]
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["ScheduledFailures", "Arn"]}
    alarms = [r for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"
              and r["Properties"]["MetricName"] == "Errors"
              and r["Properties"]["Dimensions"][0]["Value"] == {"Ref": function}]
    assert alarms, f"no Errors alarm for {function}"


def test_every_dead_letter_queue_and_the_welcome_queues_age_have_alarms():
    watched = {str(d["Value"]) for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"
               for d in r["Properties"]["Dimensions"]}
    for queue in tpl.load().dlq_ids():
        assert str({"Fn::GetAtt": [queue, "QueueName"]}) in watched, queue
    age = [r for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"
           and r["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"]
    assert age and age[0]["Properties"]["Threshold"] < 20  # the welcome's 20 s window


def test_the_http_api_writes_access_logs():
    settings = RESOURCES["ScrmHttpApi"]["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogs", "Arn"]}


def test_the_trusted_ip_option_puts_every_wecom_caller_behind_one_elastic_ip():
    assert RAW["Parameters"]["TrustedIpEgress"]["Default"] == "false"  # off by default: it costs money
    for function, resource in FUNCTIONS.items():
        vpc = resource["Properties"].get("VpcConfig")
        if function in WECOM_CALLERS:
            assert vpc["Fn::If"][0] == "UseTrustedIp", function
        else:
            assert vpc is None, f"{function} never calls WeCom and needs no VPC"
    assert RESOURCES["NatGateway"]["Properties"]["AllocationId"] == {"Fn::GetAtt": ["EgressIp", "AllocationId"]}
    assert RAW["Outputs"]["TrustedEgressIp"] == {"Condition": "UseTrustedIp", "Description":
                                                RAW["Outputs"]["TrustedEgressIp"]["Description"],
                                                "Value": {"Ref": "EgressIp"}}
