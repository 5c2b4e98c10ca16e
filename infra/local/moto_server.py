"""moto's server in a process of its own, with DynamoDB requests applied one at a time and
metered (infra.local.meter: requests and write units, for `make bench`).

    python -m infra.local.moto_server [--port N]    # prints {"port": N} once it listens

The local stack runs it as its own process (`MotoProcess`), as AWS is not inside any
function's sandbox: the functions' instances and the stack's pollers all reach it over
HTTP, and its work never takes a share of their interpreter's lock.

DynamoDB applies each request atomically; moto's in-memory backend does not lock, so two
threads' conditional writes could both pass their check, and a transaction's rollback
snapshot can race another write ("dictionary changed size during iteration"). Every
DynamoDB request therefore takes one lock. SQS and the rest stay concurrent: a long-poll
ReceiveMessage must not hold anyone up.

Every request is counted by service and operation (from the signature's credential scope
and X-Amz-Target): `GET /_local/aws-requests` answers the counts so far, for benchmarks
that count what the functions' processes asked of AWS, function by function.
"""
from __future__ import annotations

import argparse
import copy
import functools
import inspect
import io
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import requests
from botocore.exceptions import ClientError
from moto import backends as moto_backends
from moto.core import responses as moto_responses
from moto.core.request import Request as MotoRequest
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from moto.sqs.responses import SQSResponse

from infra.local.meter import DynamoDBMeter

REQUESTS_PATH = "/_local/aws-requests"
READY_TIMEOUT = 60


class SerializedDynamoDB:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self.lock:
                # Build the whole response inside the lock; werkzeug may iterate it later.
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


class KeepAliveHandler(BaseHTTPRequestHandler):
    """Serves a WSGI app over HTTP/1.1 connections that stay open, as AWS's do.

    werkzeug's development server (moto's own) closes every connection after one answer,
    so each AWS request would cost a new connection and a new thread here: a third of the
    whole cost of a request. AWS clients send a Content-Length with every request, which is
    all this needs to find where the next request starts."""

    protocol_version = "HTTP/1.1"
    # One write per answer, sent at once: with connections kept open, an answer written in
    # two parts would otherwise wait out the client's delayed ACK (40 ms) under Nagle.
    wbufsize = -1
    disable_nagle_algorithm = True
    app: Any = None  # set on the subclass `serve` makes

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "a Content-Length is needed")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        environ = {
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path).encode("utf-8").decode("latin-1"),  # as WSGI spells it
            "QUERY_STRING": query, "REQUEST_URI": self.path, "RAW_URI": self.path,
            "SERVER_NAME": self.server.server_address[0], "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(length), "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if "_" in name or key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue  # an underscore could pass for a dash (werkzeug drops these too)
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        answer: list = []

        def start_response(status: str, headers: list, exc_info=None):
            answer[:] = [status, headers]
            return lambda data: None  # nothing in moto writes this way

        try:
            chunks = self.app(environ, start_response)
            try:
                data = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
            status, headers = answer
        except Exception:  # noqa: BLE001 - a moto failure is the client's 500, not a dropped connection
            traceback.print_exc()
            status, headers = "500 Internal Server Error", [("Content-Type", "application/x-amz-json-1.0")]
            data = json.dumps({"__type": "InternalFailure", "message": "the local moto server failed"}).encode()
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request otherwise


class LocalServer(ThreadingHTTPServer):
    """A thread per connection, and room for many connections arriving at once: the default
    backlog of 5 resets the rest, or delays them a second and more while the client retries."""

    daemon_threads = True
    request_queue_size = 1024


class _ServerRequest(MotoRequest):
    from_wsgi_server = True  # as moto's own server marks its requests


class DirectDispatch:
    """DynamoDB, DynamoDB Streams and SQS requests (AWS's JSON protocol: POST / with an
    X-Amz-Target) handed straight to moto's handler for that service. moto's own way goes
    through a host lookup and a Flask app per service: 40% of its time per request, and the
    answer is the same. Anything else takes moto's own way."""

    def __init__(self, app):
        self.app = app
        self.handlers = {"DynamoDB_20120810": DynamoHandler.dispatch,
                         "DynamoDBStreams_20120810": DynamoDBStreamsHandler.dispatch,
                         "AmazonSQS": SQSResponse.dispatch}

    def __call__(self, environ, start_response):
        handler = self.handlers.get(environ.get("HTTP_X_AMZ_TARGET", "").partition(".")[0])
        if handler is None or environ.get("PATH_INFO") != "/" or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        request = _ServerRequest(environ)
        try:
            status, headers, body = handler(request, request.raw_url, dict(request.headers))
        except ClientError as exc:  # as moto's Flask adapter answers it
            status, headers, body = 400, {}, exc.response["Error"]["Message"]
        data = body.encode("utf-8") if isinstance(body, str) else body
        start_response(f"{status} {HTTPStatus(int(status)).phrase}",
                       [(str(k), str(v)) for k, v in headers.items() if k.lower() not in ("status", "content-length")])
        return [data]


class RequestCounter:
    """Counts requests by caller (the access key id: the stack gives each function its own)
    and "service:Operation", and answers the counts at REQUESTS_PATH."""

    def __init__(self, app):
        self.app = app
        self.counts: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == REQUESTS_PATH:
            with self.lock:
                counts: dict[str, dict[str, int]] = {}
                for (caller, name), n in self.counts.items():
                    counts.setdefault(caller, {})[name] = n
                body = json.dumps(counts).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with self.lock:
            self.counts[request_name(environ)] += 1
        return self.app(environ, start_response)


def request_name(environ: dict) -> tuple[str, str]:
    """(access key id, "dynamodb:PutItem"): who asked, the signing service and the operation."""
    try:
        credential = environ.get("HTTP_AUTHORIZATION", "").split(",")[0].split()[1].removeprefix("Credential=")
        caller, _, _, service = credential.split("/")[:4]
    except (IndexError, ValueError):
        caller, service = "unsigned", "unsigned"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    return caller, f"{service}:{target.rpartition('.')[2] or environ.get('REQUEST_METHOD', '?')}"


def install_fast_dispatch() -> None:
    """Cache what moto's server works out again for every request (idempotent).

    Per request, moto lists its own package directory twice (to tell a service name from a
    host name) and inspects the handler class for its method names: together about half
    its time per request. Neither answer changes while the server runs."""
    if getattr(moto_backends.list_of_moto_modules, "_scrm_cached", False):
        return
    modules = tuple(moto_backends.list_of_moto_modules())

    def list_of_moto_modules():
        return modules

    list_of_moto_modules._scrm_cached = True
    moto_backends.list_of_moto_modules = list_of_moto_modules
    method_names = moto_responses.method_names_from_class
    moto_responses.method_names_from_class = functools.lru_cache(maxsize=None)(
        lambda clazz: frozenset(method_names(clazz)))


def install_fast_queries() -> None:
    """Let a Query look at the items it can match, not the whole table sorted (idempotent).

    moto answers every Query by sorting all the table's items and filtering them, so a
    query costs more as the table grows (40 ms at 2,000 items). A query of the table itself
    only ever matches its partition; one of an index sorts its candidates again anyway.
    Needs DynamoDB requests to be serialized (SerializedDynamoDB): the table's item list is
    narrowed for the one call."""
    if getattr(Table.query, "_scrm_fast", False):
        return
    original = Table.query
    signature = inspect.signature(original)

    def query(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs).arguments
        hash_key, index_name = bound.get("hash_key"), bound.get("index_name")
        if index_name is None and hash_key is not None:
            partition = self.items.get(hash_key)
            candidates = [] if partition is None else list(partition.values()) if self.range_key_attr else [partition]
        else:
            candidates = [item for part in self.items.values()
                          for item in (part.values() if self.range_key_attr else [part])]
        self.all_items = lambda: candidates
        try:
            return original(self, *args, **kwargs)
        finally:
            del self.all_items

    query._scrm_fast = True
    Table.query = query


def serve(port: int, ready: IO[str]) -> None:
    install_fast_transactions()
    install_fast_dispatch()
    install_fast_queries()
    app = RequestCounter(SerializedDynamoDB(DynamoDBMeter(DirectDispatch(DomainDispatcherApplication(create_backend_app)))))
    handler = type("Handler", (KeepAliveHandler,), {"app": staticmethod(app)})
    server = LocalServer(("127.0.0.1", port), handler)
    ready.write(json.dumps({"port": server.server_address[1]}) + "\n")
    ready.flush()
    server.serve_forever()


def _exit_with_parent() -> None:
    """The stack holds this process's stdin open: at EOF it has stopped or died."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # state is in memory: nothing to save
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    serve(args.port, sys.stdout)
    return 0


class MotoProcess:
    """The moto server as a child process of the stack."""

    def __init__(self, port: int = 0, log: Path | None = None):
        self.port = port
        self.log = log
        self.endpoint = ""
        self._process: subprocess.Popen | None = None

    def start(self) -> str:
        output = open(self.log, "wb") if self.log else None  # noqa: SIM115 - the child keeps it
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "infra.local.moto_server", "--port", str(self.port)],
                cwd=Path(__file__).resolve().parents[2], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=output, text=True, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            )
        finally:
            if output:
                output.close()
        line = _readline(self._process.stdout, READY_TIMEOUT)
        if not line:
            self.stop()
            raise RuntimeError(f"the moto server did not start (see {self.log or 'its output above'})")
        self.endpoint = f"http://127.0.0.1:{json.loads(line)['port']}"
        return self.endpoint

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def request_counts(self, caller: str | None = None) -> Counter:
        """The AWS requests served so far, as {"service:Operation": count}: those signed with
        access key id `caller`, or everyone's."""
        counts: Counter = Counter()
        for who, names in requests.get(self.endpoint + REQUESTS_PATH, timeout=10).json().items():
            if caller in (None, who):
                counts.update(names)
        return counts

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._process = None


def _readline(stream: IO[str], timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


class _TableSnapshotSkipper:
    """Stands in for `copy` inside moto's DynamoDB backend: a Table is not deep-copied.

    moto takes a deep copy of the whole table for every item of a TransactWriteItems call,
    so to roll back a cancelled transaction; with a few thousand items that makes each
    transaction cost tens of milliseconds and the local stack crawl. `fast_transactions`
    snapshots only the items the transaction touches and restores those instead.
    """

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def _key_of(backend, op_type: str, op: dict) -> tuple[str, dict]:
    table = backend.get_table(op["TableName"])
    if op_type != "Put":
        return op["TableName"], op["Key"]
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return op["TableName"], key


def install_fast_transactions() -> None:
    """Patch moto's TransactWriteItems to snapshot only the touched items (idempotent).

    Needs requests to the backend to be serialized (they are, see SerializedDynamoDB, and
    the integration tests' fixture), which DynamoDB's own atomicity makes correct anyway.
    A cancelled transaction also leaves no stream record behind, as on DynamoDB: moto applies
    the items one by one (each adding a record) before it finds a failed condition, and the
    restore adds more.
    """
    if getattr(DynamoDBBackend.transact_write_items, "_scrm_fast", False):
        return
    original = DynamoDBBackend.transact_write_items
    dynamodb_models.copy = _TableSnapshotSkipper()

    def transact_write_items(self, transact_items):
        snapshots = []
        streams = {}
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            try:
                table_name, key = _key_of(self, op_type, op)
                current = self.get_item(table_name, key)
            except Exception:  # noqa: BLE001 - moto itself reports what is wrong with the item
                continue
            snapshots.append((table_name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
            shard = self.get_table(table_name).stream_shard
            if shard is not None:
                streams.setdefault(table_name, (shard, len(shard.items)))
        try:
            return original(self, transact_items)
        except Exception:
            for table_name, key, attributes in reversed(snapshots):
                if attributes is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attributes)
            for shard, length in streams.values():
                del shard.items[length:]
            raise

    transact_write_items._scrm_fast = True
    DynamoDBBackend.transact_write_items = transact_write_items


if __name__ == "__main__":
    sys.exit(main())
