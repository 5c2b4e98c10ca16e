"""template.yaml as the local stack sees it: tables, queues, functions, their event sources.

The local stack builds everything from this model, so the deployed template stays the only
schema: a table or queue changed in template.yaml is changed locally too.

Short intrinsic tags are loaded as their long JSON form (`!Ref X` -> {"Ref": "X"},
`!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]}, `!Sub s` -> {"Fn::Sub": s}, ...), so a template
written either way reads the same. `Resolver` turns the values the functions see (their
environment) into local ones; anything it cannot resolve is an error naming the function
and the variable, never a silently wrong value.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"
FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
HTTP_API_TYPE = "AWS::Serverless::HttpApi"

# The account and partition moto uses; the region comes from the environment.
ACCOUNT_ID = "123456789012"
PARTITION = "aws"


# --- loading --------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


def _intrinsic(loader: _Loader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _intrinsic)


def load_yaml(path: Path | str = TEMPLATE_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# --- the model ------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    method: str  # upper case; ANY matches every method
    path: str  # template path, e.g. /wecom/callback/{corp_id}
    event: str  # the event's name in the function's Events

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class SqsSource:
    event: str
    queue: str  # logical id of the queue
    batch_size: int
    report_batch_item_failures: bool
    maximum_concurrency: Any = None  # raw ScalingConfig.MaximumConcurrency (resolve it): batches in flight


@dataclass(frozen=True)
class StreamSource:
    """A DynamoDB stream event source, with the settings Lambda's event source mapping honours."""

    event: str
    table: str  # logical id of the table whose StreamArn it reads
    starting_position: str  # TRIM_HORIZON | LATEST
    batch_size: int = 100
    batching_window: float = 0  # MaximumBatchingWindowInSeconds
    report_batch_item_failures: bool = False
    bisect_on_error: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires
    maximum_record_age: int = -1  # seconds; -1: until the record expires
    on_failure: str | None = None  # logical id of the queue the failed batches' descriptions go to
    filters: tuple[dict, ...] = ()  # FilterCriteria patterns: a record passes if it matches one
    enabled: bool = True


@dataclass(frozen=True)
class Schedule:
    event: str
    expression: str


@dataclass
class Table:
    logical_id: str
    properties: dict

    @property
    def stream_view_type(self) -> str | None:
        """The StreamSpecification's view type; None when the table has no stream."""
        return (self.properties.get("StreamSpecification") or {}).get("StreamViewType")


@dataclass
class Queue:
    logical_id: str
    properties: dict

    @property
    def dlq(self) -> str | None:
        """Logical id of the dead-letter queue named in RedrivePolicy, if any."""
        policy = self.properties.get("RedrivePolicy")
        if not policy:
            return None
        target = policy.get("deadLetterTargetArn")
        if isinstance(target, dict) and "Fn::GetAtt" in target and target["Fn::GetAtt"][1] == "Arn":
            return target["Fn::GetAtt"][0]
        raise TemplateError(f"{self.logical_id}: RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn")

    @property
    def max_receive_count(self) -> int | None:
        policy = self.properties.get("RedrivePolicy")
        return int(policy["maxReceiveCount"]) if policy else None


@dataclass
class Function:
    logical_id: str
    code_uri: str
    handler: str  # module.function, e.g. app.handler
    timeout: int
    memory: int
    environment: dict  # variable -> raw template value (Globals merged with the function's own)
    layers: list[str]  # ContentUri of each layer, relative to the repo
    runtime: str = "python3.12"
    reserved_concurrency: Any = None  # raw ReservedConcurrentExecutions (resolve it): instances at most
    routes: list[Route] = field(default_factory=list)
    sqs_sources: list[SqsSource] = field(default_factory=list)
    stream_sources: list[StreamSource] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)

    @property
    def module_path(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return REPO_ROOT / self.code_uri / (module.replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass
class Template:
    raw: dict
    parameters: dict[str, str]  # name -> default ("" when there is none)
    tables: dict[str, Table]
    queues: dict[str, Queue]
    functions: dict[str, Function]

    @property
    def resources(self) -> dict:
        return self.raw.get("Resources", {})

    def queues_in_creation_order(self) -> list[Queue]:
        """Dead-letter queues first: a RedrivePolicy needs its target to exist."""
        return sorted(self.queues.values(), key=lambda q: q.dlq is not None)

    def dlq_ids(self) -> set[str]:
        """Dead-letter queues: the targets of redrive policies, of stream sources' OnFailure and
        of the functions' asynchronous OnFailure (EventInvokeConfig)."""
        return ({q.dlq for q in self.queues.values() if q.dlq}
                | {s.on_failure for fn in self.functions.values() for s in fn.stream_sources if s.on_failure}
                | {q for q in (self._async_failure_queue(f) for f in self.functions) if q})

    def _async_failure_queue(self, logical_id: str) -> str | None:
        config = self.resources[logical_id].get("Properties", {}).get("EventInvokeConfig") or {}
        target = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if isinstance(target, dict) and "Fn::GetAtt" in target and target["Fn::GetAtt"][0] in self.queues:
            return target["Fn::GetAtt"][0]
        return None

    @property
    def http_api_stage(self) -> Any:
        """The raw StageName of the template's HttpApi (resolve it with a Resolver); None if unset."""
        for resource in self.resources.values():
            if resource.get("Type") == HTTP_API_TYPE:
                return resource.get("Properties", {}).get("StageName")
        return None


class TemplateError(ValueError):
    pass


class NoSuchFunction(LookupError):
    """Not a function of the template (or not one with the event asked for)."""


def _function(logical_id: str, props: dict, glob: dict, resources: dict) -> Function:
    env = dict(glob.get("Environment", {}).get("Variables", {}))
    env.update(props.get("Environment", {}).get("Variables", {}))
    layers = []
    for layer in props.get("Layers", glob.get("Layers", [])):
        ref = layer.get("Ref") if isinstance(layer, dict) else None
        if ref not in resources or resources[ref].get("Type") != LAYER_TYPE:
            raise TemplateError(f"{logical_id}: layer {layer!r} is not a LayerVersion of this template")
        layers.append(resources[ref]["Properties"]["ContentUri"])
    fn = Function(
        logical_id=logical_id,
        code_uri=props.get("CodeUri", glob.get("CodeUri")),
        handler=props.get("Handler", glob.get("Handler")),
        timeout=int(props.get("Timeout", glob.get("Timeout", 3))),
        memory=int(props.get("MemorySize", glob.get("MemorySize", 128))),
        environment=env,
        layers=layers,
        runtime=props.get("Runtime", glob.get("Runtime", "python3.12")),
        reserved_concurrency=props.get("ReservedConcurrentExecutions"),
    )
    for name, ev in (props.get("Events") or {}).items():
        kind, ep = ev.get("Type"), ev.get("Properties", {})
        if kind == "HttpApi":
            if "Path" not in ep:
                raise TemplateError(f"{logical_id}.{name}: the local gateway needs an explicit Path")
            fn.routes.append(Route(method=ep.get("Method", "ANY").upper(), path=ep["Path"], event=name))
        elif kind == "SQS":
            queue = ep.get("Queue")
            if not (isinstance(queue, dict) and "Fn::GetAtt" in queue):
                raise TemplateError(f"{logical_id}.{name}: SQS Queue must be !GetAtt <Queue>.Arn")
            fn.sqs_sources.append(SqsSource(
                event=name,
                queue=queue["Fn::GetAtt"][0],
                batch_size=int(ep.get("BatchSize", 10)),
                report_batch_item_failures="ReportBatchItemFailures" in ep.get("FunctionResponseTypes", []),
                maximum_concurrency=(ep.get("ScalingConfig") or {}).get("MaximumConcurrency"),
            ))
        elif kind == "DynamoDB":
            fn.stream_sources.append(_stream_source(f"{logical_id}.{name}", name, ep))
        elif kind == "Schedule":
            fn.schedules.append(Schedule(event=name, expression=ep["Schedule"]))
        else:
            raise TemplateError(f"{logical_id}.{name}: event type {kind} is not run by the local stack")
    return fn


def _get_att(value: Any, attribute: str, where: str) -> str:
    if isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == attribute:
        return value["Fn::GetAtt"][0]
    raise TemplateError(f"{where} must be !GetAtt <resource>.{attribute}")


def _stream_source(where: str, name: str, ep: dict) -> StreamSource:
    unsupported = sorted(set(ep) & {"StartingPositionTimestamp", "TumblingWindowInSeconds"})
    if unsupported:
        raise TemplateError(f"{where}: {', '.join(unsupported)} is not run by the local stack")
    position = ep.get("StartingPosition")
    if position not in ("TRIM_HORIZON", "LATEST"):
        raise TemplateError(f"{where}: StartingPosition must be TRIM_HORIZON or LATEST locally")
    on_failure = ((ep.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    try:
        filters = tuple(json.loads(f["Pattern"]) for f in (ep.get("FilterCriteria") or {}).get("Filters") or [])
    except (KeyError, TypeError, ValueError):
        raise TemplateError(f"{where}: each FilterCriteria filter needs a JSON Pattern") from None
    return StreamSource(
        event=name,
        table=_get_att(ep.get("Stream"), "StreamArn", f"{where}: Stream"),
        starting_position=position,
        batch_size=int(ep.get("BatchSize", 100)),
        batching_window=float(ep.get("MaximumBatchingWindowInSeconds", 0)),
        report_batch_item_failures="ReportBatchItemFailures" in ep.get("FunctionResponseTypes", []),
        bisect_on_error=bool(ep.get("BisectBatchOnFunctionError", False)),
        maximum_retry_attempts=int(ep.get("MaximumRetryAttempts", -1)),
        maximum_record_age=int(ep.get("MaximumRecordAgeInSeconds", -1)),
        on_failure=_get_att(on_failure, "Arn", f"{where}: DestinationConfig.OnFailure.Destination")
        if on_failure is not None else None,
        filters=filters,
        enabled=bool(ep.get("Enabled", True)),
    )


def load(path: Path | str = TEMPLATE_PATH) -> Template:
    raw = load_yaml(path)
    resources = raw.get("Resources", {})
    glob = raw.get("Globals", {}).get("Function", {})
    parameters = {name: str(p.get("Default", "")) for name, p in (raw.get("Parameters") or {}).items()}
    tables, queues, functions = {}, {}, {}
    for logical_id, res in resources.items():
        kind, props = res.get("Type"), res.get("Properties", {})
        if kind == TABLE_TYPE:
            tables[logical_id] = Table(logical_id, props)
        elif kind == QUEUE_TYPE:
            queues[logical_id] = Queue(logical_id, props)
        elif kind == FUNCTION_TYPE:
            functions[logical_id] = _function(logical_id, props, glob, resources)
    template = Template(raw, parameters, tables, queues, functions)
    for fn in functions.values():
        for source in fn.sqs_sources:
            if source.queue not in queues:
                raise TemplateError(f"{fn.logical_id}.{source.event}: {source.queue} is not a queue of this template")
        for stream in fn.stream_sources:
            if stream.table not in tables or tables[stream.table].stream_view_type is None:
                raise TemplateError(f"{fn.logical_id}.{stream.event}: {stream.table} is not a table of this "
                                    "template with a StreamSpecification")
            if stream.on_failure is not None and stream.on_failure not in queues:
                raise TemplateError(f"{fn.logical_id}.{stream.event}: the OnFailure destination {stream.on_failure} "
                                    "is not a queue of this template")
    return template


# --- resolving values -----------------------------------------------------------------
class UnresolvableError(ValueError):
    pass


class NoValue(UnresolvableError):
    """The value is !Ref AWS::NoValue: the property is left out (see Resolver.resolve_optional)."""


@dataclass(frozen=True)
class LocalQueue:
    name: str
    url: str
    arn: str


_SUB = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Resolves template values against local resources.

    tables: logical id -> local table name; queues: logical id -> LocalQueue;
    parameters override the template's defaults; streams: table logical id -> stream ARN,
    for the tables created with a StreamSpecification.
    """

    def __init__(self, template: Template, tables: dict[str, str], queues: dict[str, LocalQueue],
                 region: str, parameters: dict[str, str] | None = None, streams: dict[str, str] | None = None):
        self.template = template
        self.tables = tables
        self.queues = queues
        self.streams = streams or {}
        self.region = region
        unknown = set(parameters or {}) - set(template.parameters)
        if unknown:
            raise UnresolvableError(f"parameter override(s) {sorted(unknown)} are not template parameters")
        self.parameters = {**template.parameters, **(parameters or {})}
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "scrm-local",
        }

    def table_arn(self, logical_id: str) -> str:
        return f"arn:{PARTITION}:dynamodb:{self.region}:{ACCOUNT_ID}:table/{self.tables[logical_id]}"

    def ref(self, name: str) -> str:
        if name == "AWS::NoValue":
            raise NoValue("!Ref AWS::NoValue")
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.tables:
            return self.tables[name]
        if name in self.queues:
            return self.queues[name].url
        raise UnresolvableError(f"!Ref {name}: not a parameter, table or queue of the template")

    def get_att(self, name: str, attribute: str) -> str:
        if name in self.queues and attribute in ("Arn", "QueueName", "QueueUrl"):
            q = self.queues[name]
            return {"Arn": q.arn, "QueueName": q.name, "QueueUrl": q.url}[attribute]
        if name in self.tables and attribute == "Arn":
            return self.table_arn(name)
        if name in self.streams and attribute == "StreamArn":
            return self.streams[name]
        raise UnresolvableError(f"!GetAtt {name}.{attribute}: not available locally")

    def sub(self, text: str, variables: dict | None = None) -> str:
        def one(match: re.Match) -> str:
            inner = match.group(1)
            if inner.startswith("!"):  # ${!Literal} is written as ${Literal}
                return "${" + inner[1:] + "}"
            if variables and inner in variables:
                return self.resolve(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                return self.get_att(*inner.split(".", 1))
            return self.ref(inner)

        return _SUB.sub(one, text)

    def resolve(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(*arg)
            if key == "Fn::Sub":
                return self.sub(arg) if isinstance(arg, str) else self.sub(arg[0], arg[1])
            if key == "Fn::If":
                condition, if_true, if_false = arg
                return self.resolve(if_true if self.condition(condition) else if_false)
            raise UnresolvableError(f"{key} is not resolved by the local stack")
        raise UnresolvableError(f"{value!r} is not a value the local stack can resolve")

    def resolve_optional(self, value: Any) -> str | None:
        """Like resolve, but None where the template leaves the property out (AWS::NoValue)."""
        try:
            return self.resolve(value)
        except NoValue:
            return None

    def condition(self, name: str) -> bool:
        """A condition of the template's Conditions section, with the parameters in force."""
        conditions = self.template.raw.get("Conditions") or {}
        if name not in conditions:
            raise UnresolvableError(f"no condition {name!r} in the template")
        return self._truth(conditions[name])

    def _truth(self, expression: Any) -> bool:
        if isinstance(expression, dict) and len(expression) == 1:
            (key, arg), = expression.items()
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::Not":
                return not self._truth(arg[0])
            if key == "Fn::And":
                return all(self._truth(a) for a in arg)
            if key == "Fn::Or":
                return any(self._truth(a) for a in arg)
        raise UnresolvableError(f"{expression!r} is not a condition the local stack can evaluate")

    def environment(self, fn: Function) -> dict[str, str]:
        env = {}
        for name, value in fn.environment.items():
            try:
                env[name] = self.resolve(value)
            except UnresolvableError as err:
                raise UnresolvableError(f"{fn.logical_id}: environment variable {name}: {err}") from None
        return env
