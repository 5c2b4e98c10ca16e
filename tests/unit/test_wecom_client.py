"""WeComClient error policy against a scripted HTTP transport (a requests adapter).

DynamoDB (token row, API blocks) is moto in-process with the table from template.yaml; the
clock is fake and `sleep` advances it, so backoff and deadlines are checked exactly.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from moto import mock_aws
from requests.adapters import BaseAdapter
from scrm.platform.credentials import CorpCredentials
from scrm.store import keys
from scrm.store.models import AccessToken, ApiBlock
from scrm.wecom.apis import client as client_module
from scrm.wecom.apis.client import WeComClient, forget_caches
from scrm.wecom.apis.errors import (
    ConfigurationError,
    GoneError,
    RateLimited,
    TokenError,
    TransientError,
    WeComError,
)
from scrm.wecom.apis.tokens import TokenStore

from tests.integration.conftest import (
    create_scrm_table,  # one table definition: template.yaml
)

BASE = "https://wecom.test/cgi-bin"
SECRET = "s3cr3t-value"
CREDS = CorpCredentials(corp_id="wwcorp", token="t", encoding_aes_key="k" * 43, secret=SECRET, agent_id="1000002")
OK = {"errcode": 0, "errmsg": "ok"}


def err(code: int) -> dict:
    return {"errcode": code, "errmsg": f"error {code}, hint: [x], more info at https://open.work.weixin.qq.com"}


class FakeWeCom(BaseAdapter):
    """Answers each API from a script (dict = JSON body, int = HTTP status, (status, bytes) = both,
    exception = raised); unscripted calls succeed, and gettoken issues tok1, tok2, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[str, list[Any]] = defaultdict(list)
        self.sent: list[requests.PreparedRequest] = []
        self.timeouts: list[Any] = []
        self.issued = 0

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # noqa: ANN001
        self.sent.append(request)
        self.timeouts.append(timeout)
        api = urlsplit(request.url).path.removeprefix("/cgi-bin/")
        answer = self.script[api].pop(0) if self.script[api] else None
        if isinstance(answer, Exception):
            raise answer
        if answer is None and api == "gettoken":
            self.issued += 1
            answer = {**OK, "access_token": f"tok{self.issued}", "expires_in": 7200}
        resp = requests.Response()
        resp.request, resp.url = request, request.url
        if isinstance(answer, int):
            resp.status_code, resp._content = answer, b"<html>bad gateway</html>"
        elif isinstance(answer, tuple):
            resp.status_code, resp._content = answer
        else:
            resp.status_code, resp._content = 200, json.dumps(answer if answer is not None else OK).encode()
        return resp

    def close(self) -> None:
        pass

    def calls(self, api: str) -> list[requests.PreparedRequest]:
        return [r for r in self.sent if urlsplit(r.url).path == f"/cgi-bin/{api}"]

    @staticmethod
    def query(request: requests.PreparedRequest) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def table() -> Iterator[None]:
    with mock_aws():
        create_scrm_table()
        forget_caches()
        yield
    forget_caches()


@pytest.fixture
def wecom() -> FakeWeCom:
    return FakeWeCom()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(wecom: FakeWeCom, clock: FakeClock) -> WeComClient:
    session = requests.Session()
    session.mount("https://", wecom)
    return WeComClient(CREDS, base_url=BASE, session=session, token_store=TokenStore(clock, clock.sleep),
                       clock=clock, sleep=clock.sleep)


@pytest.fixture
def client(table: None, wecom: FakeWeCom, clock: FakeClock) -> WeComClient:
    return make_client(wecom, clock)


def test_answer_returned_and_token_only_in_query(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["externalcontact/mark_tag"] = [{**OK, "extra": 1}]
    assert client.mark_tag("zhangsan", "wmEXT", add_tag=["et1"])["extra"] == 1
    (sent,) = wecom.calls("externalcontact/mark_tag")
    assert FakeWeCom.query(sent) == {"access_token": "tok1"}
    body = json.loads(sent.body)
    assert body == {"userid": "zhangsan", "external_userid": "wmEXT", "add_tag": ["et1"], "remove_tag": []}
    assert "tok1" not in sent.body.decode()
    (gettoken,) = wecom.calls("gettoken")
    assert FakeWeCom.query(gettoken) == {"corpid": "wwcorp", "corpsecret": SECRET}
    assert all(t == (3.0, 3.0) for t in wecom.timeouts)  # explicit (connect, read) on every call
    assert (client.counters.calls, client.counters.retries, client.counters.token_refreshes) == (2, 0, 1)


def test_token_is_reused_across_calls_and_stored(client: WeComClient, wecom: FakeWeCom, clock: FakeClock) -> None:
    client.get_user("a")
    client.get_user("b")
    assert len(wecom.calls("gettoken")) == 1
    row = AccessToken.get(*keys.access_token("wwcorp", "1000002"))
    assert row.token == "tok1" and row.token_expires_at == clock.now + 7200 and row.lease_until == 0


def test_minus1_retried_then_success(client: WeComClient, wecom: FakeWeCom, clock: FakeClock) -> None:
    wecom.script["user/get"] = [err(-1), err(-1), {**OK, "userid": "a"}]
    assert client.get_user("a")["userid"] == "a"
    assert len(wecom.calls("user/get")) == 3
    assert client.counters.retries == 2 and len(clock.sleeps) == 2


def test_minus1_four_times_is_transient_after_exactly_four_calls(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["user/get"] = [err(-1)] * 5
    with pytest.raises(TransientError) as raised:
        client.get_user("a")
    assert raised.value.errcode == -1
    assert len(wecom.calls("user/get")) == 4


def test_45033_backs_off_exponentially_with_full_jitter(client: WeComClient, wecom: FakeWeCom,
                                                        clock: FakeClock) -> None:
    wecom.script["externalcontact/get"] = [err(45033)] * 3 + [{**OK, "external_contact": {}, "follow_user": []}]
    client.get_external_contact("wmEXT")
    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps):
        assert 0 <= slept <= client_module.BACKOFF_BASE * 2 ** attempt


def test_http_502_retried(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["department/list"] = [502, 503, {**OK, "department": []}]
    assert client.list_departments()["department"] == []
    assert len(wecom.calls("department/list")) == 3


def test_http_502_throughout_is_transient_with_status(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["department/list"] = [502] * 4
    with pytest.raises(TransientError) as raised:
        client.list_departments()
    assert raised.value.http_status == 502


def test_timeout_retried(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["user/list"] = [requests.ReadTimeout("read timed out"), requests.ConnectionError("reset"),
                                 {**OK, "userlist": []}]
    assert client.list_users(1)["userlist"] == []
    assert len(wecom.calls("user/list")) == 3


def test_ambiguous_failure_of_a_create_is_not_repeated(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["externalcontact/add_contact_way"] = [requests.ReadTimeout("read timed out")]
    with pytest.raises(TransientError) as raised:
        client.add_contact_way(type=1, scene=2, user=["a"], state="ch1")
    assert raised.value.outcome_unknown
    assert len(wecom.calls("externalcontact/add_contact_way")) == 1


@pytest.mark.parametrize("first", [requests.ReadTimeout("read timed out"), 502])
def test_a_41051_after_repeating_an_ambiguous_welcome_says_the_first_attempt_may_have_arrived(
        client: WeComClient, wecom: FakeWeCom, first: Any) -> None:
    wecom.script["externalcontact/send_welcome_msg"] = [first, err(41051)]
    with pytest.raises(WeComError) as raised:
        client.send_welcome_msg("WC1", "hello")
    assert (raised.value.errcode, raised.value.earlier_attempt_unknown) == (41051, True)


@pytest.mark.parametrize("first", [err(-1), err(45033), requests.ConnectTimeout("connect timed out"), 429])
def test_a_41051_after_a_failure_that_surely_did_nothing_is_not_ours(client: WeComClient, wecom: FakeWeCom,
                                                                      first: Any) -> None:
    wecom.script["externalcontact/send_welcome_msg"] = [first, err(41051)]
    with pytest.raises(WeComError) as raised:
        client.send_welcome_msg("WC1", "hello")
    assert (raised.value.errcode, raised.value.earlier_attempt_unknown) == (41051, False)


def test_a_41051_at_the_first_attempt_is_not_ours(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["externalcontact/send_welcome_msg"] = [err(41051)]
    with pytest.raises(WeComError) as raised:
        client.send_welcome_msg("WC1", "hello")
    assert raised.value.earlier_attempt_unknown is False


def test_transient_failures_to_the_end_say_whether_a_repeated_attempt_may_have_applied(
        client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["externalcontact/send_welcome_msg"] = [requests.ReadTimeout("t"), err(-1), err(-1), err(-1)]
    with pytest.raises(TransientError) as raised:
        client.send_welcome_msg("WC1", "hello")
    assert raised.value.earlier_attempt_unknown and not raised.value.outcome_unknown


def test_unsent_create_is_retried(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["externalcontact/add_contact_way"] = [requests.ConnectTimeout("connect timed out"), err(-1),
                                                       {**OK, "config_id": "c1"}]
    assert client.add_contact_way(type=1, scene=2, user=["a"])["config_id"] == "c1"


def test_40014_refreshes_once_and_retries_once(client: WeComClient, wecom: FakeWeCom) -> None:
    client.get_user("warm")  # tok1 cached
    wecom.script["user/get"] = [err(40014), {**OK, "userid": "a"}]
    assert client.get_user("a")["userid"] == "a"
    first, second = wecom.calls("user/get")[1:]
    assert FakeWeCom.query(first)["access_token"] == "tok1"
    assert FakeWeCom.query(second)["access_token"] == "tok2"
    assert len(wecom.calls("gettoken")) == 2
    assert AccessToken.get(*keys.access_token("wwcorp", "1000002")).token == "tok2"


def test_42001_twice_is_token_error_without_looping(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["user/get"] = [err(42001), err(42001), OK]
    with pytest.raises(TokenError) as raised:
        client.get_user("a")
    assert raised.value.errcode == 42001
    assert len(wecom.calls("user/get")) == 2
    assert len(wecom.calls("gettoken")) == 2


def test_40001_is_configuration_error_after_one_call_and_not_repeated(table: None, wecom: FakeWeCom,
                                                                      clock: FakeClock) -> None:
    wecom.script["gettoken"] = [err(40001)] * 3
    with pytest.raises(ConfigurationError) as raised:
        make_client(wecom, clock).get_user("a")
    assert raised.value.errcode == 40001
    assert len(wecom.sent) == 1
    # Another worker (own process cache) is told at once, without calling gettoken again.
    with pytest.raises(ConfigurationError):
        make_client(wecom, clock).get_user("a")
    assert len(wecom.sent) == 1
    assert SECRET not in str(raised.value)


def test_an_unexpected_http_status_carries_what_was_said_with_the_secret_masked(table: None, wecom: FakeWeCom,
                                                                                 clock: FakeClock) -> None:
    page = f"<h1>403 Forbidden</h1>\n<p>GET /cgi-bin/gettoken?corpid=wwcorp&corpsecret={SECRET}</p>".encode()
    wecom.script["gettoken"] = [(403, page)]
    with pytest.raises(ConfigurationError) as raised:
        make_client(wecom, clock).get_user("a")
    assert (raised.value.http_status, raised.value.api) == (403, "gettoken")
    assert raised.value.errmsg == "<h1>403 Forbidden</h1> <p>GET /cgi-bin/gettoken?corpid=wwcorp&corpsecret=***</p>"


def test_an_unexpected_http_status_with_wecoms_json_quotes_its_errcode_and_errmsg(client: WeComClient,
                                                                                 wecom: FakeWeCom) -> None:
    wecom.script["user/get"] = [(404, json.dumps({"errcode": 40035, "errmsg": "unknown path"}).encode())]
    with pytest.raises(ConfigurationError) as raised:
        client.get_user("a")
    assert (raised.value.http_status, raised.value.errmsg) == (404, "errcode 40035: unknown path")


@pytest.mark.parametrize("code", [48002, 60020, 60011, 41001])
def test_configuration_codes_not_retried(client: WeComClient, wecom: FakeWeCom, code: int) -> None:
    wecom.script["externalcontact/list"] = [err(code), OK]
    with pytest.raises(ConfigurationError) as raised:
        client.list_external_contacts("a")
    assert raised.value.errcode == code and raised.value.api == "externalcontact/list"
    assert len(wecom.calls("externalcontact/list")) == 1


@pytest.mark.parametrize("code", [60111, 40003, 84061, 40096])
def test_gone_codes(client: WeComClient, wecom: FakeWeCom, code: int) -> None:
    wecom.script["externalcontact/remark"] = [err(code)]
    with pytest.raises(GoneError):
        client.remark("a", "wmEXT", remark="VIP")
    assert len(wecom.calls("externalcontact/remark")) == 1


@pytest.mark.parametrize("code", [41050, 41051, 41096, 40058])
def test_other_codes_are_plain_wecom_errors(client: WeComClient, wecom: FakeWeCom, code: int) -> None:
    wecom.script["externalcontact/send_welcome_msg"] = [err(code)]
    with pytest.raises(WeComError) as raised:
        client.send_welcome_msg("WELCOME", text="hi")
    assert type(raised.value) is WeComError and raised.value.errcode == code
    assert len(wecom.calls("externalcontact/send_welcome_msg")) == 1


def test_45009_blocks_the_api_for_every_worker(client: WeComClient, wecom: FakeWeCom, clock: FakeClock) -> None:
    wecom.script["externalcontact/get_follow_user_list"] = [err(45009)]
    with pytest.raises(RateLimited) as raised:
        client.get_follow_user_list()
    assert raised.value.blocked_until == clock.now + 60
    row = ApiBlock.get(*keys.api_block("wwcorp", "externalcontact/get_follow_user_list"))
    assert (row.api, row.errcode, row.blocked_until) == ("externalcontact/get_follow_user_list", 45009, clock.now + 60)

    sent = len(wecom.sent)
    with pytest.raises(RateLimited):
        client.get_follow_user_list()
    assert len(wecom.sent) == sent
    client.get_user("a")  # other APIs are not blocked

    # A worker that has never seen the block reads it from the table.
    forget_caches()
    with pytest.raises(RateLimited):
        make_client(wecom, clock).get_follow_user_list()
    assert len(wecom.calls("externalcontact/get_follow_user_list")) == 1

    clock.now += 61
    client.get_follow_user_list()
    assert len(wecom.calls("externalcontact/get_follow_user_list")) == 2


def test_45009_right_after_a_block_means_the_hourly_quota(client: WeComClient, wecom: FakeWeCom,
                                                          clock: FakeClock) -> None:
    wecom.script["externalcontact/list"] = [err(45009), err(45009)]
    with pytest.raises(RateLimited):
        client.list_external_contacts("a")
    clock.now += 61
    with pytest.raises(RateLimited) as raised:
        client.list_external_contacts("a")
    assert raised.value.blocked_until == clock.now + 3600


def test_block_cache_is_read_at_most_every_10_seconds(client: WeComClient, wecom: FakeWeCom,
                                                      clock: FakeClock) -> None:
    client.get_user("a")
    pk, sk = keys.api_block("wwcorp", "user/get")
    ApiBlock(pk, sk, api="user/get", errcode=45009, blocked_until=clock.now + 60).save()  # another worker
    client.get_user("a")  # cache from 0 s ago: not re-read yet
    clock.now += 10
    with pytest.raises(RateLimited):
        client.get_user("a")
    assert len(wecom.calls("user/get")) == 2


def test_deadline_is_never_slept_past(client: WeComClient, wecom: FakeWeCom, clock: FakeClock) -> None:
    client.get_user("warm")
    wecom.script["externalcontact/send_welcome_msg"] = [err(-1)] * 4
    deadline = clock.now + 0.6
    with pytest.raises(TransientError):
        client.send_welcome_msg("WELCOME", text="hi", deadline=deadline)
    assert clock.now < deadline
    welcome_timeouts = wecom.timeouts[-len(wecom.calls("externalcontact/send_welcome_msg")):]
    assert all(read <= 0.6 for _, read in welcome_timeouts)


def test_the_time_budget_of_the_work_in_progress_bounds_every_call(client: WeComClient, wecom: FakeWeCom,
                                                                    clock: FakeClock, monkeypatch) -> None:
    """A call made without a deadline, inside a batch record's budget, stops retrying there:
    before, user/get slept through all three backoffs whatever the invocation had left."""
    from scrm.platform import time_budget

    monkeypatch.setattr(client_module.random, "uniform", lambda low, high: high)  # the longest backoffs
    client.get_user("warm")
    wecom.script["user/get"] = [err(-1)] * 4
    started = clock.now
    with time_budget.until(started + 1.0):
        with pytest.raises(TransientError):
            client.get_user("zhangsan")
    assert clock.now < started + 1.0
    assert all(read <= 1.0 for _, read in wecom.timeouts[-len(wecom.calls("user/get")) + 1:])
    with time_budget.until(clock.now - 1):  # nothing left: nothing sent
        with pytest.raises(TransientError):
            client.get_user("lisi")
    wecom.script["user/get"] = [err(-1)] * 3
    client.get_user("zhangsan")  # outside any budget: all three retries, then the answer
    assert clock.sleeps[-3:] == [0.5, 1.0, 2.0]


def test_past_deadline_sends_nothing(client: WeComClient, wecom: FakeWeCom, clock: FakeClock) -> None:
    client.get_user("warm")
    with pytest.raises(TransientError):
        client.send_welcome_msg("WELCOME", text="hi", deadline=clock.now - 1)
    assert wecom.calls("externalcontact/send_welcome_msg") == []


def test_network_errors_do_not_leak_the_url(client: WeComClient, wecom: FakeWeCom) -> None:
    leak = f"{BASE}/gettoken?corpid=wwcorp&corpsecret={SECRET}"
    wecom.script["gettoken"] = [requests.ConnectionError(f"Max retries exceeded with url: {leak}")] * 4
    with pytest.raises(TransientError) as raised:
        client.get_user("a")
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value.args)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_external_contact_follows_the_cursor(client: WeComClient, wecom: FakeWeCom) -> None:
    wecom.script["externalcontact/get"] = [
        {**OK, "external_contact": {"external_userid": "wmEXT"}, "follow_user": [{"userid": "a"}], "next_cursor": "c1"},
        {**OK, "external_contact": {"external_userid": "wmEXT"}, "follow_user": [{"userid": "b"}], "next_cursor": ""},
    ]
    data = client.get_external_contact("wmEXT")
    assert [f["userid"] for f in data["follow_user"]] == ["a", "b"]
    second = wecom.calls("externalcontact/get")[1]
    assert FakeWeCom.query(second)["cursor"] == "c1"


def test_counters_add_up_in_the_module_totals(client: WeComClient, wecom: FakeWeCom) -> None:
    before = client_module.totals.calls
    wecom.script["user/get"] = [err(-1), OK]
    client.get_user("a")
    assert (client.counters.calls, client.counters.retries, client.counters.token_refreshes) == (3, 1, 1)
    assert client_module.totals.calls - before == 3
