"""Load a function's app.py the way Lambda does (its own module), with a Lambda-like context."""
from __future__ import annotations

import importlib.util
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_millis: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


def context_for(name: str) -> LambdaContext:
    """A fresh invocation's context of the function in functions/<name>: its template Timeout left."""
    from infra.local import template as tpl

    [fn] = [f for f in tpl.load().functions.values() if Path(f.code_uri).name == name]
    return LambdaContext(function_name=fn.logical_id, remaining_millis=fn.timeout * 1000)


def load_function(name: str):
    spec = importlib.util.spec_from_file_location(f"fn_{name}_{uuid.uuid4().hex[:6]}", ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
