"""The shared package's imports run one way: entry points → domain → jobs → WeCom client and
data access → the callback protocol → platform, with no cycle and no import hidden inside a
function to dodge one.

Read from the source (ast), so the check needs nothing installed and sees every module,
including ones no test imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "shared" / "scrm"

# Lower layers never import higher ones. Within a layer, modules may import each other as
# long as no cycle forms.
LAYERS = [
    ("scrm.platform", 0),
    ("scrm.wecom.callback", 1),
    ("scrm.store", 2),
    ("scrm.wecom.apis", 3),
    ("scrm.jobs", 4),
    ("scrm.domain", 5),
    ("scrm.entry", 6),
    ("scrm.wecom", 1),  # the package itself holds nothing; its two halves are placed above
]
# The callback answers inside WeCom's 5 s on a cold start: its import path stays light.
CALLBACK = "scrm.entry.callback"
HEAVY_FOR_THE_CALLBACK = ("pynamodb", "aws_xray_sdk", "requests")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    package = base if MODULES[importer].name == "__init__.py" else base[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def _targets(importer: str, node: ast.AST) -> list[str]:
    """The modules an import statement loads (a `from a import b` loads a.b if b is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _resolve(importer, node)
        found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
        return found or [base]
    return []


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(scrm modules imported at module level, [(line, target)] of imports inside functions)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only: never executed
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, child):
                    if in_function:
                        nested.append((child.lineno, target))
                    elif target.split(".")[0] == "scrm":
                        top.add(target)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    with_parents = set()
    for target in top:
        parts = target.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {t for t in with_parents if t in MODULES and t != module}, nested


GRAPH = {module: imports(module)[0] for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in MODULES if m != "scrm" and layer_of(m) is None]
    assert unplaced == []


def test_the_package_has_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_imports_only_go_down_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in sorted(targets)
              if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)]
    assert upward == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_scrm_import_is_hidden_inside_a_function(module):
    hidden = [f"line {line}: {target}" for line, target in imports(module)[1] if target.split(".")[0] == "scrm"]
    assert hidden == []


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(GRAPH.get(current, ()))
    return seen


def test_the_callback_path_never_loads_pynamodb_requests_or_xray():
    third_party = set()
    for module in _closure(CALLBACK):
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                third_party.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                third_party.add(node.module.split(".")[0])
    assert third_party.isdisjoint(HEAVY_FOR_THE_CALLBACK), sorted(third_party & set(HEAVY_FOR_THE_CALLBACK))
