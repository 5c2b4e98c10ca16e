"""template.yaml's own wiring: what cfn-lint and `sam validate` let through.

Everything here reads files only (the template, the function sources, config.py); nothing is
imported from the functions and nothing is deployed.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import aws_lambda_powertools
import pytest

from infra.local import template as tpl

ROOT = tpl.REPO_ROOT
RAW = tpl.load_yaml(tpl.TEMPLATE_PATH)
RESOURCES = RAW["Resources"]
PARAMETERS = set(RAW.get("Parameters", {}))
CONDITIONS = set(RAW.get("Conditions", {}))
PSEUDO = {"AWS::AccountId", "AWS::NotificationARNs", "AWS::NoValue", "AWS::Partition", "AWS::Region",
          "AWS::StackId", "AWS::StackName", "AWS::URLSuffix"}
FUNCTIONS = {k: r for k, r in RESOURCES.items() if r["Type"] == tpl.FUNCTION_TYPE}
NAMES = set(RESOURCES) | PARAMETERS | PSEUDO
GLOBAL_ENV = RAW.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})

# Read by scrm.platform.config with a default and deliberately not in Globals: why each may be absent.
OPTIONAL_SETTINGS = {
    "WECOM_TIMEOUT": "seconds per WeCom HTTP call; the default (3 s) fits a record's 25 s budget",
    "PENDING_GRACE_SECONDS": "only the sweeper uses it, so only SweeperFunction sets it",
    "MAX_RECEIVE_COUNT": "only the queue consumers use it; each sets its own queue's maxReceiveCount",
}


def walk(node, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every intrinsic-function mapping in the template, with where it sits."""
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in ("Ref", "Condition") or any(k.startswith("Fn::") for k in node):
            yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def sub_names(arg) -> Iterator[tuple[str, set]]:
    text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
    for name in re.findall(r"\$\{([^}!][^}]*)\}", text):
        yield name, set(variables)


def test_every_reference_names_a_resource_parameter_or_pseudo_parameter():
    dangling = []
    for path, node in walk(RAW):
        if "Ref" in node and node["Ref"] not in NAMES:
            dangling.append(f"{path}: !Ref {node['Ref']}")
        if "Fn::GetAtt" in node:
            target = node["Fn::GetAtt"]
            target = target.split(".")[0] if isinstance(target, str) else target[0]
            if target not in RESOURCES:
                dangling.append(f"{path}: !GetAtt {target}")
        if "Fn::Sub" in node:
            for name, variables in sub_names(node["Fn::Sub"]):
                base = name if name.startswith("AWS::") else name.split(".")[0]
                if base not in NAMES | variables:
                    dangling.append(f"{path}: ${{{name}}}")
        if "Condition" in node and isinstance(node["Condition"], str) and node["Condition"] not in CONDITIONS:
            dangling.append(f"{path}: Condition {node['Condition']}")
        if "Fn::If" in node and node["Fn::If"][0] not in CONDITIONS:
            dangling.append(f"{path}: !If {node['Fn::If'][0]}")
    for logical_id, resource in RESOURCES.items():
        if "Condition" in resource and resource["Condition"] not in CONDITIONS:
            dangling.append(f"Resources.{logical_id}: Condition {resource['Condition']}")
    assert not dangling, "references to nothing:\n" + "\n".join(dangling)


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_code_uri_holds_the_handler_function(logical_id):
    props = FUNCTIONS[logical_id]["Properties"]
    folder = ROOT / props["CodeUri"]
    module, _, function = props["Handler"].rpartition(".")
    source = folder / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{logical_id}: {source} does not exist"
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert function in defined, f"{logical_id}: {source} defines no top-level function {function}()"


def _python_sources(*folders: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for folder in folders for p in sorted(folder.rglob("*.py")))


def test_every_environment_variable_a_function_sets_is_read():
    ours = _python_sources(ROOT / "functions", ROOT / "layers/shared/scrm")
    powertools = _python_sources(Path(aws_lambda_powertools.__file__).parent)
    unread = []
    for logical_id, resource in FUNCTIONS.items():
        names = set(GLOBAL_ENV) | set(resource["Properties"].get("Environment", {}).get("Variables", {}))
        for name in sorted(names):
            # POWERTOOLS_* settings are read by the library itself, not by our code.
            source = powertools if name.startswith("POWERTOOLS_") else ours
            if f'"{name}"' not in source and f"'{name}'" not in source:
                unread.append(f"{logical_id}: {name}")
    assert not unread, "set in template.yaml but read nowhere:\n" + "\n".join(unread)


def _environment_reads(source: str) -> set[str]:
    """Names read through os.environ / os.getenv, also through a local alias of os.environ."""
    tree = ast.parse(source)

    def is_os_environ(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ" and \
            isinstance(node.value, ast.Name) and node.value.id == "os"

    aliases = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and is_os_environ(n.value)
               for t in n.targets if isinstance(t, ast.Name)}

    def is_environ(node) -> bool:
        return is_os_environ(node) or (isinstance(node, ast.Name) and node.id in aliases)

    names = set()
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in ("get", "setdefault", "pop") and is_environ(node.func.value):
                key = node.args[0]
            elif node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    return names


def test_every_setting_config_reads_is_in_globals_or_documented_optional():
    reads = _environment_reads((ROOT / "layers/shared/scrm/platform/config.py").read_text(encoding="utf-8"))
    assert "TABLE_NAME" in reads, "the parser of config.py found nothing: has config.py changed shape?"
    missing = sorted(reads - set(GLOBAL_ENV) - set(OPTIONAL_SETTINGS))
    assert not missing, f"config.py reads {missing}: set them in Globals or document them in OPTIONAL_SETTINGS"
    stale = sorted(set(OPTIONAL_SETTINGS) - reads)
    assert not stale, f"OPTIONAL_SETTINGS lists {stale}, which config.py no longer reads"


def _statements() -> Iterator[tuple[str, dict]]:
    for logical_id, resource in RESOURCES.items():
        props = resource.get("Properties", {})
        for i, policy in enumerate(props.get("Policies", [])):
            if isinstance(policy, dict):
                for statement in policy.get("Statement", []):
                    yield f"{logical_id}.Policies[{i}]", statement
                for statement in policy.get("PolicyDocument", {}).get("Statement", []):
                    yield f"{logical_id}.Policies[{i}]", statement
        for statement in props.get("PolicyDocument", {}).get("Statement", []):
            yield f"{logical_id}.PolicyDocument", statement


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_no_policy_statement_allows_every_action_or_every_resource():
    statements = list(_statements())
    assert statements, "no IAM statements found: has the template changed shape?"
    broad = []
    for where, statement in statements:
        for action in _as_list(statement.get("Action", [])):
            if action == "*" or (isinstance(action, str) and action.endswith(":*")):
                broad.append(f"{where}: Action {action}")
        for resource in _as_list(statement.get("Resource", [])):
            if resource == "*":
                broad.append(f"{where}: Resource *")
    assert not broad, "\n".join(broad)


def test_every_queue_but_a_dead_letter_queue_has_a_redrive_policy():
    template = tpl.load()
    dlqs = template.dlq_ids()
    assert dlqs, "no dead-letter queue in the template"
    missing = [q for q, queue in template.queues.items() if q not in dlqs and "RedrivePolicy" not in queue.properties]
    assert not missing, f"queues without a RedrivePolicy: {missing}"


def test_every_function_folder_has_sample_events():
    events = ROOT / "events"
    if not events.is_dir() or not any(p.is_dir() for p in events.iterdir()):
        pytest.skip("events/ holds no sample event folders yet")
    folders = sorted(p.name for p in (ROOT / "functions").iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    missing = [name for name in folders if not (events / name).is_dir()]
    assert not missing, f"no sample events for {missing} (expected events/<function folder>/)"
