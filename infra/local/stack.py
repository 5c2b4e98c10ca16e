"""The whole system on one machine, from template.yaml: what `make up` runs.

    python -m infra.local.stack        # foreground; Ctrl-C (or SIGTERM) stops everything

One process holds it all: a moto server (DynamoDB with its streams, SQS, Secrets Manager)
with the template's tables and queues, the WeCom simulator, an HTTP gateway for the HttpApi
routes, one poller per SQS event source and per DynamoDB stream event source
(infra.local.streams), and the functions imported in-process and called with real Lambda
event shapes. Everything listens on 127.0.0.1 only.

Environment (all optional):
  SCRM_MOTO_PORT          moto server port (default 0: any free port)
  SCRM_HTTP_PORT          gateway port (default 3000; 0: any free port)
  SCRM_SIM_PORT           WeCom simulator port (default 8900; 0: any free port)
  WECOM_API_BASE          use this WeCom API instead of starting the simulator
  SCRM_LOCAL_VISIBILITY   the queues' VisibilityTimeout locally, in seconds (default 3): with the
                          template's 180 s every retry, and the way to the dead-letter queue, would
                          take minutes; a queue whose template value is lower keeps it
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

The functions share one process, so os.environ holds the union of their variables. A
variable whose value differs between functions is set to each function's own value while
its module is imported (Powertools reads POWERTOOLS_SERVICE_NAME then, building Logger,
Metrics and Tracer); any other such variable is also set during each invocation of that
function, under a lock that makes those invocations run one at a time. With the current
template only POWERTOOLS_SERVICE_NAME differs, so invocations run concurrently, as separate
Lambdas would. (scrm.platform.observability's Logger is built once per process, so log lines carry
the service name of the function imported first.)
"""
from __future__ import annotations

import importlib.util
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.local import template as tpl
from infra.local.gateway import Gateway, JwtAuthorizer, Target
from infra.local.moto_server import LocalMotoServer
from infra.local.pollers import QueuePoller
from infra.local.streams import StreamPoller

log = logging.getLogger("infra.local.stack")

# Read when Powertools objects are built at import, never during an invocation.
READ_AT_IMPORT = frozenset({"POWERTOOLS_SERVICE_NAME"})
SQS_DEFAULT_VISIBILITY = 30
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


class LambdaContext:
    """The attributes of the Lambda context object that functions and Powertools read."""

    def __init__(self, fn: tpl.Function, region: str):
        self.function_name = fn.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{tpl.ACCOUNT_ID}:function:{fn.logical_id}"
        self.memory_limit_in_mb = fn.memory
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{fn.logical_id}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self._deadline = time.monotonic() + fn.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


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


def plan_environment(envs: dict[str, dict[str, str]]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(variables every function agrees on, per function: the ones it must set per invocation)."""
    values: dict[str, set[str]] = {}
    for env in envs.values():
        for name, value in env.items():
            values.setdefault(name, set()).add(value)
    agreed = {name for name, vals in values.items() if len(vals) == 1}
    shared = {name: value for env in envs.values() for name, value in env.items() if name in agreed}
    per_call = {fn: {k: v for k, v in env.items() if k not in agreed and k not in READ_AT_IMPORT}
                for fn, env in envs.items()}
    return shared, per_call


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


class LocalStack:
    def __init__(self, template_path: Path | str = tpl.TEMPLATE_PATH, *, moto_port: int | None = None,
                 http_port: int | None = None, sim_port: int | None = None, visibility: int | None = None,
                 corps: list | None = None, parameters: dict[str, str] | None = None,
                 state_file: Path | str | None = None, stream_window: float | None = None):
        self.template_path = Path(template_path)
        self.template = tpl.load(self.template_path)
        self.moto_port = _env_int("SCRM_MOTO_PORT", 0) if moto_port is None else moto_port
        self.http_port = _env_int("SCRM_HTTP_PORT", 3000) if http_port is None else http_port
        self.sim_port = _env_int("SCRM_SIM_PORT", 8900) if sim_port is None else sim_port
        self.visibility = _env_int("SCRM_LOCAL_VISIBILITY", 3) if visibility is None else visibility
        self.stream_window = _env_int("SCRM_LOCAL_STREAM_WINDOW", 1) if stream_window is None else stream_window
        self.parameters = parse_overrides(os.environ.get("SCRM_PARAMETER_OVERRIDES", "")) \
            if parameters is None else parameters
        self._corps_arg = corps
        self._demo_corp_ids: set[str] = set()  # generated here, so their secrets may be printed
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.wecom_api_base = os.environ.get("WECOM_API_BASE") or None  # an external WeCom API: no simulator
        self.state_file = Path(state_file) if state_file is not None else None
        self._state_written: Path | None = None  # a failed start must not remove another stack's file

        self.endpoint = ""
        self.api_base = ""
        self.sim = None
        self.corps: list = []
        self.queues: dict[str, tpl.LocalQueue] = {}
        self.table_names: dict[str, str] = {}
        self.environments: dict[str, dict[str, str]] = {}
        self._per_call_env: dict[str, dict[str, str]] = {}
        self._handlers: dict[str, Any] = {}
        self._moto: LocalMotoServer | None = None
        self._gateway: Gateway | None = None
        self._pollers: list[QueuePoller] = []
        self._stream_pollers: list[StreamPoller] = []
        self._stopping = threading.Event()
        self._env_lock = threading.Lock()
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
            self._load_functions()
            self._start_gateway()
            self._register_corps()
            self._mint_ops_tokens()
            self._start_pollers()
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
        for poller in self._pollers:
            poller.join(timeout=15)  # an invocation in progress is allowed to finish
        self._pollers = []
        for stream_poller in self._stream_pollers:
            stream_poller.stop(timeout=15)
        self._stream_pollers = []
        if self._gateway:
            self._gateway.stop()
            self._gateway = None
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

    def _setenv(self, name: str, value: str) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    # --- resources ----------------------------------------------------------------------
    def _start_moto(self) -> None:
        self._moto = LocalMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per poll otherwise
        self._setenv("AWS_ENDPOINT_URL", self.endpoint)
        self._setenv("AWS_ACCESS_KEY_ID", "testing")
        self._setenv("AWS_SECRET_ACCESS_KEY", "testing")
        self._setenv("AWS_REGION", self.region)
        self._setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION") or self.region)

    def _client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region)

    def _resolver(self) -> tpl.Resolver:
        return tpl.Resolver(self.template, self.table_names, self.queues, self.region, self.parameters)

    def _create_tables(self) -> None:
        ddb = self._client("dynamodb")
        for table in self.template.tables.values():
            props = table.properties
            name = self._resolver().resolve(props["TableName"]) if "TableName" in props else table.logical_id
            self.table_names[table.logical_id] = name
            # The properties CloudFormation and the CreateTable API spell alike; encryption,
            # point-in-time recovery and deletion policies have no local meaning.
            request = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes",
                                             "LocalSecondaryIndexes", "BillingMode", "ProvisionedThroughput")
                       if k in props}
            if table.stream_view_type:
                request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": table.stream_view_type}
            try:
                ddb.create_table(TableName=name, **request)
            except ddb.exceptions.ResourceInUseException:
                continue
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
            props["VisibilityTimeout"] = min(int(props.get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY)),
                                             self.visibility)
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
        shared, self._per_call_env = plan_environment(self.environments)
        for name, value in shared.items():
            self._setenv(name, value)
        for layer in {layer for fn in self.template.functions.values() for layer in fn.layers}:
            path = str(tpl.REPO_ROOT / layer)  # where Lambda unpacks a layer, /opt/python, is on sys.path
            if path not in sys.path:
                sys.path.insert(0, path)
        _forget_scrm_state()

    @contextmanager
    def _environment(self, env: dict[str, str]) -> Iterator[None]:
        """`env` set in os.environ for the duration, under the lock (os.environ is process-wide)."""
        if not env:
            yield
            return
        with self._env_lock:
            previous = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            try:
                yield
            finally:
                for name, value in previous.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def _load_functions(self) -> None:
        for fn in self.template.functions.values():
            # A unique module name: every function's file is called app.py.
            spec = importlib.util.spec_from_file_location(f"scrm_local_fn_{fn.logical_id}", fn.module_path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            with self._environment(self.environments[fn.logical_id]):
                spec.loader.exec_module(module)
            self._handlers[fn.logical_id] = getattr(module, fn.handler_name)

    def invoke(self, logical_id: str, event: dict) -> Any:
        """Call a function's handler as Lambda would; its exception propagates."""
        if logical_id not in self._handlers:
            raise tpl.NoSuchFunction(f"no function {logical_id!r} (known: {', '.join(self._handlers)})")
        fn = self.template.functions[logical_id]
        context = LambdaContext(fn, self.region)
        with self._activity:
            self._in_flight += 1
            self._invocations += 1
        started = time.monotonic()
        try:
            with self._environment(self._per_call_env[logical_id]):
                return self._handlers[logical_id](event, context)
        finally:
            elapsed = time.monotonic() - started
            if elapsed > fn.timeout:
                log.warning("%s ran %.1f s, over its Timeout of %d s: Lambda would have stopped it",
                            logical_id, elapsed, fn.timeout)
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

    def _start_pollers(self) -> None:
        for fn in self.template.functions.values():
            for source in fn.sqs_sources:
                poller = QueuePoller(fn.logical_id, source, self.queues[source.queue], self.endpoint, self.region,
                                     self.invoke, self._stopping)
                poller.start()
                self._pollers.append(poller)
            for stream in fn.stream_sources:
                stream_poller = StreamPoller(
                    fn.logical_id, stream, self.stream_arn(stream.table), self.invoke, endpoint=self.endpoint,
                    region=self.region, on_failure_url=self.queues[stream.on_failure].url if stream.on_failure else None,
                    batching_window=min(stream.batching_window, self.stream_window))
                stream_poller.start()
                self._stream_pollers.append(stream_poller)

    def stream_arn(self, table_logical_id: str) -> str:
        """The latest stream of one of the template's tables."""
        table = self._client("dynamodb").describe_table(TableName=self.table_names[table_logical_id])["Table"]
        return table["LatestStreamArn"]

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

    def health(self) -> dict:
        return {
            "status": "ok",
            "functions": sorted(self._handlers),
            "tables": self.table_names,
            "queues": self.queue_urls,
            "wecom_api_base": self.api_base,
            "corps": [c.corp_id for c in self.corps],
        }

    def drain(self, timeout: float = 30) -> None:
        """Return once every queue a function consumes is empty, every stream a function reads
        has been read to its end and handed over, and no invocation runs.

        Failed messages count as not drained until they succeed or reach the dead-letter
        queue, so this also waits for retries (each one VisibilityTimeout later)."""
        sources = {s.queue for fn in self.template.functions.values() for s in fn.sqs_sources}
        deadline = time.monotonic() + timeout
        while True:
            with self._activity:
                busy, seen = self._in_flight, self._invocations
            quiet_from = time.monotonic()
            depths = self.queue_depths(sources) if busy == 0 else {}
            if busy == 0 and not any(n for d in depths.values() for n in d.values()) \
                    and self._streams_caught_up(quiet_from, deadline):
                with self._activity:
                    # Nothing started meanwhile that could have sent a message or written an item.
                    if self._in_flight == 0 and self._invocations == seen:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained after {timeout} s: {busy} invocation(s) running, queues {depths}")
            time.sleep(0.1)

    def _streams_caught_up(self, mark: float, deadline: float) -> bool:
        """Wait until each stream poller has read past every write made before `mark`."""
        while not all(p.caught_up_since(mark) for p in self._stream_pollers):
            if time.monotonic() > deadline or self._in_flight:
                return False
            time.sleep(0.05)
        return True

    def describe(self) -> str:
        lines = [f"SCRM local stack from {self.template_path}",
                 f"  AWS (moto: DynamoDB, SQS, Secrets Manager)  {self.endpoint}",
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
        for fn in self.template.functions.values():
            for source in fn.sqs_sources:
                lines.append(f"  poller {source.queue} -> {fn.logical_id} (batch {source.batch_size}"
                             f"{', ReportBatchItemFailures' if source.report_batch_item_failures else ''})")
            for stream in fn.stream_sources:
                lines.append(f"  stream {stream.table} -> {fn.logical_id} (batch {stream.batch_size}, window "
                             f"{min(stream.batching_window, self.stream_window):g} s"
                             f"{', bisect' if stream.bisect_on_error else ''}, retries {stream.maximum_retry_attempts}"
                             f"{', on failure -> ' + stream.on_failure if stream.on_failure else ''})")
            for schedule in fn.schedules:
                lines.append(f"  schedule {fn.logical_id} {schedule.expression}: run it with "
                             f"curl -X POST {self.gateway_url}/_local/schedules/{fn.logical_id}")
        lines.append(f"  queue VisibilityTimeout at most {self.visibility} s (SCRM_LOCAL_VISIBILITY)")
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
