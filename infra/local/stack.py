"""The whole system on one machine, from template.yaml: what `make up` runs.

    python -m infra.local.stack        # foreground; Ctrl-C (or SIGTERM) stops everything

Closer to Lambda than one process could be, it runs:
  * a moto server (DynamoDB, SQS, Secrets Manager) in a process of its own, with the
    template's tables and queues (infra/local/moto_server.py);
  * every function in processes of its own, as Lambda runs each in sandboxes of its own:
    its own environment variables (its template variables and the Lambda runtime's, no
    one else's), its own Powertools Logger and service name, one invocation per instance,
    more instances when invocations overlap (infra/local/functions.py);
  * in this process: the WeCom simulator, an HTTP gateway for the HttpApi routes, and one
    poller per event source mapping (SQS queues, and the table's stream: infra/local/streams.py),
    which hand events to the functions' instances.
Everything listens on 127.0.0.1 only.

Environment (all optional):
  SCRM_MOTO_PORT          moto server port (default 0: any free port)
  SCRM_HTTP_PORT          gateway port (default 3000; 0: any free port)
  SCRM_SIM_PORT           WeCom simulator port (default 8900; 0: any free port)
  WECOM_API_BASE          use this WeCom API instead of starting the simulator
  SCRM_LOCAL_VISIBILITY   the queues' VisibilityTimeout locally, in seconds (default 3), or
                          "template" for the template's own values: with the template's 180 s
                          every retry, and the way to the dead-letter queue, takes minutes; a
                          queue whose template value is lower keeps it
  SCRM_LOCAL_CONCURRENCY  instances (processes) a function may have at once (default 4); a
                          function's ReservedConcurrentExecutions, when lower, wins
  SCRM_LOCAL_LOGS         a directory for the functions' logs, one file per instance under
                          <dir>/<FunctionId>/ (default: they print to this terminal)
  SCRM_LOCAL_STREAM_WINDOW  the stream sources' MaximumBatchingWindowInSeconds locally, at most
                          (default 1), so that a drain does not wait out the template's window
  SCRM_LOCAL_CORPS        JSON file with a list of {corp_id, token, encoding_aes_key, secret,
                          agent_id}; without it a throwaway demo corp is generated
  SCRM_PARAMETER_OVERRIDES  template parameters, as for `sam deploy`: "Key=Value Key2=Value2"
                          (OpsJwtIssuer / OpsJwtAudience set the local tokens' iss and aud)
  AWS_REGION / AWS_DEFAULT_REGION  kept if set (default us-east-1)

Routes with a JWT authorizer in the template (the ops API) are checked by the gateway as
API Gateway checks them. The stack is their identity provider: it makes an RSA key pair at
start, mints a token per registered corp (iss and aud from the template parameters, sub
"ops-local", "scrm:corp": the corp id, valid 12 hours), prints each one and hands it out
through `ops_token(corp_id)`. `python -m infra.local.stack` also writes the endpoints and the
tokens to .local/stack.json (removed when it stops), where the operator commands find them.

This process is set up as an operator's shell would be: os.environ points at the local
AWS and holds the variables every function agrees on (TABLE_NAME, the queue URLs, ...), so
tests, the demo and the operator commands can use the scrm package against the stack.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import string
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.local import template as tpl
from infra.local.functions import FunctionPool, lambda_environment
from infra.local.gateway import Gateway, JwtAuthorizer, Target
from infra.local.moto_server import MotoProcess
from infra.local.pollers import QueuePoller
from infra.local.runtime import LambdaContext
from infra.local.streams import StreamPoller

log = logging.getLogger("infra.local.stack")

SQS_DEFAULT_VISIBILITY = 30
# Queue properties about encryption at rest: the KMS key is not made locally.
ENCRYPTION_ONLY = ("KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled")
TEMPLATE_VISIBILITY = "template"  # as `visibility`: every queue keeps the template's VisibilityTimeout
DEFAULT_VISIBILITY = 3
DEFAULT_CONCURRENCY = 4
# Instances of functions that no HTTP route invokes run at this lower CPU priority: on Lambda
# every sandbox has CPU of its own, here all share a few cores, and a request waiting on the
# gateway (WeCom allows the callback 5 s) must not queue behind a backlog of queued work.
BACKGROUND_NICENESS = 5
DEMO_CORP_ID = "wwdemo0001"
DEMO_AGENT_ID = "1000002"
_ALNUM = string.ascii_letters + string.digits
STATE_FILE = tpl.REPO_ROOT / ".local" / "stack.json"
OPS_AUTHORIZER = "OpsJwt"  # the template's authorizer of the ops routes
OPS_TOKEN_TTL = 12 * 3600
OPS_SUBJECT = "ops-local"
CORP_CLAIM = "scrm:corp"
DEFAULT_IDENTITY_SOURCE = "$request.header.Authorization"


class LocalIdentityProvider:
    """Stands in for the issuer of the ops API's JWTs: one RSA key, made when the stack starts."""

    key_id = "scrm-local"

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def public_keys(self) -> dict[str, Any]:
        return {self.key_id: self._key.public_key()}

    def sign(self, claims: dict) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})


def demo_corp(corp_id: str = DEMO_CORP_ID):
    """A throwaway corp with random credentials in WeCom's formats."""
    from scrm.platform.credentials import CorpCredentials

    return CorpCredentials(
        corp_id=corp_id,
        token="".join(secrets.choice(_ALNUM) for _ in range(32)),
        encoding_aes_key="".join(secrets.choice(_ALNUM) for _ in range(43)),
        secret="".join(secrets.choice(_ALNUM) for _ in range(43)),
        agent_id=DEMO_AGENT_ID,
    )


def shared_environment(envs: dict[str, dict[str, str]]) -> dict[str, str]:
    """The variables whose value is the same in every function that has them (TABLE_NAME, the
    queue URLs, ...): what an operator's shell gets. Powertools' settings stay the functions'
    own: this process's logging is its own business (the demo keeps its output quiet)."""
    values: dict[str, set[str]] = {}
    for env in envs.values():
        for name, value in env.items():
            if not name.startswith("POWERTOOLS_"):
                values.setdefault(name, set()).add(value)
    return {name: next(iter(vals)) for name, vals in sorted(values.items()) if len(vals) == 1}


def _check_port(port: int, variable: str) -> None:
    """Fail clearly on a busy port; moto's server thread would exit and leave start() waiting forever."""
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise OSError(f"127.0.0.1:{port} is in use: stop what listens there or set {variable}") from None


def parse_overrides(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _visibility(value: int | str | None) -> int | str:
    if value is None:
        value = os.environ.get("SCRM_LOCAL_VISIBILITY", "").strip() or DEFAULT_VISIBILITY
    if value == TEMPLATE_VISIBILITY:
        return value
    return int(value)


def create_table_request(props: dict) -> dict:
    """CreateTable parameters from a table's template properties.

    Most are spelt alike; a stream is {StreamViewType} in CloudFormation and {StreamEnabled,
    StreamViewType} in the API. Encryption, point-in-time recovery and deletion policies have
    no local meaning."""
    request = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes",
                                     "LocalSecondaryIndexes", "BillingMode", "ProvisionedThroughput") if k in props}
    stream = props.get("StreamSpecification")
    if stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return request


# Values the stacks of this process put in os.environ, so that a second stack started while
# one runs (the end-to-end tests do) does not mistake them for the user's.
_SET_BY_STACKS: dict[str, set[str]] = {}


class LocalStack:
    def __init__(self, template_path: Path | str = tpl.TEMPLATE_PATH, *, moto_port: int | None = None,
                 http_port: int | None = None, sim_port: int | None = None, visibility: int | str | None = None,
                 corps: list | None = None, parameters: dict[str, str] | None = None,
                 state_file: Path | str | None = None, logs: Path | str | None = None,
                 concurrency: int | None = None, stream_window: float | None = None):
        self.template_path = Path(template_path)
        self.template = tpl.load(self.template_path)
        self.moto_port = _env_int("SCRM_MOTO_PORT", 0) if moto_port is None else moto_port
        self.http_port = _env_int("SCRM_HTTP_PORT", 3000) if http_port is None else http_port
        self.sim_port = _env_int("SCRM_SIM_PORT", 8900) if sim_port is None else sim_port
        self.visibility = _visibility(visibility)
        self.concurrency = _env_int("SCRM_LOCAL_CONCURRENCY", DEFAULT_CONCURRENCY) if concurrency is None \
            else concurrency
        logs = os.environ.get("SCRM_LOCAL_LOGS") or None if logs is None else logs
        self.logs = Path(logs).resolve() if logs else None  # None: the functions print to this terminal
        self.stream_window = _env_int("SCRM_LOCAL_STREAM_WINDOW", 1) if stream_window is None else stream_window
        self.parameters = parse_overrides(os.environ.get("SCRM_PARAMETER_OVERRIDES", "")) \
            if parameters is None else parameters
        self._corps_arg = corps
        self._demo_corp_ids: set[str] = set()  # generated here, so their secrets may be printed
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # An external WeCom API (no simulator) if the user set one; not one a running stack of
        # this process set for its own functions.
        given = os.environ.get("WECOM_API_BASE") or None
        self.wecom_api_base = None if given in _SET_BY_STACKS.get("WECOM_API_BASE", set()) else given
        self.state_file = Path(state_file) if state_file is not None else None
        self._state_written: Path | None = None  # a failed start must not remove another stack's file

        self.endpoint = ""
        self.api_base = ""
        self.sim = None
        self.corps: list = []
        self.queues: dict[str, tpl.LocalQueue] = {}
        self.table_names: dict[str, str] = {}
        self.stream_arns: dict[str, str] = {}  # table logical id -> its stream, for tables with one
        self.environments: dict[str, dict[str, str]] = {}  # each function's resolved template variables
        self.functions: dict[str, FunctionPool] = {}
        # In-process stand-ins for a function, by logical id (tests): called as handler(event, context)
        self.stand_ins: dict[str, Callable[[Any, Any], Any]] = {}
        self._moto: MotoProcess | None = None
        self._gateway: Gateway | None = None
        self._sources: list = []  # the pollers of the SQS event source mappings
        self._stream_pollers: list[StreamPoller] = []  # and of the DynamoDB stream ones
        self._stopping = threading.Event()
        self._saved_env: dict[str, str | None] = {}
        self._activity = threading.Condition()
        self._in_flight = 0
        self._invocations = 0
        self._started = False
        self.identity: LocalIdentityProvider | None = None
        self.ops_authorizer: JwtAuthorizer | None = None
        self._ops_tokens: dict[str, str] = {}

    # --- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        self._stopping.clear()
        try:
            _check_port(self.moto_port, "SCRM_MOTO_PORT")
            _check_port(self.http_port, "SCRM_HTTP_PORT")
            if not self.wecom_api_base:
                _check_port(self.sim_port, "SCRM_SIM_PORT")
            self._start_moto()
            self._create_tables()
            self._create_queues()
            self._start_simulator()
            self._set_function_environment()
            self._start_functions()
            self._start_gateway()
            self._register_corps()
            self._mint_ops_tokens()
            self._start_event_sources()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._stopping.set()
        self._remove_state()
        for source in self._sources:
            source.join(timeout=15)  # an invocation in progress is allowed to finish
        self._sources = []
        for stream_poller in self._stream_pollers:
            stream_poller.stop(timeout=15)
        self._stream_pollers = []
        if self._gateway:
            self._gateway.stop()
            self._gateway = None
        for pool in self.functions.values():
            pool.close()
        self.functions = {}
        if self.sim:
            self.sim.stop()
            self.sim = None
        if self._moto:
            self._moto.stop()
            self._moto = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        _forget_scrm_state()
        self._started = False

    @property
    def running(self) -> bool:
        return self._started

    def _setenv(self, name: str, value: str) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value
        _SET_BY_STACKS.setdefault(name, set()).add(value)

    # --- resources ----------------------------------------------------------------------
    def _start_moto(self) -> None:
        self._moto = MotoProcess(self.moto_port, log=self.logs / "moto.log" if self.logs else None)
        if self.logs:
            self.logs.mkdir(parents=True, exist_ok=True)
        self.endpoint = self._moto.start()
        # This process's own clients (pollers, tests, operator commands) reach it too.
        self._setenv("AWS_ENDPOINT_URL", self.endpoint)
        self._setenv("AWS_ACCESS_KEY_ID", "testing")
        self._setenv("AWS_SECRET_ACCESS_KEY", "testing")
        self._setenv("AWS_REGION", self.region)
        self._setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION") or self.region)

    def _client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region)

    def _resolver(self) -> tpl.Resolver:
        return tpl.Resolver(self.template, self.table_names, self.queues, self.region, self.parameters,
                            streams=self.stream_arns)

    def _create_tables(self) -> None:
        ddb = self._client("dynamodb")
        for table in self.template.tables.values():
            props = table.properties
            name = self._resolver().resolve(props["TableName"]) if "TableName" in props else table.logical_id
            self.table_names[table.logical_id] = name
            try:
                description = ddb.create_table(TableName=name, **create_table_request(props))["TableDescription"]
            except ddb.exceptions.ResourceInUseException:
                description = ddb.describe_table(TableName=name)["Table"]
            if description.get("LatestStreamArn"):
                self.stream_arns[table.logical_id] = description["LatestStreamArn"]
            ttl = props.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"], "Enabled": True})

    def _create_queues(self) -> None:
        sqs = self._client("sqs")
        for queue in self.template.queues_in_creation_order():
            props = dict(queue.properties)
            resolver = self._resolver()
            name = resolver.resolve(props.pop("QueueName")) if "QueueName" in props else queue.logical_id
            tags = {t["Key"]: resolver.resolve(t["Value"]) for t in props.pop("Tags", [])}
            visibility = int(resolver.resolve(props.get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY)))
            props["VisibilityTimeout"] = visibility if self.visibility == TEMPLATE_VISIBILITY \
                else min(visibility, self.visibility)
            for key in ENCRYPTION_ONLY:  # the deployed queues' keys have no local meaning
                props.pop(key, None)
            attributes = {}
            for key, value in props.items():
                if key == "RedrivePolicy":
                    value = json.dumps({k: resolver.resolve(v) for k, v in value.items()})
                attributes[key] = resolver.resolve(value)
            url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.queues[queue.logical_id] = tpl.LocalQueue(name=name, url=url, arn=arn)

    def _start_simulator(self) -> None:
        if self.wecom_api_base:
            return
        from infra.local.wecom_sim import WeComSimulator

        self.sim = WeComSimulator()
        self.sim.start("127.0.0.1", self.sim_port)

    # --- functions ----------------------------------------------------------------------
    def _set_function_environment(self) -> None:
        resolver = self._resolver()
        self.api_base = self.wecom_api_base or f"{self.sim.base_url}/cgi-bin"
        for fn in self.template.functions.values():
            env = resolver.environment(fn)
            if "WECOM_API_BASE" in env:
                env["WECOM_API_BASE"] = self.api_base
            self.environments[fn.logical_id] = env
        for name, value in shared_environment(self.environments).items():
            self._setenv(name, value)
        for layer in {layer for fn in self.template.functions.values() for layer in fn.layers}:
            path = str(tpl.REPO_ROOT / layer)  # this process uses the shared package as an operator
            if path not in sys.path:
                sys.path.insert(0, path)
        _forget_scrm_state()

    def max_instances(self, logical_id: str) -> int:
        """The function's concurrency locally: the local cap, or its reserved concurrency if lower."""
        reserved = self.template.functions[logical_id].reserved_concurrency
        reserved = self._resolver().resolve_optional(reserved) if reserved is not None else None
        limit = self.concurrency if reserved is None else min(self.concurrency, int(reserved))
        return max(1, limit)

    def _start_functions(self) -> None:
        for fn in self.template.functions.values():
            environment = lambda_environment(fn, self.environments[fn.logical_id], region=self.region,
                                             endpoint=self.endpoint, runtime=fn.runtime)
            self.functions[fn.logical_id] = FunctionPool(fn, environment, region=self.region,
                                                         max_instances=self.max_instances(fn.logical_id),
                                                         logs=self.logs,
                                                         niceness=0 if fn.routes else BACKGROUND_NICENESS)
        self.warm({name: 1 for name in self.functions})  # the first request meets no cold start

    def warm(self, instances: dict[str, int] | None = None) -> None:
        """Start instances now, all at once, so that a burst meets no cold start (as provisioned
        concurrency does): `instances` by function, each function's maximum if not given."""
        wanted = instances if instances is not None else {name: pool.max_instances
                                                          for name, pool in self.functions.items()}
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_collect(errors, self.functions[name].warm, count), name=f"warm-{name}")
                   for name, count in wanted.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def invoke(self, logical_id: str, event: dict) -> Any:
        """Invoke a function as Lambda would (synchronously) and return its result.

        A failed invocation raises FunctionError with Lambda's errorType: the handler's
        exception type, Sandbox.Timedout past the function's Timeout, Runtime.ExitError if
        its instance died."""
        if logical_id not in self.functions:
            raise tpl.NoSuchFunction(f"no function {logical_id!r} (known: {', '.join(self.functions)})")
        with self._activity:
            self._in_flight += 1
            self._invocations += 1
        try:
            stand_in = self.stand_ins.get(logical_id)
            if stand_in is not None:
                fn = self.template.functions[logical_id]
                return stand_in(event, LambdaContext.local(fn.logical_id, fn.memory, fn.timeout, self.region))
            return self.functions[logical_id].invoke(event)
        finally:
            with self._activity:
                self._in_flight -= 1
                self._activity.notify_all()

    def scheduled_event(self, logical_id: str, schedule: tpl.Schedule) -> dict:
        """What EventBridge sends for a Schedule event."""
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": tpl.ACCOUNT_ID,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{tpl.ACCOUNT_ID}:rule/scrm-local-{logical_id}{schedule.event}"],
            "detail": {},
        }

    def fire_schedule(self, logical_id: str) -> Any:
        """Run a function's Schedule event now (locally nothing runs on a timer)."""
        fn = self.template.functions.get(logical_id)
        if fn is None or not fn.schedules:
            raise tpl.NoSuchFunction(f"{logical_id!r} is not a function with a Schedule event")
        result = None
        for schedule in fn.schedules:
            result = self.invoke(logical_id, self.scheduled_event(logical_id, schedule))
        return result

    # --- WeCom corps, HTTP, pollers -----------------------------------------------------
    def _register_corps(self) -> None:
        from scrm.platform import credentials
        from scrm.store import corps

        if self._corps_arg is not None:
            self.corps = list(self._corps_arg)
        elif os.environ.get("SCRM_LOCAL_CORPS"):
            with open(os.environ["SCRM_LOCAL_CORPS"], encoding="utf-8") as fh:
                self.corps = [credentials.CorpCredentials.from_json(item) for item in json.load(fh)]
        else:
            self.corps = [demo_corp()]
            self._demo_corp_ids = {DEMO_CORP_ID}
        for creds in self.corps:
            corps.register(creds)
            if self.sim:
                self.sim.add_corp(creds.corp_id, creds.secret, creds.token, creds.encoding_aes_key,
                                  int(creds.agent_id), callback_url=self.callback_url(creds.corp_id))
                if creds.corp_id in self._demo_corp_ids:
                    from infra.local.demo import seed_store

                    seed_store(self.sim, creds.corp_id)  # someone to add customers to
        credentials.forget_cache()

    def callback_url(self, corp_id: str) -> str:
        return f"{self.gateway_url}/wecom/callback/{corp_id}"

    def _authorizers(self) -> dict[tuple[str, str], JwtAuthorizer]:
        """(function, event) -> the JWT authorizer of that route, as the template assigns them:
        the event's Auth.Authorizer, else its HttpApi's DefaultAuthorizer; NONE means none."""
        resources = self.template.resources
        built: dict[str, JwtAuthorizer] = {}
        found = {}
        for fn in self.template.functions.values():
            events = resources[fn.logical_id].get("Properties", {}).get("Events") or {}
            for route in fn.routes:
                props = events[route.event].get("Properties", {})
                api_id = props.get("ApiId")
                api = resources.get(api_id.get("Ref"), {}) if isinstance(api_id, dict) else {}
                auth = api.get("Properties", {}).get("Auth") or {}
                name = (props.get("Auth") or {}).get("Authorizer", auth.get("DefaultAuthorizer"))
                if name in (None, "NONE"):
                    continue
                if name not in built:
                    built[name] = self._jwt_authorizer(name, (auth.get("Authorizers") or {}).get(name))
                found[(fn.logical_id, route.event)] = built[name]
        return found

    def _jwt_authorizer(self, name: str, config: dict | None) -> JwtAuthorizer:
        if not config or "JwtConfiguration" not in config:
            raise tpl.TemplateError(f"authorizer {name}: the local gateway runs JWT authorizers only")
        source = config.get("IdentitySource", DEFAULT_IDENTITY_SOURCE)
        if not source.startswith("$request.header."):
            raise tpl.TemplateError(f"authorizer {name}: IdentitySource {source!r} is not a header")
        resolver, jwt_config = self._resolver(), config["JwtConfiguration"]
        return JwtAuthorizer(name=name, issuer=resolver.resolve(jwt_config["issuer"]),
                             audience=tuple(resolver.resolve(a) for a in jwt_config.get("audience") or []),
                             keys=self.identity.public_keys, header=source.removeprefix("$request.header.").lower())

    def _start_gateway(self) -> None:
        self.identity = LocalIdentityProvider()
        authorizers = self._authorizers()
        self.ops_authorizer = next((a for a in authorizers.values() if a.name == OPS_AUTHORIZER), None)
        targets = [Target(route, fn.logical_id, authorizers.get((fn.logical_id, route.event)))
                   for fn in self.template.functions.values() for route in fn.routes]
        stage = self.template.http_api_stage
        stage = self._resolver().resolve(stage) if stage is not None else None
        self._gateway = Gateway(targets, self.invoke, self, stage, self.http_port)
        self._gateway.start()

    def _mint_ops_tokens(self) -> None:
        if self.ops_authorizer is not None:
            self._ops_tokens = {c.corp_id: self.mint_token(self.ops_claims(c.corp_id)) for c in self.corps}

    def _event_sources(self) -> list:
        """One poller per event source mapping of the template, each handing its batches to
        `self.invoke` from this process, as Lambda's pollers run outside the function.

        A poller offers start(); join(timeout), once `self._stopping` is set; and idle(): no
        batch in hand and nothing left to read, which drain() asks of every poller."""
        sources = []
        for fn in self.template.functions.values():
            for source in fn.sqs_sources:
                limit = self.max_instances(fn.logical_id)
                if source.maximum_concurrency is not None:
                    limit = min(limit, int(self._resolver().resolve(source.maximum_concurrency)))
                sources.append(QueuePoller(fn.logical_id, source, self.queues[source.queue], self.endpoint,
                                           self.region, self.invoke, self._stopping, concurrency=limit))
        return sources

    def _stream_sources(self) -> list[StreamPoller]:
        """One stream poller per DynamoDB stream event source (infra.local.streams): it reads the
        table's stream through the moto server and hands batches to `self.invoke`. drain() waits
        until each has passed over its stream, finding nothing, after the last invocation."""
        pollers = []
        for fn in self.template.functions.values():
            for stream in fn.stream_sources:
                on_failure = self.queues[stream.on_failure].url if stream.on_failure else None
                pollers.append(StreamPoller(fn.logical_id, stream, self.stream_arns[stream.table], self.invoke,
                                            endpoint=self.endpoint, region=self.region, on_failure_url=on_failure,
                                            batching_window=min(stream.batching_window, self.stream_window)))
        return pollers

    def _start_event_sources(self) -> None:
        self._sources = self._event_sources()
        self._stream_pollers = self._stream_sources()
        for source in [*self._sources, *self._stream_pollers]:
            source.start()

    def stream_arn(self, table_logical_id: str) -> str:
        """The stream of one of the template's tables (created with a StreamSpecification)."""
        return self.stream_arns[table_logical_id]

    # --- what tests, the demo and /_local/ use --------------------------------------------
    def ops_claims(self, corp_id: str, now: float | None = None) -> dict:
        """The claims of a valid ops token of `corp_id` (tests vary them to make invalid ones)."""
        if self.ops_authorizer is None:
            raise LookupError(f"the template has no {OPS_AUTHORIZER} authorizer")
        issued = int(time.time() if now is None else now)
        return {"iss": self.ops_authorizer.issuer, "aud": self.ops_authorizer.audience[0], "sub": OPS_SUBJECT,
                CORP_CLAIM: corp_id, "iat": issued, "exp": issued + OPS_TOKEN_TTL}

    def mint_token(self, claims: dict) -> str:
        """A JWT signed with the stack's key: the gateway accepts it if the claims are right."""
        return self.identity.sign(claims)

    def ops_token(self, corp_id: str) -> str:
        """The ops API token of a registered corp, minted at start."""
        if corp_id not in self._ops_tokens:
            raise LookupError(f"no ops token for {corp_id!r} (tokens: {', '.join(self._ops_tokens) or 'none'})")
        return self._ops_tokens[corp_id]

    def state(self) -> dict:
        """Where everything listens, for other processes (infra/scripts/target.py reads it)."""
        return {"aws_endpoint_url": self.endpoint, "region": self.region, "table_name": self.table_name,
                "queue_urls": self.queue_urls, "gateway_url": self.gateway_url,
                "sim_url": self.sim.base_url if self.sim else None, "wecom_api_base": self.api_base,
                "ops_tokens": dict(self._ops_tokens)}

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        # owner-only: it holds bearer tokens
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.state(), fh, indent=2)
        self._state_written = self.state_file

    def _remove_state(self) -> None:
        if self._state_written is not None:
            self._state_written.unlink(missing_ok=True)
            self._state_written = None

    @property
    def gateway_url(self) -> str:
        return self._gateway.url

    @property
    def queue_urls(self) -> dict[str, str]:
        return {logical_id: q.url for logical_id, q in self.queues.items()}

    @property
    def table_name(self) -> str:
        if len(self.table_names) != 1:
            raise LookupError(f"the template has {len(self.table_names)} tables; use table_names")
        return next(iter(self.table_names.values()))

    def queue_depths(self, logical_ids: set[str] | None = None) -> dict[str, dict[str, int]]:
        sqs = self._client("sqs")
        depths = {}
        for logical_id, queue in self.queues.items():
            if logical_ids is not None and logical_id not in logical_ids:
                continue
            attrs = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"])["Attributes"]
            depths[logical_id] = {
                "visible": int(attrs["ApproximateNumberOfMessages"]),
                "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
                "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"]),
            }
        return depths

    def aws_requests(self, function: str | None = None) -> Counter:
        """The requests the moto server has served so far, by "service:Operation": those of
        one function's instances, or of everyone (this process included)."""
        return self._moto.request_counts(function)

    def health(self) -> dict:
        return {
            "status": "ok",
            "functions": sorted(self.functions),
            "instances": {name: pool.pids() for name, pool in self.functions.items()},
            "tables": self.table_names,
            "queues": self.queue_urls,
            "wecom_api_base": self.api_base,
            "corps": [c.corp_id for c in self.corps],
        }

    def drain(self, timeout: float = 30) -> None:
        """Return once no invocation runs and every event source is idle (its queue or stream
        read to the end, no batch in hand), with nothing started in between.

        Failed messages count as not drained until they succeed or reach the dead-letter
        queue, so this also waits for retries (each one VisibilityTimeout later)."""
        deadline = time.monotonic() + timeout
        mark, counted = time.monotonic(), None
        while True:
            with self._activity:
                busy, seen = self._in_flight, self._invocations
            if seen != counted:  # invocations ended since the last look: their writes are on the streams
                mark, counted = time.monotonic(), seen
            waiting = [] if busy else [source for source in self._sources if not source.idle()] + [
                poller for poller in self._stream_pollers if not poller.caught_up_since(mark)]
            if busy == 0 and not waiting:
                with self._activity:
                    # Nothing started meanwhile that could have sent a message or written an item.
                    if self._in_flight == 0 and self._invocations == seen:
                        return
            if time.monotonic() > deadline:
                sources = {s.queue.name if hasattr(s, "queue") else f"stream of {s.function}" for s in waiting}
                raise TimeoutError(f"not drained after {timeout} s: {busy} invocation(s) running, "
                                   f"not idle: {sorted(sources) or 'none'}; queues {self.queue_depths()}")
            with self._activity:
                self._activity.wait(0.1)

    def describe(self) -> str:
        lines = [f"SCRM local stack from {self.template_path}",
                 f"  AWS (moto: DynamoDB, SQS, Secrets Manager)  {self.endpoint}  (process {self._moto.pid})",
                 f"  HTTP API                                    {self.gateway_url}"]
        targets = self._gateway.targets if self._gateway else []
        authorized = {(t.function, t.route.event) for t in targets if t.authorizer}
        for fn in self.template.functions.values():
            for route in fn.routes:
                jwt_mark = "  (JWT)" if (fn.logical_id, route.event) in authorized else ""
                lines.append(f"    {route.method:<6} {route.path:<42} -> {fn.logical_id}{jwt_mark}")
        lines.append("    GET    /_local/health | GET /_local/queues | POST /_local/schedules/<FunctionId>")
        wecom = self.sim.base_url if self.sim else f"{self.wecom_api_base} (WECOM_API_BASE; no simulator)"
        lines.append(f"  WeCom API                                   {wecom}")
        for logical_id, name in self.table_names.items():
            lines.append(f"  table {logical_id}: {name}")
        for queue in self.template.queues_in_creation_order():
            extra = f" -> {queue.dlq} after {queue.max_receive_count} receives" if queue.dlq else ""
            lines.append(f"  queue {queue.logical_id}: {self.queues[queue.logical_id].url}{extra}")
        where = f"logs in {self.logs}/<FunctionId>/" if self.logs else "logs here (SCRM_LOCAL_LOGS: to files)"
        lines.append(f"  functions: one process per instance, up to {self.concurrency} each "
                     f"(SCRM_LOCAL_CONCURRENCY); {where}")
        for name, pool in self.functions.items():
            lines.append(f"    {name:<24} up to {pool.max_instances} instance(s), warm: {pool.pids()['idle']}")
        for source in self._sources:
            if isinstance(source, QueuePoller):
                lines.append(f"  poller {source.queue.name} -> {source.function} (batch {source.source.batch_size}, "
                             f"{source.concurrency} in flight"
                             f"{', ReportBatchItemFailures' if source.source.report_batch_item_failures else ''})")
        for poller in self._stream_pollers:
            stream = poller.source
            lines.append(f"  stream {stream.table} -> {poller.function} (batch {stream.batch_size}, window "
                         f"{poller.batching_window:g} s{', bisect' if stream.bisect_on_error else ''}, retries "
                         f"{stream.maximum_retry_attempts}{', on failure -> ' + stream.on_failure if stream.on_failure else ''})")
        for fn in self.template.functions.values():
            for schedule in fn.schedules:
                lines.append(f"  schedule {fn.logical_id} {schedule.expression}: run it with "
                             f"curl -X POST {self.gateway_url}/_local/schedules/{fn.logical_id}")
        lines.append("  queue VisibilityTimeout as in the template (SCRM_LOCAL_VISIBILITY)"
                     if self.visibility == TEMPLATE_VISIBILITY else
                     f"  queue VisibilityTimeout at most {self.visibility} s (SCRM_LOCAL_VISIBILITY)")
        for creds in self.corps:
            lines.append(f"  corp {creds.corp_id}: callback URL {self.callback_url(creds.corp_id)}")
            if creds.corp_id in self._demo_corp_ids:
                lines += [f"    token {creds.token}  EncodingAESKey {creds.encoding_aes_key}",
                          f"    secret {creds.secret}  agent_id {creds.agent_id}  (throwaway demo credentials)"]
            if creds.corp_id in self._ops_tokens:
                lines.append(f"  ops token for {creds.corp_id}: {self._ops_tokens[creds.corp_id]}")
        if self._ops_tokens:
            lines.append(f"    curl -H 'Authorization: Bearer <token>' {self.gateway_url}/ops/stores")
        lines += ["  use it from another shell:",
                  f"    export AWS_ENDPOINT_URL={self.endpoint} AWS_ACCESS_KEY_ID=testing "
                  f"AWS_SECRET_ACCESS_KEY=testing AWS_REGION={self.region}"]
        return "\n".join(lines)


def _collect(errors: list[BaseException], call: Callable, *args: Any) -> Callable[[], None]:
    """`call(*args)` for a thread, its exception kept in `errors`."""
    def run() -> None:
        try:
            call(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised by whoever joins the thread
            errors.append(exc)

    return run


def _forget_scrm_state() -> None:
    """Drop what scrm read from the environment or built from it, if it was imported already.

    scrm reads settings once per process; a test session may import it before the stack
    sets the environment (or keep it after the stack restored the environment)."""
    if "scrm.platform.config" in sys.modules:
        sys.modules["scrm.platform.config"].settings.cache_clear()
    if "scrm.platform.credentials" in sys.modules:
        sys.modules["scrm.platform.credentials"].forget_cache()
    if "scrm.store.inbox" in sys.modules:
        sys.modules["scrm.store.inbox"].reset_clients()
    if "scrm.wecom.apis.client" in sys.modules:
        sys.modules["scrm.wecom.apis.client"].forget_caches()
    if "scrm.store.once" in sys.modules:
        sys.modules["scrm.store.once"].forget_connection()
    if "scrm.entry.ops.auth" in sys.modules:
        sys.modules["scrm.entry.ops.auth"].forget_cache()
    if "scrm.domain.coupons" in sys.modules:
        sys.modules["scrm.domain.coupons"].forget_templates()
    if "scrm.entry.ops.idempotency" in sys.modules:
        sys.modules["scrm.entry.ops.idempotency"].forget_clients()
    if "scrm.store.models" in sys.modules:
        entity = sys.modules["scrm.store.models"].Entity
        if os.environ.get("TABLE_NAME"):
            entity.Meta.table_name = os.environ["TABLE_NAME"]  # what the models read at import
        # PynamoDB caches a connection (with its endpoint) per model class.
        models = [entity]
        while models:
            model = models.pop()
            model._connection = None
            models += model.__subclasses__()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("infra.local").setLevel(logging.INFO)  # requests served, failed batches
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalStack(state_file=STATE_FILE) as stack:
        print(stack.describe(), flush=True)
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping…", flush=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
