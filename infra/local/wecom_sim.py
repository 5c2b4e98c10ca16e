"""In-memory WeCom (企业微信) API simulator for the local stack, the demo and e2e tests.

* ``/cgi-bin/...`` — a subset of the real API with WeCom's rules, limits, error codes and JSON
  shapes (see /work/shared/wecom/FACTS.md §5, §6).
* ``/sim/...`` — a JSON control API: seed corps/departments/staff, inject faults, move the clock,
  read what happened, and trigger client-side actions (a customer adds a member, …) which change
  the state AND POST a real signed + encrypted callback to the corp's callback_url (FACTS §1, §3, §4).

In-process use::

    sim = WeComSimulator()
    sim.start(port=0)                     # sim.base_url -> "http://127.0.0.1:NNNNN"
    sim.add_corp("ww1", "secret", "token", "<43-char EncodingAESKey>", 1000002, callback_url=...)
    sim.add_staff("ww1", "zhangsan", "Zhang San")
    sim.add_customer("ww1", "zhangsan", state="ch1")   # -> {external_userid, welcome_code, callback_status}
    sim.stop()

Standalone: ``python -m infra.local.wecom_sim`` (port from SCRM_SIM_PORT, default 8900).
"""

from __future__ import annotations

import copy
import json
import os
import random
import secrets
import string
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

TOKEN_TTL = 7200
WELCOME_WINDOW = 20  # seconds a WelcomeCode stays usable (FACTS §6)
TRANSFER_DELAY = 24 * 3600  # customers are taken over automatically after 24 h (FACTS §5.7)
ONJOB_TRANSFER_WINDOW = 90 * 24 * 3600
CALLBACK_TIMEOUT = 5  # WeCom waits 5 s for the callback answer (FACTS §1.8)
FAULT_KINDS = ("-1", "45033", "http502", "timeout")
ATTACHMENT_TYPES = ("image", "link", "miniprogram", "video", "file")

_ERRMSG = {
    -1: "system busy",
    0: "ok",
    40001: "invalid credential",
    40003: "invalid userid",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40035: "invalid parameter",
    40058: "invalid Request Parameter",
    40066: "invalid department list",
    40068: "invalid tagid",
    40072: "invalid tag name size",
    40088: "invalid jobid",
    40096: "invalid external userid",
    40097: "invalid handover userid, user not resigned",
    40126: "corp tag count exceed limit",
    40128: "customer transfer too frequently",
    40129: "customer is in transfer",
    40130: "handover_userid is the same as takeover_userid",
    40131: "handover_userid is not a follow user of the customer",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41009: "missing userid",
    41018: "missing tag name",
    41019: "missing department",
    41035: "missing external userid",
    41037: "missing contact way type",
    41038: "missing contact way scene",
    41039: "invalid contact way type",
    41040: "invalid contact way scene",
    41041: "contact way user count exceed limit",
    41043: "missing config_id",
    41044: "invalid config_id",
    41049: "missing welcome code",
    41050: "invalid welcome code",
    41051: "externaluser has started chatting",
    41054: "user not activated",
    41064: "attachment count exceed limit",
    41065: "invalid attachments msgtype",
    41089: "text and attachments are both empty",
    42001: "access_token expired",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
    60003: "department not found",
    60111: "userid not found",
    84061: "not external contact",
}


class ApiError(Exception):
    """A WeCom error answer; the control API maps it to HTTP 400."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        text = _ERRMSG.get(errcode, "error") + (f" ({detail})" if detail else "")
        # Real errmsg texts carry a hint and a link; clients must branch on errcode only.
        self.errcode = errcode
        self.errmsg = f"{text}, hint: [sim], more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
        super().__init__(self.errmsg)

    def payload(self) -> dict:
        return {"errcode": self.errcode, "errmsg": self.errmsg}


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _cdata(value: Any) -> str:
    return "<![CDATA[" + str(value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _page(items: list, cursor: Any, limit: int) -> tuple[list, str]:
    """Cursor = offset as a string; "" means no more pages (as WeCom's next_cursor)."""
    start = int(cursor) if cursor else 0
    end = start + limit
    return items[start:end], (str(end) if end < len(items) else "")


def _limit(value: Any, default: int, maximum: int) -> int:
    limit = int(value) if value not in (None, "") else default
    if not 1 <= limit <= maximum:
        raise ApiError(40058, f"limit must be 1..{maximum}")
    return limit


def _check_attachments(attachments: list, allowed: tuple = ATTACHMENT_TYPES) -> None:
    for att in attachments:
        kind = att.get("msgtype")
        if kind not in allowed:
            raise ApiError(41065, f"msgtype {kind!r}")
        if not isinstance(att.get(kind), dict):
            raise ApiError(40058, f"attachment of msgtype {kind} needs a {kind} object")


@dataclass
class _Corp:
    corp_id: str
    secret: str
    token: str
    encoding_aes_key: str
    agent_id: int
    callback_url: str | None = None
    departments: dict = field(default_factory=dict)  # id -> {id, name, parentid, order}
    users: dict = field(default_factory=dict)  # active members: userid -> member
    resigned: dict = field(default_factory=dict)  # userid -> member + dimission_time
    customers: dict = field(default_factory=dict)  # external_userid -> external_contact
    follows: dict = field(default_factory=dict)  # (userid, external_userid) -> follow record
    tag_groups: dict = field(default_factory=dict)  # group_id -> group with "tag": {tag_id: tag}
    contact_ways: dict = field(default_factory=dict)
    welcome_codes: dict = field(default_factory=dict)
    transfers: list = field(default_factory=list)
    chats: dict = field(default_factory=dict)
    moments: dict = field(default_factory=dict)
    crypto: Any = None


# api path (after /cgi-bin/) -> (HTTP method, handler method name)
_ROUTES = {
    "user/list": ("GET", "_user_list"),
    "user/get": ("GET", "_user_get"),
    "department/list": ("GET", "_department_list"),
    "externalcontact/get_follow_user_list": ("GET", "_follow_user_list"),
    "externalcontact/list": ("GET", "_contact_list"),
    "externalcontact/get": ("GET", "_contact_get"),
    "externalcontact/batch/get_by_user": ("POST", "_batch_get_by_user"),
    "externalcontact/add_contact_way": ("POST", "_add_contact_way"),
    "externalcontact/get_contact_way": ("POST", "_get_contact_way"),
    "externalcontact/update_contact_way": ("POST", "_update_contact_way"),
    "externalcontact/del_contact_way": ("POST", "_del_contact_way"),
    "externalcontact/list_contact_way": ("POST", "_list_contact_way"),
    "externalcontact/send_welcome_msg": ("POST", "_send_welcome_msg"),
    "externalcontact/get_corp_tag_list": ("POST", "_get_corp_tag_list"),
    "externalcontact/add_corp_tag": ("POST", "_add_corp_tag"),
    "externalcontact/del_corp_tag": ("POST", "_del_corp_tag"),
    "externalcontact/mark_tag": ("POST", "_mark_tag"),
    "externalcontact/remark": ("POST", "_remark"),
    "externalcontact/transfer_customer": ("POST", "_transfer_onjob"),
    "externalcontact/resigned/transfer_customer": ("POST", "_transfer_resigned"),
    "externalcontact/transfer_result": ("POST", "_transfer_result_onjob"),
    "externalcontact/resigned/transfer_result": ("POST", "_transfer_result_resigned"),
    "externalcontact/get_unassigned_list": ("POST", "_get_unassigned_list"),
    "externalcontact/add_moment_task": ("POST", "_add_moment_task"),
    "externalcontact/get_moment_task_result": ("GET", "_get_moment_task_result"),
}

# Client-side actions reachable as POST /sim/actions/<name> (same-named methods).
ACTIONS = (
    "add_customer",
    "delete_follow",
    "staff_deletes_customer",
    "edit_customer",
    "create_user",
    "delete_user",
    "tag_change",
    "chat_change",
    "raw",
)


class WeComSimulator:
    """State and rules of the simulated WeCom; thread-safe (one re-entrant lock)."""

    def __init__(self, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self.clock = clock
        self.base_url: str | None = None
        self._lock = threading.RLock()
        self._senders = threading.local()
        self._server: ThreadingHTTPServer | None = None
        self._reset_state(seed)

    def _reset_state(self, seed: int | None = None) -> None:
        self._offset = 0.0  # added by advance(); lets another process move time via /sim/clock/advance
        self._corps: dict[str, _Corp] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._welcomes: list[dict] = []
        self._deliveries: list[dict] = []  # every callback POST: how long our callback took to answer
        self.call_counts: Counter = Counter()  # api path -> calls
        self.outcome_counts: Counter = Counter()  # (api path, "0" | errcode | "http502" | "timeout") -> calls
        self.gettoken_counts: Counter = Counter()  # corp_id -> gettoken calls
        self._blocked: dict[str, int] = {}
        self._next_errors: dict[str, list[int]] = {}  # api -> errcodes its next calls answer
        self._quota: tuple[int, float, frozenset[str] | None] | None = None  # (calls, seconds, apis)
        self._quota_calls: dict[tuple[str, str], deque] = {}  # (corp_id, api) -> times of calls answered
        self.peak_in_flight: Counter = Counter()  # api -> most calls of it answered at once
        self._in_flight: Counter = Counter()
        self._fault_rate = 0.0
        self._fault_kinds: list[str] = []
        self._rng = random.Random(seed)
        self.timeout_sleep = 3.0
        self.latency = 0.0  # seconds every API answer takes (concurrency tests)

    # ---- time, setup, faults, inspection -------------------------------------------------

    def now(self) -> float:
        return self.clock() + self._offset

    def advance(self, seconds: float) -> dict:
        with self._lock:
            self._offset += float(seconds)
            return {"now": self.now()}

    def reset(self) -> None:
        with self._lock:
            self._reset_state()

    def add_corp(
        self,
        corp_id: str,
        secret: str,
        token: str,
        encoding_aes_key: str,
        agent_id: int,
        callback_url: str | None = None,
    ) -> None:
        with self._lock:
            corp = _Corp(corp_id, secret, token, encoding_aes_key, int(agent_id), callback_url)
            # Every real corp has the root department 1.
            corp.departments[1] = {"id": 1, "name": corp_id, "parentid": 0, "order": 100000000}
            self._corps[corp_id] = corp

    def add_department(self, corp_id: str, id: int, name: str, parentid: int = 1, order: int = 0) -> None:
        with self._lock:
            corp = self._corp(corp_id)
            if int(parentid) not in corp.departments:
                raise ApiError(60003, f"parent {parentid}")
            corp.departments[int(id)] = {"id": int(id), "name": name, "parentid": int(parentid), "order": int(order)}

    def add_staff(
        self,
        corp_id: str,
        userid: str,
        name: str | None = None,
        department: list | tuple = (1,),
        mobile: str | None = None,
        status: int = 1,  # 1 activated, 4 not activated (cannot be put on a contact way: 41054)
    ) -> dict:
        with self._lock:
            corp = self._corp(corp_id)
            departments = [int(d) for d in department] or [1]
            if any(d not in corp.departments for d in departments):
                raise ApiError(40066)
            member = {
                "userid": userid,
                "name": name or userid,
                "department": departments,
                "main_department": departments[0],
                "mobile": mobile or "",
                "status": int(status),
            }
            corp.users[userid] = member
            corp.resigned.pop(userid, None)
            return dict(member)

    def set_faults(
        self,
        rate: float = 0.0,
        kinds: list | tuple = ("-1",),
        seed: int | None = None,
        timeout_sleep: float | None = None,
    ) -> None:
        """Fail each non-gettoken API call with probability `rate`, with a kind drawn from `kinds`.

        "timeout" sleeps `timeout_sleep` seconds and then performs the call anyway: the client
        times out although the effect happened, as with a slow real server."""
        kinds = [str(k) for k in kinds]
        if not 0.0 <= float(rate) <= 1.0 or not set(kinds) <= set(FAULT_KINDS) or (rate and not kinds):
            raise ValueError(f"rate must be 0..1 and kinds a non-empty subset of {FAULT_KINDS}")
        with self._lock:
            self._fault_rate, self._fault_kinds = float(rate), kinds
            if seed is not None:
                self._rng = random.Random(seed)
            if timeout_sleep is not None:
                self.timeout_sleep = float(timeout_sleep)

    def block_api(self, path: str, errcode: int | None = 45009) -> None:
        """Answer every call of `path` with `errcode`; None lifts the block."""
        api = path.removeprefix("/").removeprefix("cgi-bin/")
        with self._lock:
            if errcode is None:
                self._blocked.pop(api, None)
            else:
                self._blocked[api] = int(errcode)

    def fail_next(self, path: str, errcode: int, times: int = 1) -> None:
        """Answer the next `times` calls of `path` with `errcode` (one worker hears 45033...)."""
        api = path.removeprefix("/").removeprefix("cgi-bin/")
        with self._lock:
            self._next_errors.setdefault(api, []).extend([int(errcode)] * int(times))

    def set_quota(self, calls: int | None, seconds: float = 60.0, apis: list | tuple | None = None) -> None:
        """WeCom's frequency limit, over a sliding window: a corp's call of one API answers 45009
        once `calls` calls of it were answered in the last `seconds` (None lifts the quota).
        Only these `apis` when given; gettoken never."""
        with self._lock:
            self._quota = None if calls is None else (int(calls), float(seconds), frozenset(apis) if apis else None)
            self._quota_calls = {}

    def _over_quota(self, corp_id: str, api: str) -> bool:
        if self._quota is None or api == "gettoken":
            return False
        calls, seconds, apis = self._quota
        if apis is not None and api not in apis:
            return False
        now = self.now()
        recent = self._quota_calls.setdefault((corp_id, api), deque())
        while recent and recent[0] <= now - seconds:
            recent.popleft()
        if len(recent) >= calls:
            return True
        recent.append(now)
        return False

    def welcomes(self, corp_id: str | None = None) -> list[dict]:
        with self._lock:
            return [dict(w) for w in self._welcomes if corp_id in (None, w["corp_id"])]

    def _session(self) -> requests.Session:
        """One HTTP session per delivering thread: WeCom keeps its connections to a callback URL."""
        session = getattr(self._senders, "session", None)
        if session is None:
            session = self._senders.session = requests.Session()
        return session

    def deliveries(self, corp_id: str | None = None) -> list[dict]:
        """Each callback POST sent: {corp_id, sent_at, seconds (until the answer), status}."""
        with self._lock:
            return [dict(d) for d in self._deliveries if corp_id in (None, d["corp_id"])]

    def stats(self) -> dict:
        with self._lock:
            outcomes: dict[str, dict[str, int]] = {}
            for (api, outcome), n in self.outcome_counts.items():
                outcomes.setdefault(api, {})[outcome] = n
            return {"calls": dict(self.call_counts), "outcomes": outcomes, "gettoken": dict(self.gettoken_counts)}

    def state(self, corp_id: str | None = None) -> dict:
        with self._lock:
            corp_ids = [corp_id] if corp_id else sorted(self._corps)
            return {"now": self.now(), "corps": {c: self._dump(self._corp(c)) for c in corp_ids}}

    def _dump(self, corp: _Corp) -> dict:
        return copy.deepcopy(
            {
                "agent_id": corp.agent_id,
                "callback_url": corp.callback_url,
                "departments": list(corp.departments.values()),
                "users": list(corp.users.values()),
                "resigned": list(corp.resigned.values()),
                "customers": list(corp.customers.values()),
                "follows": list(corp.follows.values()),
                "tag_groups": [self._group_out(g, g["tag"].values()) for g in corp.tag_groups.values()],
                "contact_ways": list(corp.contact_ways.values()),
                "transfers": corp.transfers,
                "chats": list(corp.chats.values()),
                "moments": list(corp.moments.values()),
            }
        )

    # ---- HTTP server -------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 8900) -> tuple[ThreadingHTTPServer, threading.Thread]:
        if host != "127.0.0.1":
            raise ValueError("the simulator binds to 127.0.0.1 only")
        server = _Server((host, int(port)), _Handler)
        server.sim = self  # type: ignore[attr-defined]
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="wecom-sim", daemon=True)
        thread.start()
        self._server = server
        self.base_url = f"http://{host}:{server.server_address[1]}"
        return server, thread

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, Any]:
        """Route one HTTP request; returns (status, JSON-able payload or text)."""
        if path.startswith("/cgi-bin/"):
            return self.handle_api(method, path[len("/cgi-bin/") :], query, body)
        if path.startswith("/sim/"):
            return self._control(method, path[len("/sim/") :], query, body)
        return 404, {"errcode": 40035, "errmsg": f"unknown path {path}"}

    # ---- /cgi-bin: the API ---------------------------------------------------------------------

    def handle_api(self, method: str, api: str, query: dict, body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.call_counts[api] += 1
            fault = self._pick_fault(api)
            if fault is None and self._over_quota(self._caller(query), api):
                fault = "45009"
            self._in_flight[api] += 1
            self.peak_in_flight[api] = max(self.peak_in_flight[api], self._in_flight[api])
        try:
            return self._answer(method, api, query, body, fault)
        finally:
            with self._lock:
                self._in_flight[api] -= 1

    def _caller(self, query: dict) -> str:
        """The corp a call is made for, from its token (quotas are per corp)."""
        token = self._tokens.get(str(query.get("access_token", "")))
        return token[0] if token else ""

    def _answer(self, method: str, api: str, query: dict, body: bytes, fault: str | None) -> tuple[int, Any]:
        if self.latency:
            time.sleep(self.latency)  # outside the lock: calls overlap as they would at WeCom
        if fault == "http502":
            self._record(api, "http502")
            return 502, "<html><body><h1>502 Bad Gateway</h1></body></html>"
        if fault == "timeout":
            time.sleep(self.timeout_sleep)  # outside the lock: other calls go on meanwhile
        if fault in (None, "timeout"):
            payload = self._run_api(method, api, query, body)
        else:
            payload = ApiError(int(fault), "injected").payload()
        self._record(api, "timeout" if fault == "timeout" else str(payload["errcode"]))
        return 200, payload

    def _pick_fault(self, api: str) -> str | None:
        if self._next_errors.get(api):
            return str(self._next_errors[api].pop(0))
        if api in self._blocked:
            return str(self._blocked[api])
        if api != "gettoken" and self._fault_rate and self._rng.random() < self._fault_rate:
            return self._rng.choice(self._fault_kinds)
        return None

    def _record(self, api: str, outcome: str) -> None:
        with self._lock:
            self.outcome_counts[(api, outcome)] += 1

    def _run_api(self, method: str, api: str, query: dict, body: bytes) -> dict:
        try:
            with self._lock:
                if api == "gettoken":
                    return {"errcode": 0, "errmsg": "ok", **self._gettoken(query)}
                if api not in _ROUTES:
                    raise ApiError(40035, f"unknown api /cgi-bin/{api}")
                want, handler = _ROUTES[api]
                if method != want:
                    raise ApiError(40035, f"/cgi-bin/{api} expects {want}")
                corp = self._auth(query)
                args = query if method == "GET" else self._json_body(body)
                return {"errcode": 0, "errmsg": "ok", **getattr(self, handler)(corp, args)}
        except ApiError as exc:
            return exc.payload()
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # badly typed parameters
            return ApiError(40058, repr(exc)).payload()

    @staticmethod
    def _json_body(body: bytes) -> dict:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(47001, "Warning: wrong json format.")
        return data

    def _gettoken(self, q: dict) -> dict:
        corp_id, secret = q.get("corpid"), q.get("corpsecret")
        self.gettoken_counts[corp_id or ""] += 1
        if not corp_id:
            raise ApiError(41002)
        if not secret:
            raise ApiError(41004)
        corp = self._corps.get(corp_id)
        if corp is None:
            raise ApiError(40013)
        if secret != corp.secret:
            raise ApiError(40001)
        token = _rand(64)
        self._tokens[token] = (corp_id, self.now() + TOKEN_TTL)
        return {"access_token": token, "expires_in": TOKEN_TTL}

    def _auth(self, q: dict) -> _Corp:
        token = q.get("access_token")
        if not token:
            raise ApiError(41001)
        if token not in self._tokens:
            raise ApiError(40014)
        corp_id, expires_at = self._tokens[token]
        if self.now() >= expires_at:
            raise ApiError(42001)
        return self._corp(corp_id)

    def _corp(self, corp_id: str) -> _Corp:
        corp = self._corps.get(corp_id)
        if corp is None:
            raise ApiError(40013, f"unknown corp {corp_id}")
        self._settle_transfers(corp)
        return corp

    # org

    def _subtree(self, corp: _Corp, root: int) -> set[int]:
        ids, todo = {root}, [root]
        while todo:
            parent = todo.pop()
            for dept in corp.departments.values():
                if dept["parentid"] == parent and dept["id"] not in ids:
                    ids.add(dept["id"])
                    todo.append(dept["id"])
        return ids

    def _department_list(self, corp: _Corp, q: dict) -> dict:
        ids = set(corp.departments)
        if q.get("id"):
            if int(q["id"]) not in corp.departments:
                raise ApiError(60003)
            ids = self._subtree(corp, int(q["id"]))
        return {"department": [dict(corp.departments[i]) for i in sorted(ids)]}

    def _user_list(self, corp: _Corp, q: dict) -> dict:
        if not q.get("department_id"):
            raise ApiError(41019)
        dept = int(q["department_id"])
        if dept not in corp.departments:
            raise ApiError(60003)
        ids = self._subtree(corp, dept) if q.get("fetch_child") == "1" else {dept}
        users = [copy.deepcopy(u) for u in corp.users.values() if ids & set(u["department"])]
        return {"userlist": users}

    def _user_get(self, corp: _Corp, q: dict) -> dict:
        if not q.get("userid"):
            raise ApiError(41009)
        if q["userid"] not in corp.users:
            raise ApiError(60111)
        return copy.deepcopy(corp.users[q["userid"]])

    # customers

    def _tag_index(self, corp: _Corp) -> dict[str, tuple[dict, dict]]:
        return {tid: (g, t) for g in corp.tag_groups.values() for tid, t in g["tag"].items()}

    def _follow_out(self, corp: _Corp, f: dict, batch: bool = False) -> dict:
        keys = ("userid", "remark", "description", "createtime", "remark_mobiles", "add_way", "oper_userid")
        out = {k: f[k] for k in keys}
        if f["remark_corp_name"]:
            out["remark_corp_name"] = f["remark_corp_name"]
        if f["state"]:  # WeCom omits state when the customer did not come through a "state" channel
            out["state"] = f["state"]
        index = self._tag_index(corp)
        tag_ids = [t for t in f["tag_ids"] if t in index]
        if batch:
            out["tag_id"] = tag_ids
        else:
            out["tags"] = [
                {"group_name": index[t][0]["group_name"], "tag_name": index[t][1]["name"], "tag_id": t, "type": 1}
                for t in tag_ids
            ]
        return copy.deepcopy(out)

    def _live_follow(self, corp: _Corp, userid: str | None, external_userid: str | None) -> dict:
        if not userid:
            raise ApiError(41009)
        if not external_userid:
            raise ApiError(41035)
        if userid not in corp.users:
            raise ApiError(60111)
        if external_userid not in corp.customers:
            raise ApiError(40096)
        follow = corp.follows.get((userid, external_userid))
        if follow is None:  # never added, or the member deleted the customer
            raise ApiError(84061)
        return follow

    def _follow_user_list(self, corp: _Corp, q: dict) -> dict:
        return {"follow_user": sorted(corp.users)}

    def _contact_list(self, corp: _Corp, q: dict) -> dict:
        userid = q.get("userid")
        if not userid:
            raise ApiError(41009)
        if userid not in corp.users:
            raise ApiError(60111)
        ids = [e for (u, e) in corp.follows if u == userid]
        if not ids:  # WeCom answers 84061 rather than an empty list for a member without customers
            raise ApiError(84061)
        return {"external_userid": ids}

    def _contact_get(self, corp: _Corp, q: dict) -> dict:
        ext = q.get("external_userid")
        if not ext:
            raise ApiError(41035)
        if ext not in corp.customers:
            raise ApiError(40096)
        follows = [f for (u, e), f in corp.follows.items() if e == ext and u in corp.users]
        if not follows:
            raise ApiError(84061)
        return {
            "external_contact": copy.deepcopy(corp.customers[ext]),
            "follow_user": [self._follow_out(corp, f) for f in follows],
        }

    def _batch_get_by_user(self, corp: _Corp, b: dict) -> dict:
        userids = b.get("userid_list") or []
        if not userids:
            raise ApiError(41009)
        if len(userids) > 100:
            raise ApiError(40058, "userid_list: at most 100")
        limit = _limit(b.get("limit"), 50, 100)
        wanted = set(userids)
        keys = [k for k in sorted(corp.follows) if k[0] in wanted and k[0] in corp.users]
        page, next_cursor = _page(keys, b.get("cursor"), limit)
        return {
            "external_contact_list": [
                {
                    "external_contact": copy.deepcopy(corp.customers[ext]),
                    "follow_info": self._follow_out(corp, corp.follows[(u, ext)], batch=True),
                }
                for u, ext in page
            ],
            "next_cursor": next_cursor,
        }

    def _remark(self, corp: _Corp, b: dict) -> dict:
        follow = self._live_follow(corp, b.get("userid"), b.get("external_userid"))
        limits = {"remark": 20, "description": 150, "remark_company": 20}
        fields = [*limits, "remark_mobiles", "remark_pic_mediaid"]
        if not any(k in b for k in fields):
            raise ApiError(40058, "nothing to change")
        for key, maximum in limits.items():
            if len(b.get(key) or "") > maximum:
                raise ApiError(40058, f"{key} longer than {maximum} characters")
        for key in ("remark", "description"):
            if key in b:
                follow[key] = b[key]
        if "remark_company" in b:
            follow["remark_corp_name"] = b["remark_company"]
        if "remark_mobiles" in b:  # overwrites; [""] clears
            follow["remark_mobiles"] = [m for m in b["remark_mobiles"] if m]
        return {}

    # contact ways ("联系我")

    def _check_contact_way(self, corp: _Corp, way: dict) -> None:
        for key in ("remark", "state"):
            if len(way.get(key) or "") > 30:
                raise ApiError(40058, f"{key} longer than 30 characters")
        users, parties = way.get("user") or [], way.get("party") or []
        if way["type"] == 1 and (len(users) != 1 or parties):
            raise ApiError(40058, "type 1 needs exactly one user")
        for userid in users:
            if userid not in corp.users:
                raise ApiError(40003, userid)
            if corp.users[userid]["status"] != 1:
                raise ApiError(41054, userid)
        if any(int(p) not in corp.departments for p in parties):
            raise ApiError(40066)
        expanded = self._way_users(corp, way)
        if len(expanded) > 100:
            raise ApiError(41041)
        if not expanded:
            raise ApiError(40058, "user or party required")
        for key in ("expires_in", "chat_expires_in"):
            if int(way.get(key) or 0) > 14 * 86400:
                raise ApiError(40058, f"{key} longer than 14 days")

    def _way_users(self, corp: _Corp, way: dict) -> list[str]:
        """The way's users plus the members of its departments (the 41041 limit counts both)."""
        users = list(way.get("user") or [])
        for party in way.get("party") or []:
            ids = self._subtree(corp, int(party))
            users += [u for u, m in corp.users.items() if ids & set(m["department"]) and u not in users]
        return users

    def _contact_way(self, corp: _Corp, b: dict) -> dict:
        if not b.get("config_id"):
            raise ApiError(41043)
        if b["config_id"] not in corp.contact_ways:
            raise ApiError(41044)
        return corp.contact_ways[b["config_id"]]

    _WAY_FIELDS = ("style", "remark", "skip_verify", "state", "user", "party",
                   "expires_in", "chat_expires_in", "unionid", "conclusions")

    def _add_contact_way(self, corp: _Corp, b: dict) -> dict:
        if b.get("type") is None:
            raise ApiError(41037)
        if b.get("scene") is None:
            raise ApiError(41038)
        if b["type"] not in (1, 2):
            raise ApiError(41039)
        if b["scene"] not in (1, 2):
            raise ApiError(41040)
        config_id = secrets.token_hex(16)
        way = {"config_id": config_id, "type": b["type"], "scene": b["scene"], "style": 1, "remark": "",
               "skip_verify": True, "state": "", "user": [], "party": [], "is_temp": bool(b.get("is_temp")),
               "create_time": int(self.now())}
        if way["is_temp"]:
            way.update(expires_in=7 * 86400, chat_expires_in=86400)
        way.update({k: b[k] for k in self._WAY_FIELDS if k in b})
        self._check_contact_way(corp, way)
        if way["scene"] == 2:  # only QR-code ways have a picture
            way["qr_code"] = f"https://wework.qpic.cn/wwpic/sim_{config_id}/0"
        corp.contact_ways[config_id] = way
        return {k: way[k] for k in ("config_id", "qr_code") if k in way}

    def _get_contact_way(self, corp: _Corp, b: dict) -> dict:
        way = self._contact_way(corp, b)
        return {"contact_way": {k: copy.deepcopy(v) for k, v in way.items() if k != "create_time"}}

    def _update_contact_way(self, corp: _Corp, b: dict) -> dict:
        way = self._contact_way(corp, b)
        updated = {**way, **{k: b[k] for k in self._WAY_FIELDS if k in b}}
        self._check_contact_way(corp, updated)
        way.update(updated)
        return {}

    def _del_contact_way(self, corp: _Corp, b: dict) -> dict:
        del corp.contact_ways[self._contact_way(corp, b)["config_id"]]
        return {}

    def _list_contact_way(self, corp: _Corp, b: dict) -> dict:
        start, end = b.get("start_time") or 0, b.get("end_time") or float("inf")
        ways = [w["config_id"] for w in corp.contact_ways.values() if start <= w["create_time"] <= end]
        page, next_cursor = _page(ways, b.get("cursor"), _limit(b.get("limit"), 100, 1000))
        return {"contact_way": [{"config_id": c} for c in page], "next_cursor": next_cursor}

    # welcome message (FACTS §6)

    def _send_welcome_msg(self, corp: _Corp, b: dict) -> dict:
        code = b.get("welcome_code")
        if not code:
            raise ApiError(41049)
        text = (b.get("text") or {}).get("content") or ""
        attachments = b.get("attachments") or []
        if not text and not attachments:
            raise ApiError(44004, "text and attachments both empty")
        if len(text.encode("utf-8")) > 4000:
            raise ApiError(45002, "text.content over 4000 bytes")
        if len(attachments) > 9:
            raise ApiError(41064)
        _check_attachments(attachments)
        issued = corp.welcome_codes.get(code)
        if issued is None:
            raise ApiError(41050, "unknown code")
        if issued["used_at"] is not None:  # already delivered
            raise ApiError(41051)
        now = self.now()
        if now - issued["issued_at"] > WELCOME_WINDOW:
            raise ApiError(41050, "code expired")
        issued["used_at"] = now
        self._welcomes.append(
            {
                "corp_id": corp.corp_id,
                "welcome_code": code,
                "userid": issued["userid"],
                "external_userid": issued["external_userid"],
                "text": text,
                "attachments": copy.deepcopy(attachments),
                "issued_at": issued["issued_at"],
                "sent_at": now,
                "elapsed": now - issued["issued_at"],
            }
        )
        return {}

    # corp tags

    @staticmethod
    def _group_out(group: dict, tags) -> dict:
        out = {k: group[k] for k in ("group_id", "group_name", "create_time", "order")}
        return {**out, "deleted": False, "tag": [{**t, "deleted": False} for t in tags]}

    def _add_tags(self, corp: _Corp, group_id: str | None, group_name: str | None, tags: list, order: int = 0):
        """Shared by add_corp_tag and the tag_change action: returns (group, tags)."""
        if not tags or any(not t.get("name") for t in tags):
            raise ApiError(41018)
        if any(len(t["name"]) > 30 for t in tags) or len(group_name or "") > 30:
            raise ApiError(40072)
        if group_id:
            if group_id not in corp.tag_groups:
                raise ApiError(40068, group_id)
            group = corp.tag_groups[group_id]
        elif group_name:
            group = next((g for g in corp.tag_groups.values() if g["group_name"] == group_name), None)
        else:
            raise ApiError(40058, "group_id or group_name required")
        existing = {} if group is None else {t["name"]: t for t in group["tag"].values()}
        new_names = {t["name"] for t in tags} - set(existing)
        if len(self._tag_index(corp)) + len(new_names) > 3000:
            raise ApiError(40126)
        now = int(self.now())
        if group is None:  # an existing group_name means "add into that group"
            group = {"group_id": "et" + _rand(20), "group_name": group_name, "create_time": now,
                     "order": int(order), "tag": {}}
            corp.tag_groups[group["group_id"]] = group
        result = []
        for t in tags:  # duplicate names collapse onto the existing tag
            tag = existing.get(t["name"])
            if tag is None:
                tag = {"id": "et" + _rand(20), "name": t["name"], "create_time": now,
                       "order": int(t.get("order") or 0)}
                group["tag"][tag["id"]] = existing[t["name"]] = tag
            result.append(tag)
        return group, result

    def _delete_tags(self, corp: _Corp, tag_ids: list, group_ids: list) -> None:
        index = self._tag_index(corp)
        unknown = [t for t in tag_ids if t not in index] + [g for g in group_ids if g not in corp.tag_groups]
        if unknown:
            raise ApiError(40068, ",".join(unknown))
        for tid in tag_ids:
            del index[tid][0]["tag"][tid]
        for gid, group in list(corp.tag_groups.items()):
            if gid in group_ids or not group["tag"]:  # WeCom keeps no empty groups
                del corp.tag_groups[gid]
        live = self._tag_index(corp)
        for follow in corp.follows.values():
            follow["tag_ids"] = [t for t in follow["tag_ids"] if t in live]

    def _get_corp_tag_list(self, corp: _Corp, b: dict) -> dict:
        tag_ids, group_ids = b.get("tag_id") or [], b.get("group_id") or []
        groups = []
        for group in sorted(corp.tag_groups.values(), key=lambda g: (g["order"], g["create_time"])):
            if group_ids:  # group_id wins over tag_id
                if group["group_id"] in group_ids:
                    groups.append(self._group_out(group, group["tag"].values()))
                continue
            tags = [t for t in group["tag"].values() if not tag_ids or t["id"] in tag_ids]
            if tags:
                groups.append(self._group_out(group, tags))
        return {"tag_group": copy.deepcopy(groups)}

    def _add_corp_tag(self, corp: _Corp, b: dict) -> dict:
        tags = b.get("tag") or []
        group, tags = self._add_tags(corp, b.get("group_id"), b.get("group_name"), tags, b.get("order") or 0)
        return {"tag_group": copy.deepcopy(self._group_out(group, tags))}

    def _del_corp_tag(self, corp: _Corp, b: dict) -> dict:
        tag_ids, group_ids = b.get("tag_id") or [], b.get("group_id") or []
        if not tag_ids and not group_ids:
            raise ApiError(40058, "tag_id or group_id required")
        self._delete_tags(corp, tag_ids, group_ids)
        return {}

    def _apply_tags(self, corp: _Corp, follow: dict, add: list, remove: list) -> None:
        index = self._tag_index(corp)
        unknown = [t for t in [*add, *remove] if t not in index]
        if unknown:
            raise ApiError(40068, ",".join(unknown))
        kept = [t for t in follow["tag_ids"] if t not in remove]
        follow["tag_ids"] = kept + [t for t in dict.fromkeys(add) if t not in kept]

    def _mark_tag(self, corp: _Corp, b: dict) -> dict:
        follow = self._live_follow(corp, b.get("userid"), b.get("external_userid"))
        add, remove = b.get("add_tag") or [], b.get("remove_tag") or []
        if not add and not remove:
            raise ApiError(40058, "add_tag or remove_tag required")
        self._apply_tags(corp, follow, add, remove)
        return {}

    # transfers (在职继承 / 离职继承, FACTS §5.7)

    def _settle_transfers(self, corp: _Corp) -> None:
        """Complete transfers whose 24 h have passed: the takeover member becomes the follower."""
        now = self.now()
        for t in corp.transfers:
            if t["status"] == 2 and now >= t["takeover_time"]:
                t["status"] = 1
                old = corp.follows.pop((t["handover_userid"], t["external_userid"]), None)
                if old is not None:
                    new = {**old, "userid": t["takeover_userid"], "createtime": t["takeover_time"], "add_way": 202,
                           "oper_userid": t["takeover_userid"]}
                    corp.follows.setdefault((t["takeover_userid"], t["external_userid"]), new)

    def _transfer(self, corp: _Corp, b: dict, kind: str) -> dict:
        handover, takeover = b.get("handover_userid"), b.get("takeover_userid")
        ext_ids = b.get("external_userid") or []
        if not handover or not takeover:
            raise ApiError(41009)
        if not ext_ids:
            raise ApiError(41035)
        if len(ext_ids) > 100:
            raise ApiError(40058, "external_userid: at most 100 per call")
        if handover == takeover:
            raise ApiError(40130)
        if takeover not in corp.users:
            raise ApiError(40003, "takeover_userid")
        if kind == "resigned" and handover in corp.users:
            raise ApiError(40097)
        if handover not in (corp.resigned if kind == "resigned" else corp.users):
            raise ApiError(40003, "handover_userid")
        if len(b.get("transfer_success_msg") or "") > 200:
            raise ApiError(40058, "transfer_success_msg longer than 200 characters")
        now = self.now()
        results = [
            {"external_userid": ext, "errcode": self._start_transfer(corp, kind, handover, takeover, ext, now)}
            for ext in ext_ids
        ]
        return {"customer": results}

    def _start_transfer(self, corp: _Corp, kind: str, handover: str, takeover: str, ext: str, now: float) -> int:
        if ext not in corp.customers:
            return 40096
        if (handover, ext) not in corp.follows:
            return 40131
        if any(t["external_userid"] == ext and t["status"] == 2 for t in corp.transfers):
            return 40129
        recent = [t for t in corp.transfers
                  if t["kind"] == "onjob" and t["external_userid"] == ext and now - t["start"] < ONJOB_TRANSFER_WINDOW]
        if kind == "onjob" and len(recent) >= 2:
            return 40128
        corp.transfers.append(
            {"kind": kind, "handover_userid": handover, "takeover_userid": takeover, "external_userid": ext,
             "start": now, "takeover_time": int(now + TRANSFER_DELAY), "status": 2}
        )
        return 0

    def _transfer_result(self, corp: _Corp, b: dict, kind: str) -> dict:
        handover, takeover = b.get("handover_userid"), b.get("takeover_userid")
        if not handover or not takeover:
            raise ApiError(41009)
        rows = [
            {"external_userid": t["external_userid"], "status": t["status"], "takeover_time": t["takeover_time"]}
            for t in corp.transfers
            if t["kind"] == kind and t["handover_userid"] == handover and t["takeover_userid"] == takeover
        ]
        page, next_cursor = _page(rows, b.get("cursor"), 1000)
        return {"customer": page, "next_cursor": next_cursor}

    def _transfer_onjob(self, corp: _Corp, b: dict) -> dict:
        return self._transfer(corp, b, "onjob")

    def _transfer_resigned(self, corp: _Corp, b: dict) -> dict:
        return self._transfer(corp, b, "resigned")

    def _transfer_result_onjob(self, corp: _Corp, b: dict) -> dict:
        return self._transfer_result(corp, b, "onjob")

    def _transfer_result_resigned(self, corp: _Corp, b: dict) -> dict:
        return self._transfer_result(corp, b, "resigned")

    def _get_unassigned_list(self, corp: _Corp, b: dict) -> dict:
        in_transfer = {(t["handover_userid"], t["external_userid"]) for t in corp.transfers}
        rows = [
            {"handover_userid": u, "external_userid": e, "dimission_time": corp.resigned[u]["dimission_time"]}
            for (u, e) in sorted(corp.follows)
            if u in corp.resigned and (u, e) not in in_transfer
        ]
        page, next_cursor = _page(rows, b.get("cursor"), _limit(b.get("page_size"), 1000, 1000))
        return {"info": page, "is_last": not next_cursor, "next_cursor": next_cursor}

    # Moments (FACTS §5.6)

    def _add_moment_task(self, corp: _Corp, b: dict) -> dict:
        text = (b.get("text") or {}).get("content") or ""
        attachments = b.get("attachments") or []
        if not text and not attachments:
            raise ApiError(41089)
        if len(text.encode("utf-8")) > 4000:
            raise ApiError(40058, "invalid text size")
        if len(attachments) > 9:
            raise ApiError(41064)
        _check_attachments(attachments, allowed=("image", "video", "link"))
        kinds = {a["msgtype"] for a in attachments}
        if len(kinds) > 1 or (kinds & {"video", "link"} and len(attachments) > 1):
            raise ApiError(41065, "9 images or 1 video or 1 link")
        jobid = _rand(32)
        corp.moments[jobid] = {"jobid": jobid, "moment_id": "mom" + _rand(29), "text": text,
                               "attachments": copy.deepcopy(attachments),
                               "visible_range": copy.deepcopy(b.get("visible_range") or {}),
                               "create_time": int(self.now())}
        return {"jobid": jobid}

    def _get_moment_task_result(self, corp: _Corp, q: dict) -> dict:
        job = corp.moments.get(q.get("jobid") or "")
        if job is None:
            raise ApiError(40088)
        visible = job["visible_range"]
        senders = (visible.get("sender_list") or {}).get("user_list") or []
        tags = (visible.get("external_contact_list") or {}).get("tag_list") or []
        index = self._tag_index(corp)
        return {
            "status": 3,
            "type": "add_moment_task",
            "result": {
                "errcode": 0,
                "errmsg": "ok",
                "moment_id": job["moment_id"],
                "invalid_sender_list": {
                    "user_list": [u for u in senders if u not in corp.users],
                    "department_list": [],
                },
                "invalid_external_contact_list": {"tag_list": [t for t in tags if t not in index]},
            },
        }

    # ---- client-side actions: mutate state, then deliver a callback ----------------------------

    def _event(self, corp: _Corp, event: str, change_type: str, **fields: Any) -> str:
        """Plaintext of a self-built-app event (FACTS §3.1); None fields are left out."""
        items = [("ToUserName", corp.corp_id), ("FromUserName", "sys"), ("CreateTime", int(self.now())),
                 ("MsgType", "event"), ("Event", event), ("ChangeType", change_type), *fields.items()]
        parts = []
        for name, value in items:
            if value is None:
                continue
            if isinstance(value, int):
                inner = str(value)
            elif isinstance(value, (list, tuple)):
                inner = "".join(f"<Item>{_cdata(v)}</Item>" for v in value)
            else:
                inner = _cdata(value)
            parts.append(f"<{name}>{inner}</{name}>")
        return "<xml>" + "".join(parts) + "</xml>"

    def _deliver(self, corp: _Corp, xml: str, repeat: int = 1, deliver: bool = True) -> list:
        """POST the sealed callback `repeat` times; returns HTTP statuses (or exception names).

        deliver=False "loses" the callback; a corp without callback_url gets nothing either."""
        if int(repeat) < 1:
            raise ValueError("repeat must be >= 1")
        if not deliver or not corp.callback_url:
            return []
        if corp.crypto is None:
            from scrm.wecom.callback.crypto import (
                WeComCrypto,  # lazy: API-only use of the simulator needs no crypto
            )

            corp.crypto = WeComCrypto(corp.token, corp.encoding_aes_key, corp.corp_id)
        sep = "&" if "?" in corp.callback_url else "?"
        statuses: list = []
        for _ in range(int(repeat)):
            # Transport timestamp is wall-clock time, not the simulated clock: receivers may check
            # freshness against their own clock. Each re-send is sealed anew (new nonce), like WeCom's.
            body, query = corp.crypto.seal(xml, timestamp=str(int(time.time())), nonce=str(secrets.randbelow(10**10)),
                                           agent_id=corp.agent_id)
            sent_at, started = time.time(), time.perf_counter()
            try:
                resp = self._session().post(corp.callback_url + sep + urlencode(query), data=body.encode("utf-8"),
                                     headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=CALLBACK_TIMEOUT)
                statuses.append(resp.status_code)
            except requests.RequestException as exc:
                statuses.append(type(exc).__name__)
            with self._lock:
                self._deliveries.append({"corp_id": corp.corp_id, "sent_at": sent_at, "status": statuses[-1],
                                         "seconds": time.perf_counter() - started})
        return statuses

    def add_customer(
        self,
        corp_id: str,
        userid: str | None = None,
        state: str | None = None,
        name: str | None = None,
        unionid: str | None = None,
        mobile: str | None = None,
        external_userid: str | None = None,
        config_id: str | None = None,
        welcome: bool = True,
        repeat: int = 1,
        deliver: bool = True,
    ) -> dict:
        """A customer adds member `userid` (add_way 1 = QR scan) → add_external_contact.

        config_id: the customer scanned that contact way (its user and state are used).
        external_userid: re-add an existing customer. welcome=False: no WelcomeCode (as when the
        admin console has its own welcome message). mobile is kept as the member's remark_mobiles."""
        with self._lock:
            corp = self._corp(corp_id)
            if config_id is not None:
                way = self._contact_way(corp, {"config_id": config_id})
                userid = userid or self._way_users(corp, way)[0]
                state = way["state"] if state is None else state
            if userid not in corp.users:
                raise ApiError(60111, str(userid))
            ext = external_userid or "wm" + _rand(30)
            now = self.now()
            customer = corp.customers.setdefault(ext, {"external_userid": ext, "name": name or f"Customer {ext[-4:]}",
                                                       "type": 1, "gender": 0,
                                                       "avatar": f"https://wework.qpic.cn/wwhead/sim_{ext}/0"})
            if unionid:
                customer["unionid"] = unionid
            corp.follows[(userid, ext)] = {"userid": userid, "remark": "", "description": "", "createtime": int(now),
                                           "tag_ids": [], "remark_mobiles": [mobile] if mobile else [], "add_way": 1,
                                           "state": state or "", "oper_userid": ext, "remark_corp_name": ""}
            code = None
            if welcome:  # issued now, i.e. when the event is sent: the 20 s window starts here
                code = _rand(43)
                corp.welcome_codes[code] = {"issued_at": now, "userid": userid, "external_userid": ext,
                                            "used_at": None}
            xml = self._event(corp, "change_external_contact", "add_external_contact", UserID=userid,
                              ExternalUserID=ext, State=state or None, WelcomeCode=code)
        statuses = self._deliver(corp, xml, repeat, deliver)
        return {"external_userid": ext, "welcome_code": code, "callback_status": statuses}

    def delete_follow(
        self, corp_id: str, userid: str, external_userid: str, repeat: int = 1, deliver: bool = True
    ) -> dict:
        """The customer deletes the member → del_follow_user. A one-way relation remains, so the
        customer APIs keep working (FACTS §3.2)."""
        with self._lock:
            corp = self._corp(corp_id)
            # Kept (and shown in /sim/state) because the relation stays one-way, not gone.
            self._live_follow(corp, userid, external_userid)["deleted_by_customer"] = True
            xml = self._event(corp, "change_external_contact", "del_follow_user", UserID=userid,
                              ExternalUserID=external_userid)
        return {"callback_status": self._deliver(corp, xml, repeat, deliver)}

    def staff_deletes_customer(
        self,
        corp_id: str,
        userid: str,
        external_userid: str,
        source: str | None = None,
        repeat: int = 1,
        deliver: bool = True,
    ) -> dict:
        """The member deletes the customer → del_external_contact; the APIs then answer 84061."""
        with self._lock:
            corp = self._corp(corp_id)
            self._live_follow(corp, userid, external_userid)
            del corp.follows[(userid, external_userid)]
            xml = self._event(corp, "change_external_contact", "del_external_contact", UserID=userid,
                              ExternalUserID=external_userid, Source=source)
        return {"callback_status": self._deliver(corp, xml, repeat, deliver)}

    def edit_customer(
        self,
        corp_id: str,
        userid: str,
        external_userid: str,
        remark: str | None = None,
        description: str | None = None,
        remark_mobiles: list | None = None,
        add_tag: list | None = None,
        remove_tag: list | None = None,
        repeat: int = 1,
        deliver: bool = True,
    ) -> dict:
        """The member edits the customer's remark info or corp tags in the client → edit_external_contact."""
        with self._lock:
            corp = self._corp(corp_id)
            follow = self._live_follow(corp, userid, external_userid)
            self._apply_tags(corp, follow, add_tag or [], remove_tag or [])
            for key, value in (("remark", remark), ("description", description), ("remark_mobiles", remark_mobiles)):
                if value is not None:
                    follow[key] = value
            xml = self._event(corp, "change_external_contact", "edit_external_contact", UserID=userid,
                              ExternalUserID=external_userid)
        return {"callback_status": self._deliver(corp, xml, repeat, deliver)}

    def create_user(
        self,
        corp_id: str,
        userid: str,
        name: str | None = None,
        department: list | tuple = (1,),
        mobile: str | None = None,
        repeat: int = 1,
        deliver: bool = True,
    ) -> dict:
        """An admin adds a member → change_contact/create_user (FACTS §4.2)."""
        with self._lock:
            corp = self._corp(corp_id)
            member = self.add_staff(corp_id, userid, name, department, mobile)
            xml = self._event(corp, "change_contact", "create_user", UserID=userid, Name=member["name"],
                              Department=",".join(map(str, member["department"])),
                              MainDepartment=member["main_department"], Mobile=mobile, Status=1)
        return {"callback_status": self._deliver(corp, xml, repeat, deliver)}

    def delete_user(self, corp_id: str, userid: str, repeat: int = 1, deliver: bool = True) -> dict:
        """A member leaves (离职) → change_contact/delete_user; their customers become unassigned."""
        with self._lock:
            corp = self._corp(corp_id)
            if userid not in corp.users:
                raise ApiError(60111, userid)
            corp.resigned[userid] = {**corp.users.pop(userid), "dimission_time": int(self.now())}
            xml = self._event(corp, "change_contact", "delete_user", UserID=userid)
        return {"callback_status": self._deliver(corp, xml, repeat, deliver)}

    def tag_change(
        self,
        corp_id: str,
        change_type: str,
        tag_id: str | None = None,
        group_id: str | None = None,
        name: str | None = None,
        group_name: str | None = None,
        strategy_id: str | None = None,
        repeat: int = 1,
        deliver: bool = True,
    ) -> dict:
        """An admin changes corp tags in the console → change_external_tag (FACTS §3.4).

        create: tag `name` in group_id/group_name; update: rename tag_id (or group_id) to `name`;
        delete: tag_id or group_id; shuffle: reorder group_id (None = all groups)."""
        with self._lock:
            corp = self._corp(corp_id)
            if change_type in ("create", "update") and not name:
                raise ValueError(f"{change_type} needs a name")
            tag_type = "tag_group" if group_id and not tag_id else "tag"
            if change_type == "create":
                _, (tag,) = self._add_tags(corp, group_id, group_name, [{"name": name}])
                tag_id, tag_type = tag["id"], "tag"
            elif change_type == "update":
                index = self._tag_index(corp)
                if tag_id in index:
                    index[tag_id][1]["name"] = name
                elif group_id in corp.tag_groups:
                    corp.tag_groups[group_id]["group_name"] = name
                else:
                    raise ApiError(40068)
            elif change_type == "delete":
                self._delete_tags(corp, [tag_id] if tag_id else [], [group_id] if group_id and not tag_id else [])
            elif change_type != "shuffle":
                raise ValueError("change_type must be create, update, delete or shuffle")
            if change_type == "shuffle":
                fields = {"Id": group_id or "", "StrategyId": strategy_id}
            else:
                fields = {"Id": tag_id or group_id, "TagType": tag_type, "StrategyId": strategy_id}
            xml = self._event(corp, "change_external_tag", change_type, **fields)
        return {"id": fields["Id"], "callback_status": self._deliver(corp, xml, repeat, deliver)}

    def chat_change(
        self,
        corp_id: str,
        change_type: str,
        chat_id: str | None = None,
        owner: str | None = None,
        update_detail: str | None = None,
        mem_change_list: list | None = None,
        join_scene: int = 0,
        quit_scene: int = 0,
        repeat: int = 1,
        deliver: bool = True,
    ) -> dict:
        """A customer group changes → change_external_chat (FACTS §3.3).

        create (owner, mem_change_list = first members); update with update_detail add_member /
        del_member (mem_change_list) / change_owner (owner) / change_name / change_notice; dismiss."""
        with self._lock:
            corp = self._corp(corp_id)
            if change_type == "create":
                chat_id = chat_id or "wr" + _rand(30)
                members = ([owner] if owner else []) + list(mem_change_list or [])
                corp.chats[chat_id] = {"chat_id": chat_id, "owner": owner, "member_list": members,
                                       "member_version": secrets.token_hex(16)}
                xml = self._event(corp, "change_external_chat", "create", ChatId=chat_id)
            elif chat_id not in corp.chats:
                raise ValueError(f"unknown chat {chat_id}")
            elif change_type == "dismiss":
                del corp.chats[chat_id]
                xml = self._event(corp, "change_external_chat", "dismiss", ChatId=chat_id)
            elif change_type == "update":
                xml = self._chat_update(corp, corp.chats[chat_id], update_detail, owner, mem_change_list or [],
                                        join_scene, quit_scene)
            else:
                raise ValueError("change_type must be create, update or dismiss")
        return {"chat_id": chat_id, "callback_status": self._deliver(corp, xml, repeat, deliver)}

    def _chat_update(self, corp, chat, detail, owner, changed, join_scene, quit_scene) -> str:
        fields: dict[str, Any] = {"ChatId": chat["chat_id"], "UpdateDetail": detail}
        if detail in ("add_member", "del_member"):
            last = chat["member_version"]
            if detail == "add_member":
                chat["member_list"] += [m for m in changed if m not in chat["member_list"]]
                fields["JoinScene"] = int(join_scene)
            else:
                chat["member_list"] = [m for m in chat["member_list"] if m not in changed]
                fields["QuitScene"] = int(quit_scene)
            chat["member_version"] = secrets.token_hex(16)
            fields.update(MemChangeCnt=len(changed), MemChangeList=list(changed), LastMemVer=last,
                          CurMemVer=chat["member_version"])
        elif detail == "change_owner":
            chat["owner"] = owner
        elif detail not in ("change_name", "change_notice"):
            raise ValueError(f"unknown update_detail {detail!r}")
        return self._event(corp, "change_external_chat", "update", **fields)

    def raw(self, corp_id: str, xml: str, repeat: int = 1, deliver: bool = True) -> dict:
        """Seal and deliver an arbitrary plaintext (no state change)."""
        with self._lock:
            corp = self._corp(corp_id)
        return {"callback_status": self._deliver(corp, xml, repeat, deliver)}

    # ---- /sim: control API ------------------------------------------------------------------------

    def _control(self, method: str, route: str, query: dict, body: bytes) -> tuple[int, Any]:
        try:
            args = json.loads(body) if body else {}
            if method == "GET" and route == "welcomes":
                return 200, {"welcomes": self.welcomes(query.get("corp_id"))}
            if method == "GET" and route == "deliveries":
                return 200, {"deliveries": self.deliveries(query.get("corp_id"))}
            if method == "GET" and route == "calls":
                return 200, self.stats()
            if method == "GET" and route == "state":
                return 200, self.state(query.get("corp_id"))
            posts = {
                "corps": self.add_corp,
                "departments": self.add_department,
                "staff": self.add_staff,
                "faults": self.set_faults,
                "block": self.block_api,
                "fail_next": self.fail_next,
                "quota": self.set_quota,
                "clock/advance": self.advance,
                "reset": self.reset,
                **{f"actions/{name}": getattr(self, name) for name in ACTIONS},
            }
            if method != "POST" or route not in posts:
                return 404, {"error": f"unknown control endpoint {method} /sim/{route}"}
            result = posts[route](**args)
            return 200, result if isinstance(result, dict) else {"ok": True}
        except ApiError as exc:
            return 400, {"error": exc.errmsg, "errcode": exc.errcode}
        except (TypeError, ValueError, KeyError) as exc:
            return 400, {"error": repr(exc)}


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # many workers' connections at once: the default 5 resets the rest


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; every answer has Content-Length
    server_version = "WeComSim/1.0"
    # Headers and body leave in one write, at once: written apart on a kept-open connection,
    # the body would wait out the client's delayed ACK (40 ms).
    wbufsize = -1
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            status, payload = self.server.sim.handle(method, url.path, query, body)  # type: ignore[attr-defined]
        except Exception as exc:  # a simulator bug must not kill the connection thread silently
            status, payload = 500, {"errcode": -1, "errmsg": f"simulator error: {exc!r}"}
        if isinstance(payload, str):
            data, ctype = payload.encode("utf-8"), "text/html"
        else:
            data, ctype = json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=UTF-8"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. injected timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet; state is inspectable via /sim/calls
        pass


def main() -> None:
    # Standalone runs from the repo root: make the shared package importable for callback sealing.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "layers", "shared"))
    sim = WeComSimulator()
    _, thread = sim.start(port=int(os.environ.get("SCRM_SIM_PORT", "8900")))
    print(f"WeCom simulator listening on {sim.base_url}", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
