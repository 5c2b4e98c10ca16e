"""`make bench`: figures, not pass/fail. Run from the repo root with the virtualenv.

Spine (issue 2)
  1. callback answer latency p50/p99 through the local stack (HTTP gateway → function)
  2. the callback function's fresh-process import time as a ratio to `import boto3`
     (goal ≤ 1.3x), the median of several fresh processes each
  3. DynamoDB and SQS requests per accepted callback: 3 writes before the answer (the row,
     the message, and the note that it was sent, which keeps the sweeper off queued events)
Acquisition (issue 3)
  4. callback-to-welcome latency p50/p99 on the local stack (goal p99 < 2 s), as the
     WeCom simulator measures it: from the WelcomeCode's issue to send_welcome_msg
  5. WeCom calls per new customer (goal ≤ 2 besides a token refresh); DynamoDB requests per new
     customer, where each goes, and the write units they cost (goal ≤ 12), metered by the
     local moto server (infra.local.meter); the stats
     projector's requests, which it makes from the stream after the fact, apart
  6. coupon issues per second under 200 concurrent claims, with the oversell count (goal 0)
Burst (bench/burst.py)
  7. 50 new customers within one second, each callback delivered four times: welcomed once,
     with their coupon; the welcome's p50/p99 after the event (goal p99 < 5 s) and the
     callback's own answer p50/p99 meanwhile (goal p99 < 100 ms)
Jobs and the rate budget
  8. DynamoDB writes the rate governor adds per WeCom call, busy and idle
  9. a bulk job (one code for each of 60 staff) through the local stack: time, WeCom calls

Latencies are wall-clock on a shared 2-core machine: compare runs on the same machine.
Counts and ratios are the figures to trust.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".local" / "logs" / "bench"
CALLBACKS = int(os.environ.get("BENCH_CALLBACKS", "200"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "40"))
IMPORT_RUNS = int(os.environ.get("BENCH_IMPORT_RUNS", "7"))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def line(name: str, value: str, goal: str = "") -> None:
    print(f"  {name:<58} {value:>16}   {goal}")


# --- 2. import time ---------------------------------------------------------------------
def _import_seconds(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'shared'}:{ROOT}",
           "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def import_ratio() -> tuple[float, float, float]:
    boto = "import time; t = time.perf_counter(); import boto3; print(time.perf_counter() - t)"
    callback = ("import time, importlib.util; t = time.perf_counter(); "
                "s = importlib.util.spec_from_file_location('app', 'functions/callback/app.py'); "
                "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(time.perf_counter() - t)")
    boto_runs, callback_runs = [], []
    for _ in range(IMPORT_RUNS):  # interleaved, so machine noise hits both alike
        boto_runs.append(_import_seconds(boto))
        callback_runs.append(_import_seconds(callback))
    b, c = statistics.median(boto_runs), statistics.median(callback_runs)
    return b, c, c / b


# --- the local stack ----------------------------------------------------------------------
def _event_xml(corp_id: str, event: str, change: str, fields: str) -> str:
    return (f"<xml><ToUserName>{corp_id}</ToUserName><FromUserName>sys</FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType>event</MsgType>"
            f"<Event>{event}</Event><ChangeType>{change}</ChangeType>{fields}</xml>")


def callback_figures(stack, corp) -> None:
    from scrm.wecom.callback.crypto import WeComCrypto

    crypto = WeComCrypto(corp.token, corp.encoding_aes_key, corp.corp_id)
    url = stack.callback_url(corp.corp_id)
    session = requests.Session()
    latencies = []
    statuses = Counter()
    for i in range(CALLBACKS):
        # A group-chat change: the callback's work is the same for every event, and the
        # worker's for this one is a single write (a tag change would pull the corp's tags).
        xml = _event_xml(corp.corp_id, "change_external_chat", "update",
                         f"<ChatId>bench-latency-{i}</ChatId><UpdateDetail>change_name</UpdateDetail>")
        body, query = crypto.seal(xml)
        started = time.perf_counter()
        answer = session.post(url, params=query, data=body.encode(), timeout=10)
        latencies.append(time.perf_counter() - started)
        statuses[answer.status_code] += 1
    line("callback answer latency p50 (local stack, HTTP)", f"{pct(latencies, 50) * 1000:.1f} ms")
    line("callback answer latency p99 (local stack, HTTP)", f"{pct(latencies, 99) * 1000:.1f} ms", "goal: well inside 5 s")
    line("callbacks answered 200", f"{statuses[200]}/{CALLBACKS}")


def requests_per_callback(stack, corp) -> None:
    """The callback alone: the AWS requests its instances make per accepted callback (the
    moto server counts them by the calling function)."""
    from scrm.wecom.callback.crypto import WeComCrypto

    from infra.scripts.make_events import http_event

    crypto = WeComCrypto(corp.token, corp.encoding_aes_key, corp.corp_id)
    before = stack.aws_requests("CallbackFunction")
    n = 50
    for i in range(n):
        xml = _event_xml(corp.corp_id, "change_external_chat", "update",
                         f"<ChatId>bench-chat-{i}</ChatId><UpdateDetail>add_member</UpdateDetail>")
        body, query = crypto.seal(xml)
        request = http_event("POST", corp.corp_id, query, body)
        request["requestContext"]["timeEpoch"] = int(time.time() * 1000)  # arriving now, as its CreateTime says
        stack.invoke("CallbackFunction", request)
    counter = stack.aws_requests("CallbackFunction")
    counter.subtract(before)
    counter = Counter({name: count for name, count in counter.items() if count})
    writes = sum(v for k, v in counter.items() if k.split(":")[1] in ("PutItem", "SendMessage", "UpdateItem"))
    line("DynamoDB + SQS requests per accepted callback", f"{sum(counter.values()) / n:.2f}",
         "(" + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counter.items())) + ")")
    line("writes before the answer per callback", f"{writes / n:.2f}", "expected: 3 (row, message, queued)")


def main() -> int:
    print("Spine (issue 2)")
    boto, callback, ratio = import_ratio()
    line("import boto3 (median of fresh processes)", f"{boto * 1000:.0f} ms")
    line("import functions/callback/app.py (same)", f"{callback * 1000:.0f} ms")
    line("callback import time / boto3 import time", f"{ratio:.2f}x", "goal: ≤ 1.3x")

    os.environ.setdefault("SCRM_HTTP_PORT", "0")
    os.environ.setdefault("SCRM_SIM_PORT", "0")
    from infra.local.demo import quiet_output

    quiet_output(LOGS)
    from infra.local.stack import TEMPLATE_VISIBILITY, LocalStack

    with LocalStack(logs=LOGS) as stack:
        corp = stack.corps[0]
        callback_figures(stack, corp)
        requests_per_callback(stack, corp)
        stack.drain(timeout=120)
        acquisition = _acquisition()
        if acquisition:
            print("Acquisition (issue 3)")
            acquisition(stack, corp)
        from bench import jobs

        print("Jobs and the rate budget")
        jobs.run(stack, corp)
    print("Burst (the local stack with each function in processes of its own)")
    with LocalStack(logs=LOGS / "burst", visibility=TEMPLATE_VISIBILITY) as stack:
        from bench import burst

        burst.run(stack, burst.store(stack))
    print(f"  (the functions' logs: {LOGS.relative_to(ROOT)}/)")
    return 0


def _acquisition():
    try:
        from bench import acquisition
    except ImportError:
        return None
    return acquisition.run


if __name__ == "__main__":
    sys.exit(main())
