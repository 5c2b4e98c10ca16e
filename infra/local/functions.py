"""The template's functions as Lambda runs them: each instance a process of its own.

Lambda runs every function in sandboxes of its own: its own environment variables, its
own interpreter (so its own Powertools Logger, service name and caches), one invocation
per sandbox at a time, more sandboxes when invocations overlap. A `FunctionPool` does the
same with processes (infra/local/runtime.py is what runs in each):

* an instance's environment is built from nothing but the function's resolved template
  variables and what the Lambda runtime sets (AWS_LAMBDA_FUNCTION_NAME, _HANDLER,
  LAMBDA_TASK_ROOT, ...), pointed at the local AWS endpoint with throwaway credentials;
  no shared config or credentials file is read, so a local run never reaches a real account;
* instances start when invocations need them, up to the function's concurrency (its
  ReservedConcurrentExecutions, capped locally), and stay warm; `warm` of them start with
  the stack, as provisioned concurrency would;
* an invocation gets the function's Timeout: past it the instance is killed, as Lambda
  kills a sandbox, and the invocation fails with Sandbox.Timedout;
* an instance that dies is forgotten and a new one starts for the next invocation; an
  invocation it was serving fails with Runtime.ExitError;
* each instance writes its stdout and stderr (the function's logs, Powertools' metrics)
  to the terminal, or to a file of its own under `logs/<FunctionId>/` (a log stream in
  the function's log group) when the stack is given a log directory.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from infra.local import template as tpl
from infra.local.runtime import receive, send

log = logging.getLogger("infra.local.functions")

RUNTIME = Path(__file__).with_name("runtime.py")
# Lambda allows 10 s for the init phase; a shared 2-core machine starting many instances at
# once needs more, and an import that never finishes must still fail clearly.
INIT_TIMEOUT = 60
EXIT_WAIT = 5


class FunctionError(Exception):
    """An invocation failed the way Lambda reports it: errorType, errorMessage, stackTrace."""

    def __init__(self, function: str, error_type: str, message: str, stack_trace: list[str] | None = None):
        super().__init__(f"{function}: {error_type}: {message}")
        self.function = function
        self.error_type = error_type
        self.error_message = message
        self.stack_trace = stack_trace or []


def lambda_environment(fn: tpl.Function, variables: dict[str, str], *, region: str, endpoint: str,
                       runtime: str) -> dict[str, str]:
    """What a Lambda sandbox of `fn` has in its environment, locally."""
    env = {
        # the Lambda runtime's own variables
        "AWS_LAMBDA_FUNCTION_NAME": fn.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.logical_id}",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "LAMBDA_TASK_ROOT": str(tpl.REPO_ROOT / fn.code_uri),
        "_HANDLER": fn.handler,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",  # log lines reach the terminal or the log file as they are written
        # local stand-ins
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": fn.logical_id,  # so the moto server can count each function's requests
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_SAM_LOCAL": "true",  # as under `sam local`: Powertools' Tracer sends nothing to X-Ray
    }
    env.update(variables)
    return env


class Instance:
    """One sandbox: a runtime process and the socket the stack talks to it over."""

    def __init__(self, pool: FunctionPool, number: int):
        fn = pool.fn
        self.pool = pool
        self.number = number
        self.stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.log_path = pool.log_dir / f"{number:03d}.log" if pool.log_dir else None
        ours, theirs = socket.socketpair()
        self.sock = ours
        output = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 - the child keeps it
        started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(RUNTIME), str(theirs.fileno()), fn.handler, str(tpl.REPO_ROOT / fn.code_uri),
                 *(str(tpl.REPO_ROOT / layer) for layer in fn.layers)],
                env={**pool.environment, "AWS_LAMBDA_LOG_STREAM_NAME": self.stream},
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT if output else None,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # Ctrl-C reaches the stack, which stops its instances in order
            )
        finally:
            theirs.close()
            if output:
                output.close()
        self.pid = self.process.pid
        if pool.niceness:
            os.setpriority(os.PRIO_PROCESS, self.pid, pool.niceness)
        try:
            ready = self._receive(INIT_TIMEOUT)
        except FunctionError:
            self.kill()
            raise
        if "init_error" in ready:
            self.kill()
            error = ready["init_error"]
            raise FunctionError(fn.logical_id, error["errorType"], error["errorMessage"], error["stackTrace"])
        log.info("%s: instance %d started (pid %d, init %.1f s)", fn.logical_id, number, self.pid,
                 time.monotonic() - started)

    def alive(self) -> bool:
        return self.process.poll() is None

    def invoke(self, event: Any, request_id: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        send(self.sock, {"event": event, "request_id": request_id, "deadline_ms": int(deadline * 1000),
                         "invoked_function_arn": self.pool.arn})
        return self._receive(timeout)

    def _receive(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            reply = receive(self.sock)
        except TimeoutError:
            self.kill()
            raise FunctionError(self.pool.fn.logical_id, "Sandbox.Timedout",
                                f"Task timed out after {timeout:.2f} seconds") from None
        except OSError:
            reply = None
        if reply is None:
            raise FunctionError(self.pool.fn.logical_id, "Runtime.ExitError",
                                f"Runtime exited with error: {self._exit_status()}")
        return reply

    def _exit_status(self) -> str:
        try:
            code = self.process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        return f"signal: {-code}" if code is not None and code < 0 else f"exit status {code}"

    def close(self) -> None:
        """End the instance: its runtime exits when the socket closes."""
        self.sock.close()
        try:
            self.process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.sock.close()
        if self.alive():
            self.process.kill()
        self.process.wait()


class FunctionPool:
    """The instances of one function, handed out one invocation at a time."""

    def __init__(self, fn: tpl.Function, environment: dict[str, str], *, region: str, max_instances: int,
                 logs: Path | None = None, niceness: int = 0):
        self.fn = fn
        self.niceness = niceness
        self.environment = environment
        self.max_instances = max(1, max_instances)
        self.arn = f"arn:{tpl.PARTITION}:lambda:{region}:{tpl.ACCOUNT_ID}:function:{fn.logical_id}"
        self.log_dir = logs / fn.logical_id if logs else None
        if self.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)  # one run's streams, not the last run's too
            self.log_dir.mkdir(parents=True)
        self._cond = threading.Condition()
        self._idle: list[Instance] = []
        self._busy: set[Instance] = set()
        self._starting = 0
        self._numbers = 0
        self._closed = False

    # --- instances ------------------------------------------------------------------------
    def warm(self, count: int) -> None:
        """Start instances now, in parallel, until the function has `count` (at most its maximum)."""
        with self._cond:
            count = max(0, min(count, self.max_instances) - len(self._idle) - len(self._busy) - self._starting)
            self._starting += count
        errors: list[BaseException] = []

        def one() -> None:
            try:
                instance = self._new_instance()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                errors.append(exc)
                with self._cond:
                    self._starting -= 1
                    self._cond.notify_all()
                return
            with self._cond:
                self._starting -= 1
                self._idle.append(instance)
                self._cond.notify_all()

        threads = [threading.Thread(target=one, name=f"warm-{self.fn.logical_id}") for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _new_instance(self) -> Instance:
        with self._cond:
            self._numbers += 1
            number = self._numbers
        return Instance(self, number)

    def _acquire(self) -> Instance:
        with self._cond:
            while True:
                if self._closed:
                    raise FunctionError(self.fn.logical_id, "Local.Stopped", "the local stack is stopping")
                while self._idle:
                    instance = self._idle.pop()  # the most recently used: the others may cool down
                    if instance.alive():
                        self._busy.add(instance)
                        return instance
                    log.warning("%s: instance %d (pid %d) died while idle (%s); a new one takes its place",
                                self.fn.logical_id, instance.number, instance.pid, instance._exit_status())
                    instance.sock.close()
                if len(self._busy) + self._starting < self.max_instances:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            instance = self._new_instance()
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
        with self._cond:
            self._busy.add(instance)
        return instance

    def _release(self, instance: Instance, healthy: bool) -> None:
        with self._cond:
            self._busy.discard(instance)
            if healthy and not self._closed:
                self._idle.append(instance)
            self._cond.notify_all()
        if not healthy or self._closed:
            instance.close() if instance.alive() else instance.sock.close()

    # --- invocations ----------------------------------------------------------------------
    def invoke(self, event: Any) -> Any:
        """Run one invocation and return the handler's result; FunctionError if it failed."""
        instance = self._acquire()
        healthy = False
        try:
            reply = instance.invoke(event, str(uuid.uuid4()), self.fn.timeout)
            healthy = True
        except FunctionError as err:
            log.warning("%s: instance %d (pid %d): %s", self.fn.logical_id, instance.number, instance.pid,
                        err.error_message)
            raise
        finally:
            self._release(instance, healthy)
        if "error" in reply:
            error = reply["error"]
            raise FunctionError(self.fn.logical_id, error["errorType"], error["errorMessage"], error["stackTrace"])
        return reply["result"]

    # --- inspection and shutdown ----------------------------------------------------------
    def pids(self) -> dict[str, list[int]]:
        """The process ids of the live instances, idle and busy."""
        with self._cond:
            return {"idle": [i.pid for i in self._idle if i.alive()], "busy": [i.pid for i in self._busy]}

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log")) if self.log_dir else []

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._cond.notify_all()
        for instance in idle:
            instance.close()
        for instance in busy:  # only an invocation that outlived the stack's wait for it
            instance.kill()
