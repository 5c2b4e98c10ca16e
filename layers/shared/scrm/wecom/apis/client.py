"""WeCom server-API client: one pooled Session, explicit timeouts, the shared token, the
error policy of FACTS §5.8 and per-API blocks after 45009.

Policy (errors.py lists the classes):
* -1, 45033, HTTP 5xx/429, timeouts, connection errors: up to MAX_RETRIES retries with
  exponential backoff and full jitter, never sleeping past the caller's `deadline` nor past
  the time budget of the work in progress (scrm.platform.time_budget: a batch handler sets
  it from what its Lambda invocation has left), whichever comes first. An error raised after
  a repeat of an attempt that may have taken effect (read timeout, 5xx) says so
  (`earlier_attempt_unknown`): for send_welcome_msg, a final 41051 is then our own welcome.
  Calls that create something (add_contact_way, add_moment_task) are not repeated when the
  last attempt may have taken effect (read timeout, 5xx): the caller reconciles instead.
* 40014/42001: invalidate the token, refresh, retry once; again -> TokenError.
* configuration errors are raised on the first answer.
* every request waits for the corp's rate budget of its API (scrm.wecom.apis.governor),
  at the client's priority (interactive unless a job asks for bulk); 45009 blocks the API
  for every worker until the window ends (RateLimited), 45033 slows every worker down.

The access token travels only in the query string, and neither it nor the secret is ever
logged: requests' own exceptions quote the URL, so they are not chained to ours.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import InvalidSchema, InvalidURL, MissingSchema

from scrm.platform import credentials, time_budget
from scrm.platform.config import settings
from scrm.platform.credentials import AppCredentials, CorpCredentials
from scrm.wecom.apis import governor as governors
from scrm.wecom.apis import tokens
from scrm.wecom.apis.errors import (
    RATE_LIMITED,
    TOKEN_CODES,
    TRANSIENT_CODES,
    ConfigurationError,
    RateLimited,
    TokenError,
    TransientError,
    WeComError,
    error_for,
)

MAX_RETRIES = 3
BACKOFF_BASE = 0.5
BACKOFF_CAP = 4.0
DEFAULT_EXPIRES_IN = 7200.0
QUOTE_MAX = 300  # characters of an unexpected answer quoted in the error
NO_ANSWER = "no answer: "  # errmsg prefix of a failure that got no answer from WeCom at all

# One Session per process: connections to WeCom are pooled across calls and clients. The
# pool is wider than requests' default 10 so fan-out threads don't discard connections.
_SESSION = requests.Session()
_ADAPTER = HTTPAdapter(pool_connections=4, pool_maxsize=32)
_SESSION.mount("https://", _ADAPTER)
_SESSION.mount("http://", _ADAPTER)  # simulator, local proxies


@dataclass
class Counters:
    calls: int = 0  # HTTP requests sent, gettoken and retries included
    retries: int = 0  # requests repeated after a transient failure or a refused token
    token_refreshes: int = 0  # gettoken exchanges


totals = Counters()  # every client of this process, for benchmarks
_count_lock = threading.Lock()


def forget_caches() -> None:
    """Drop the process-local copy of the API blocks and leases (tests, local stack resets)."""
    governors.default_governor().forget()


def _errcode(data: dict) -> int:
    return int(data.get("errcode") or 0)


def _quoted(resp: requests.Response, params: dict) -> str:
    """What WeCom (or a proxy before it) said with an unexpected answer: its errcode and errmsg when
    the body is WeCom's JSON, else the start of the body; the token and the secret masked."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "errcode" in data:
        text = f"errcode {data.get('errcode')}: {data.get('errmsg', '')}"
    else:
        text = " ".join(resp.text.split())[:QUOTE_MAX] or "empty body"
    for secret in (params.get("access_token"), params.get("corpsecret")):
        if secret:
            text = text.replace(str(secret), "***")
    return text


class WeComClient:
    def __init__(self, creds: AppCredentials | CorpCredentials, base_url: str | None = None, session: requests.Session | None = None,
                 token_store: tokens.TokenStore | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, governor: governors.Governor | None = None,
                 priority: str = governors.INTERACTIVE, budget_deadline: float | None = None):
        self.creds = creds
        self.base_url = (base_url or settings().wecom_api_base).rstrip("/")
        self._session = session or _SESSION
        if token_store is None:
            # The process-wide store runs on the real clock; a test clock gets its own store.
            token_store = tokens.default_store() if clock is time.time else tokens.TokenStore(clock, sleep)
        self.tokens = token_store
        if governor is None:  # as the token store: the process-wide one runs on the real clock
            governor = governors.default_governor() if clock is time.time else governors.Governor(clock, sleep)
        self.governor = governor
        self.priority = priority
        self.budget_deadline = budget_deadline  # no call waits for the rate budget past this (a job's chunk)
        self._clock = clock
        self._sleep = sleep
        self._timeout = settings().wecom_timeout
        self.counters = Counters()

    # --- generic calls ------------------------------------------------------------------

    def get(self, path: str, params: dict | None = None, *, deadline: float | None = None) -> dict:
        """GET `path` (relative to the base URL, e.g. "user/get"); the decoded answer on errcode 0."""
        return self._call("GET", path, params, None, deadline, idempotent=True)

    def post(self, path: str, json: dict | None = None, *, params: dict | None = None,
             deadline: float | None = None, idempotent: bool = True) -> dict:
        """POST a JSON body. `idempotent=False`: a read timeout or 5xx is raised at once
        (TransientError.outcome_unknown) instead of being repeated."""
        return self._call("POST", path, params, json if json is not None else {}, deadline, idempotent)

    def _call(self, method: str, path: str, params: dict | None, body: dict | None,
              deadline: float | None, idempotent: bool) -> dict:
        api = path.strip("/")
        deadline = time_budget.clip(deadline)
        self.governor.check(self.creds.corp_id, api)
        token = self._token(deadline)
        data, unknown = self._exchange(method, api, {**(params or {}), "access_token": token}, body, deadline,
                                       idempotent)
        if _errcode(data) in TOKEN_CODES:
            self.tokens.invalidate(self.creds.corp_id, self.creds.agent_id, token)
            self._count("retries")
            token = self._token(deadline)
            data, again = self._exchange(method, api, {**(params or {}), "access_token": token}, body, deadline,
                                         idempotent)
            unknown = unknown or again
            if _errcode(data) in TOKEN_CODES:
                raise TokenError(_errcode(data), str(data.get("errmsg", "")), api)
        try:
            return self._settle(api, data)
        except WeComError as err:
            err.earlier_attempt_unknown = unknown
            raise

    def _settle(self, api: str, data: dict) -> dict:
        code = _errcode(data)
        if code == 0:
            return data
        if code == RATE_LIMITED:  # the governor recorded the block when the answer came
            raise RateLimited(code, str(data.get("errmsg", "")), api,
                              blocked_until=self.governor.blocked_until(self.creds.corp_id, api))
        raise error_for(code, str(data.get("errmsg", "")), api)

    def _exchange(self, method: str, api: str, params: dict, body: dict | None,
                  deadline: float | None, idempotent: bool) -> tuple[dict, bool]:
        """Send with the transient-failure retries; any other answer is returned as is, with
        whether an attempt repeated here may have taken effect (it timed out reading or got a 5xx)."""
        attempt, unknown = 0, False
        while True:
            try:
                data = self._send(method, api, params, body, deadline)
                if _errcode(data) not in TRANSIENT_CODES:
                    return data, unknown
                failure = TransientError(_errcode(data), str(data.get("errmsg", "")), api)
            except TransientError as err:
                if err.outcome_unknown and not idempotent:
                    raise
                failure = err
            failure.earlier_attempt_unknown = unknown
            if attempt == MAX_RETRIES:
                raise failure
            delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
            if deadline is not None and self._clock() + delay >= deadline:
                raise failure
            self._sleep(delay)
            attempt += 1
            unknown = unknown or failure.outcome_unknown
            self._count("retries")

    def _send(self, method: str, api: str, params: dict, body: dict | None, deadline: float | None) -> dict:
        self.governor.acquire(self.creds.corp_id, api, self.priority,
                              deadline if deadline is not None else self.budget_deadline)
        timeout = self._timeout_for(api, deadline)
        self._count("calls")
        # `from None` below: requests' messages quote the URL, i.e. the token or the secret.
        try:
            resp = self._session.request(method, f"{self.base_url}/{api}", params=params, json=body, timeout=timeout)
        except (InvalidURL, InvalidSchema, MissingSchema) as err:
            raise ConfigurationError(-1, f"bad WeCom endpoint ({type(err).__name__}); check WECOM_API_BASE",
                                     api) from None
        except requests.ConnectTimeout:
            raise TransientError(-1, f"{NO_ANSWER}connect timeout", api) from None
        except requests.RequestException as err:  # read timeout, reset, protocol error: maybe applied
            raise TransientError(-1, f"{NO_ANSWER}{type(err).__name__}", api, outcome_unknown=True) from None
        status = resp.status_code
        if status >= 500 or status == 429:
            raise TransientError(-1, _quoted(resp, params), api, http_status=status, outcome_unknown=status >= 500)
        if status >= 400:
            raise ConfigurationError(-1, _quoted(resp, params), api, http_status=status)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TransientError(-1, f"not a JSON object: {_quoted(resp, params)}", api, http_status=status,
                                 outcome_unknown=True)
        self.governor.observe(self.creds.corp_id, api, _errcode(data))
        return data

    def _timeout_for(self, api: str, deadline: float | None) -> tuple[float, float]:
        """(connect, read) seconds, cut to what is left before the deadline."""
        timeout = self._timeout
        if deadline is not None:
            left = deadline - self._clock()
            if left <= 0:
                raise TransientError(-1, f"{NO_ANSWER}deadline passed", api)
            timeout = min(timeout, left)
        return timeout, timeout

    def _count(self, name: str) -> None:
        with _count_lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)
            setattr(totals, name, getattr(totals, name) + 1)

    # --- token --------------------------------------------------------------------------

    def _token(self, deadline: float | None) -> str:
        return self.tokens.get(self.creds.corp_id, self.creds.agent_id, lambda: self._fetch_token(deadline), deadline)

    def _fetch_token(self, deadline: float | None) -> tuple[str, float]:
        api = "gettoken"
        self.governor.check(self.creds.corp_id, api)
        self._count("token_refreshes")
        data, _ = self._exchange("GET", api, {"corpid": self.creds.corp_id, "corpsecret": self.creds.secret},
                                 None, deadline, idempotent=True)
        data = self._settle(api, data)
        return str(data["access_token"]), float(data.get("expires_in") or DEFAULT_EXPIRES_IN)

    # --- convenience: FACTS §5.3, §5.4, §5.6, §5.7 and the address book -----------------

    def get_user(self, userid: str) -> dict:
        return self.get("user/get", {"userid": userid})

    def list_users(self, department_id: int, fetch_child: bool = False) -> dict:
        return self.get("user/list", {"department_id": department_id, "fetch_child": 1 if fetch_child else None})

    def list_departments(self, department_id: int | None = None) -> dict:
        return self.get("department/list", {"id": department_id})

    def get_follow_user_list(self) -> dict:
        return self.get("externalcontact/get_follow_user_list")

    def list_external_contacts(self, userid: str) -> dict:
        return self.get("externalcontact/list", {"userid": userid})

    def get_external_contact(self, external_userid: str) -> dict:
        """Customer detail with every follow_user: pages (over 500 followers) are merged."""
        data = self.get("externalcontact/get", {"external_userid": external_userid})
        cursor = data.pop("next_cursor", "")
        while cursor:
            page = self.get("externalcontact/get", {"external_userid": external_userid, "cursor": cursor})
            data.setdefault("follow_user", []).extend(page.get("follow_user", []))
            cursor = page.get("next_cursor", "")
        return data

    def batch_get_by_user(self, userid_list: list[str], cursor: str = "", limit: int = 100) -> dict:
        return self.post("externalcontact/batch/get_by_user",
                         {"userid_list": userid_list, "cursor": cursor, "limit": limit})

    def add_contact_way(self, **body: Any) -> dict:
        # not repeated on an ambiguous failure: a second way would be created
        return self.post("externalcontact/add_contact_way", body, idempotent=False)

    def get_contact_way(self, config_id: str) -> dict:
        return self.post("externalcontact/get_contact_way", {"config_id": config_id})

    def update_contact_way(self, config_id: str, **changes: Any) -> dict:
        return self.post("externalcontact/update_contact_way", {"config_id": config_id, **changes})

    def del_contact_way(self, config_id: str) -> dict:
        return self.post("externalcontact/del_contact_way", {"config_id": config_id})

    def list_contact_way(self, cursor: str = "", limit: int = 1000, **window: Any) -> dict:
        return self.post("externalcontact/list_contact_way", {"cursor": cursor, "limit": limit, **window})

    def send_welcome_msg(self, welcome_code: str, text: str | None = None, attachments: list[dict] | None = None,
                         deadline: float | None = None) -> dict:
        """Safe to repeat: a second delivery answers 41051 (then `earlier_attempt_unknown` on the
        error says whether the first may have been ours). Pass the 20 s window as `deadline`."""
        body: dict[str, Any] = {"welcome_code": welcome_code}
        if text:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = attachments
        return self.post("externalcontact/send_welcome_msg", body, deadline=deadline)

    def get_corp_tag_list(self, tag_ids: list[str] | None = None, group_ids: list[str] | None = None) -> dict:
        body = {k: v for k, v in (("tag_id", tag_ids), ("group_id", group_ids)) if v}
        return self.post("externalcontact/get_corp_tag_list", body)

    def add_corp_tag(self, **body: Any) -> dict:
        # repeating is harmless: WeCom merges same-named tags and groups
        return self.post("externalcontact/add_corp_tag", body)

    def mark_tag(self, userid: str, external_userid: str, add_tag: list[str] | None = None,
                 remove_tag: list[str] | None = None) -> dict:
        return self.post("externalcontact/mark_tag", {"userid": userid, "external_userid": external_userid,
                                                      "add_tag": add_tag or [], "remove_tag": remove_tag or []})

    def remark(self, userid: str, external_userid: str, **fields: Any) -> dict:
        return self.post("externalcontact/remark", {"userid": userid, "external_userid": external_userid, **fields})

    def transfer_customer(self, handover_userid: str, takeover_userid: str, external_userids: list[str],
                          transfer_success_msg: str | None = None) -> dict:
        body: dict[str, Any] = {"handover_userid": handover_userid, "takeover_userid": takeover_userid,
                                "external_userid": external_userids}
        if transfer_success_msg:
            body["transfer_success_msg"] = transfer_success_msg
        return self.post("externalcontact/transfer_customer", body)

    def resigned_transfer_customer(self, handover_userid: str, takeover_userid: str,
                                   external_userids: list[str]) -> dict:
        return self.post("externalcontact/resigned/transfer_customer", {
            "handover_userid": handover_userid, "takeover_userid": takeover_userid,
            "external_userid": external_userids})

    def transfer_result(self, handover_userid: str, takeover_userid: str, cursor: str = "") -> dict:
        return self.post("externalcontact/transfer_result", {
            "handover_userid": handover_userid, "takeover_userid": takeover_userid, "cursor": cursor})

    def resigned_transfer_result(self, handover_userid: str, takeover_userid: str, cursor: str = "") -> dict:
        return self.post("externalcontact/resigned/transfer_result", {
            "handover_userid": handover_userid, "takeover_userid": takeover_userid, "cursor": cursor})

    def get_unassigned_list(self, cursor: str = "", page_size: int = 1000) -> dict:
        return self.post("externalcontact/get_unassigned_list", {"cursor": cursor, "page_size": page_size})

    def add_moment_task(self, **body: Any) -> dict:
        # not repeated on an ambiguous failure: a second post would be published
        return self.post("externalcontact/add_moment_task", body, idempotent=False)

    def get_moment_task_result(self, jobid: str) -> dict:
        return self.get("externalcontact/get_moment_task_result", {"jobid": jobid})


def for_corp(corp_id: str, priority: str = governors.INTERACTIVE, budget_deadline: float | None = None) -> WeComClient:
    """A client for a registered corp: its app secret cached by scrm.platform.credentials, the
    token and the rate budget shared. Jobs ask for `governors.BULK` and their chunk's deadline."""
    return WeComClient(credentials.load_app(corp_id), priority=priority, budget_deadline=budget_deadline)
