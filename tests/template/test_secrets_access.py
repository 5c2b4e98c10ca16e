"""Who may read which half of a corp's credentials (read from template.yaml only)."""
from __future__ import annotations

from infra.local import template as tpl

RESOURCES = tpl.load_yaml(tpl.TEMPLATE_PATH)["Resources"]
FUNCTIONS = {k: r for k, r in RESOURCES.items() if r["Type"] == tpl.FUNCTION_TYPE}


def secret_resources(logical_id: str) -> list[str]:
    found = []
    for policy in FUNCTIONS[logical_id]["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if any(a.startswith("secretsmanager:") for a in actions):
                resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                found += [r["Fn::Sub"] if isinstance(r, dict) else r for r in resources]
    return found


def test_the_internet_facing_callback_reads_only_the_callback_secrets():
    resources = secret_resources("CallbackFunction")
    assert resources and all(r.endswith("${SecretPrefix}*/callback-??????") for r in resources), resources


def test_every_other_function_reads_only_the_app_secrets():
    readers = [f for f in FUNCTIONS if f != "CallbackFunction" and secret_resources(f)]
    assert "WorkerFunction" in readers and "WelcomeFunction" in readers
    for logical_id in readers:
        resources = secret_resources(logical_id)
        assert all(r.endswith("${SecretPrefix}*/app-??????") for r in resources), (logical_id, resources)
