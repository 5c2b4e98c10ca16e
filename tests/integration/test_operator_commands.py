"""The documented operator commands: replay dead letters, register a corp, sync the org."""
from __future__ import annotations

import json

import boto3
from scrm.entry.recovery import describe_dead_letters
from scrm.platform import credentials

from infra.scripts import register_corp, replay_dlq, target
from tests.support.callbacks import VECTOR_A


def _point_at(aws, monkeypatch):
    urls = aws.queue_urls
    monkeypatch.setattr(target, "configure", lambda args: {
        "table_name": aws.table_name, "queue_urls": urls,
        "redrives": [(urls["EventsDLQ"], urls["EventsQueue"]), (urls["WelcomeDLQ"], urls["WelcomeQueue"]),
                     (urls["JobsDLQ"], urls["JobsQueue"])]})


def _printed(out: str) -> str:
    """What a command printed, without the log lines of the functions it ran in-process."""
    def logged(line: str) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return isinstance(record, dict) and ("level" in record or "_aws" in record)

    return "".join(line for line in out.splitlines(keepends=True) if not logged(line))


def test_replay_moves_every_dead_letter_back_to_its_own_queue(aws, monkeypatch, capsys):
    sqs = boto3.client("sqs")
    for i in range(3):
        sqs.send_message(QueueUrl=aws.queue_urls["EventsDLQ"], MessageBody=json.dumps({"event_id": f"e{i}"}))
    sqs.send_message(QueueUrl=aws.queue_urls["WelcomeDLQ"], MessageBody=json.dumps({"event_id": "w"}))
    _point_at(aws, monkeypatch)

    assert replay_dlq.main(["--dry-run"]) == 0
    assert "EventsDLQ: 3 message(s) seen" in capsys.readouterr().out
    assert len(describe_dead_letters(aws.queue_urls["EventsDLQ"])) == 3  # a dry run moves nothing

    assert replay_dlq.main([]) == 0
    out = capsys.readouterr().out
    assert "EventsDLQ: moved 3" in out and "WelcomeDLQ: moved 1" in out
    events = sqs.receive_message(QueueUrl=aws.queue_urls["EventsQueue"], MaxNumberOfMessages=10)["Messages"]
    assert sorted(json.loads(m["Body"])["event_id"] for m in events) == ["e0", "e1", "e2"]
    welcome = sqs.receive_message(QueueUrl=aws.queue_urls["WelcomeQueue"], MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["event_id"] for m in welcome] == ["w"]
    assert describe_dead_letters(aws.queue_urls["EventsDLQ"]) == []


def secret(name: str) -> dict:
    return json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"])


def test_register_corp_stores_two_secrets_and_never_prints_them(aws, monkeypatch, tmp_path, capsys):
    _point_at(aws, monkeypatch)
    corp_file = tmp_path / "corp.json"
    corp_file.write_text(json.dumps(VECTOR_A))
    assert register_corp.main(["--file", str(corp_file)]) == 0
    out = capsys.readouterr().out
    assert "registered" in out and VECTOR_A["secret"] not in out and VECTOR_A["token"] not in out
    corp_id = VECTOR_A["corp_id"]
    callback = secret(f"scrm/corp/{corp_id}/callback")
    app = secret(f"scrm/corp/{corp_id}/app")
    assert (callback["token"], callback["encoding_aes_key"]) == (VECTOR_A["token"], VECTOR_A["encoding_aes_key"])
    assert "secret" not in callback  # what the internet-facing callback reads holds no app secret
    assert app == {"corp_id": corp_id, "secret": VECTOR_A["secret"], "agent_id": VECTOR_A["agent_id"]}
    credentials.forget_cache()
    assert credentials.load_callback(corp_id).encoding_aes_key == VECTOR_A["encoding_aes_key"]
    assert credentials.load_app(corp_id).secret == VECTOR_A["secret"]
    assert register_corp.main(["--file", str(corp_file)]) == 0
    assert "updated" in capsys.readouterr().out


def test_register_corp_splits_the_secret_of_a_deployment_from_before(aws, monkeypatch, capsys):
    _point_at(aws, monkeypatch)
    corp_id = VECTOR_A["corp_id"]
    boto3.client("secretsmanager").create_secret(Name=f"scrm/corp/{corp_id}", SecretString=json.dumps(VECTOR_A))
    assert register_corp.main(["--from-legacy", corp_id]) == 0
    assert VECTOR_A["secret"] not in capsys.readouterr().out
    assert secret(f"scrm/corp/{corp_id}/app")["secret"] == VECTOR_A["secret"]
    assert secret(f"scrm/corp/{corp_id}/callback")["token"] == VECTOR_A["token"]
    assert register_corp.main(["--from-legacy", "wwnobody"]) == 2
    assert "no secret scrm/corp/wwnobody to split" in capsys.readouterr().err


def test_register_corp_refuses_a_bad_encoding_aes_key(aws, monkeypatch, tmp_path, capsys):
    _point_at(aws, monkeypatch)
    corp_file = tmp_path / "corp.json"
    corp_file.write_text(json.dumps({**VECTOR_A, "encoding_aes_key": "short"}))
    assert register_corp.main(["--file", str(corp_file)]) == 2
    assert "invalid credentials" in capsys.readouterr().err


def test_org_commands_set_a_rule_and_run_a_full_sync(aws, simulated_wecom, monkeypatch, tmp_path, capsys):
    from scrm.platform.credentials import CorpCredentials
    from scrm.store.corps import register

    from infra.scripts import org as org_command
    from tests.support.jobs import JobsQueue

    _point_at(aws, monkeypatch)
    register(CorpCredentials.from_json(VECTOR_A))
    simulated_wecom.add_corp(**{k: VECTOR_A[k] for k in ("corp_id", "secret", "token", "encoding_aes_key", "agent_id")})
    simulated_wecom.add_department(VECTOR_A["corp_id"], 2, "门店A", parentid=1)
    simulated_wecom.add_staff(VECTOR_A["corp_id"], "zhangsan", "张三", department=(2,))
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"mode": "depth", "store": 2}))

    assert org_command.main(["rule", "--corp", VECTOR_A["corp_id"], "--file", str(rule)]) == 0
    with JobsQueue(monkeypatch).running():  # the stack's jobs function
        assert org_command.main(["sync", "--corp", VECTOR_A["corp_id"]]) == 0
    _, headline, report = _printed(capsys.readouterr().out).split("\n", 2)
    assert headline.startswith(f"{VECTOR_A['corp_id']}: org sync job org-sync-") and headline.endswith(" done")
    report = json.loads(report)
    assert report["stores"] == 1 and report["unassigned_staff"] == []
    assert org_command.main(["sync", "--no-wait"]) == 0
    assert _printed(capsys.readouterr().out).endswith(" started\n")

    rule.write_text(json.dumps({"mode": "depth", "store": 99}))
    assert org_command.main(["rule", "--corp", VECTOR_A["corp_id"], "--file", str(rule)]) == 2
    assert "refused" in capsys.readouterr().err
