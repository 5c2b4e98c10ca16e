"""One function instance: the process the local stack starts where Lambda would start a sandbox.

    python infra/local/runtime.py <fd> <handler> <code dir> [<layer dir> ...]

It runs as a script, with the standard library only, so that the function sees what Lambda
shows it and nothing of the stack: sys.path is the code directory, then the layers (as
/var/task and /opt/python), then the interpreter's own packages; the environment is the one
the stack built for this function alone (see infra/local/functions.py).

Like Lambda's runtime it imports the handler's module once (the init phase), answers
`ready` (or the import error), then serves one invocation at a time over the socket `fd`:
each frame is a 4-byte big-endian length and UTF-8 JSON. A request carries the event, the
request id and the deadline in epoch milliseconds; the answer is the handler's result as
JSON, or the error in Lambda's shape ({errorType, errorMessage, stackTrace}), which is also
printed to stderr as Lambda logs it. The process ends when the socket closes: the stack
stopped, or died.
"""
from __future__ import annotations

import decimal
import importlib
import json
import os
import socket
import struct
import sys
import time
import traceback

_LENGTH = struct.Struct(">I")


def send(sock: socket.socket, message: dict, default=None) -> None:
    data = json.dumps(message, ensure_ascii=False, default=default).encode("utf-8")
    sock.sendall(_LENGTH.pack(len(data)) + data)


def receive(sock: socket.socket) -> dict | None:
    """The next frame, or None when the other end has closed."""
    header = _read(sock, _LENGTH.size)
    if header is None:
        return None
    data = _read(sock, _LENGTH.unpack(header)[0])
    if data is None:
        return None
    return json.loads(data)


def _read(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class LambdaContext:
    """The attributes of Lambda's context object that functions and Powertools read."""

    def __init__(self, *, function_name: str, memory_limit_in_mb: int, invoked_function_arn: str,
                 aws_request_id: str, deadline_ms: int, log_group_name: str, log_stream_name: str,
                 function_version: str = "$LATEST"):
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = invoked_function_arn
        self.aws_request_id = aws_request_id
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    @classmethod
    def for_request(cls, request: dict) -> LambdaContext:
        """In an instance: the function from its environment, the invocation from the request."""
        env = os.environ
        return cls(function_name=env["AWS_LAMBDA_FUNCTION_NAME"], function_version=env["AWS_LAMBDA_FUNCTION_VERSION"],
                   memory_limit_in_mb=int(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]),
                   log_group_name=env["AWS_LAMBDA_LOG_GROUP_NAME"], log_stream_name=env["AWS_LAMBDA_LOG_STREAM_NAME"],
                   invoked_function_arn=request["invoked_function_arn"], aws_request_id=request["request_id"],
                   deadline_ms=int(request["deadline_ms"]))

    @classmethod
    def local(cls, function_name: str, memory: int, timeout: float, region: str) -> LambdaContext:
        """For a stand-in called in the stack's own process."""
        request_id = os.urandom(16).hex()
        return cls(function_name=function_name, memory_limit_in_mb=memory, aws_request_id=request_id,
                   invoked_function_arn=f"arn:aws:lambda:{region}:123456789012:function:{function_name}",
                   deadline_ms=int((time.time() + timeout) * 1000), log_group_name=f"/aws/lambda/{function_name}",
                   log_stream_name=f"local/{request_id}")

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _error(exc: BaseException, error_type: str | None = None) -> dict:
    return {"errorType": error_type or type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)}


def _report(error: dict) -> None:
    # Lambda's Python runtime logs an unhandled error this way, in the function's own log.
    print(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n" + "".join(error["stackTrace"]),
          file=sys.stderr, flush=True)


def _lambda_json(value):
    # Lambda's Python runtime serializes Decimal (what boto3 reads from DynamoDB) as a number.
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def main(argv: list[str]) -> int:
    fd, handler_spec, code_dir, *layers = argv
    sys.path[:] = [code_dir, *layers] + [p for p in sys.path[1:] if p]  # not the stack's own directory
    os.chdir(code_dir)  # Lambda starts the runtime in /var/task
    sock = socket.socket(fileno=int(fd))
    module_name, _, function_name = handler_spec.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # noqa: BLE001 - reported as Lambda reports an init failure
        error = _error(exc, "Runtime.ImportModuleError")
        _report(error)
        send(sock, {"init_error": error})
        return 1
    send(sock, {"ready": True, "pid": os.getpid()})
    while (request := receive(sock)) is not None:
        try:
            result = handler(request["event"], LambdaContext.for_request(request))
        except Exception as exc:  # noqa: BLE001 - the invocation fails, the instance lives on
            error = _error(exc)
            _report(error)
            send(sock, {"error": error})
            continue
        try:
            send(sock, {"result": result}, default=_lambda_json)  # serialized before anything is sent
        except (TypeError, ValueError) as exc:
            error = _error(exc, "Runtime.MarshalError")
            _report(error)
            send(sock, {"error": error})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
