"""The WeCom simulator, exercised over real HTTP on an ephemeral port."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from scrm.wecom.callback.crypto import WeComCrypto

from infra.local.wecom_sim import WeComSimulator

try:
    from scrm.wecom.callback.wxml import parse_xml
except ImportError:  # only the test falls back to the stdlib parser
    import xml.etree.ElementTree as ET

    def parse_xml(data):
        root = ET.fromstring(data)
        return {c.tag: [i.text for i in c] if len(c) else (c.text or "") for c in root}


CORP = "ww1436e0e65a779aee"
SECRET = "s3cret"
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
AGENT = 1000002


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class Receiver:
    """A tiny callback endpoint recording every POST (query dict, body text)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, str]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                receiver.requests.append((query, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wecom/callback/{CORP}"

    def opened(self) -> list[dict]:
        """Verify and decrypt every received callback as our callback function would."""
        crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
        out = []
        for query, body in self.requests:
            envelope = parse_xml(body)
            assert envelope["ToUserName"] == CORP
            crypto.verify_signature(query["msg_signature"], query["timestamp"], query["nonce"], envelope["Encrypt"])
            out.append(parse_xml(crypto.decrypt(envelope["Encrypt"])))
        return out


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def sim(clock, receiver):
    s = WeComSimulator(clock=clock)
    s.start(port=0)
    s.add_corp(CORP, SECRET, TOKEN, AES_KEY, AGENT, callback_url=receiver.url)
    s.add_department(CORP, 2, "Sales")
    s.add_department(CORP, 3, "Sales East", parentid=2)
    s.add_staff(CORP, "zhangsan", "Zhang San", department=[2], mobile="13800000001")
    s.add_staff(CORP, "lisi", "Li Si", department=[3])
    s.add_staff(CORP, "wangwu", "Wang Wu", department=[1])
    yield s
    s.stop()


class Api:
    def __init__(self, sim: WeComSimulator) -> None:
        self.sim = sim
        self.refresh()

    def refresh(self) -> None:
        self.token = self.gettoken(SECRET)["access_token"]

    def gettoken(self, secret: str) -> dict:
        url = f"{self.sim.base_url}/cgi-bin/gettoken"
        return requests.get(url, params={"corpid": CORP, "corpsecret": secret}, timeout=5).json()

    def get(self, path: str, token: str | None = None, **params) -> dict:
        params["access_token"] = token or self.token
        return requests.get(f"{self.sim.base_url}/cgi-bin/{path}", params=params, timeout=5).json()

    def post(self, path: str, body: dict, timeout: float = 5) -> dict:
        url = f"{self.sim.base_url}/cgi-bin/{path}"
        return requests.post(url, params={"access_token": self.token}, json=body, timeout=timeout).json()


@pytest.fixture
def api(sim):
    return Api(sim)


def test_token_rules_and_expiry(sim, api, clock):
    assert api.gettoken("wrong")["errcode"] == 40001
    assert requests.get(f"{sim.base_url}/cgi-bin/department/list", timeout=5).json()["errcode"] == 41001
    assert api.get("department/list", token="nope")["errcode"] == 40014
    first = api.gettoken(SECRET)
    assert first["errcode"] == 0 and first["expires_in"] == 7200
    clock.t += 7199
    assert api.get("department/list", token=first["access_token"])["errcode"] == 0
    sim.advance(1)
    assert api.get("department/list", token=first["access_token"])["errcode"] == 42001
    assert sim.stats()["gettoken"][CORP] == 3  # the fixture's, the wrong secret, `first`


def test_org_data(api):
    depts = api.get("department/list")["department"]
    assert [(d["id"], d["parentid"]) for d in depts] == [(1, 0), (2, 1), (3, 2)]
    assert [d["id"] for d in api.get("department/list", id=2)["department"]] == [2, 3]
    direct = api.get("user/list", department_id=2)["userlist"]
    assert [u["userid"] for u in direct] == ["zhangsan"]
    nested = api.get("user/list", department_id=2, fetch_child=1)["userlist"]
    assert sorted(u["userid"] for u in nested) == ["lisi", "zhangsan"]
    user = api.get("user/get", userid="zhangsan")
    assert user["errcode"] == 0 and user["name"] == "Zhang San" and user["department"] == [2]
    assert api.get("user/get", userid="ghost")["errcode"] == 60111
    assert sorted(api.get("externalcontact/get_follow_user_list")["follow_user"]) == ["lisi", "wangwu", "zhangsan"]


def test_welcome_code_single_use_and_20s_window(sim, api, clock):
    ext = sim.add_customer(CORP, "zhangsan", deliver=False)
    clock.t += 19
    body = {"welcome_code": ext["welcome_code"], "text": {"content": "欢迎"}}
    assert api.post("externalcontact/send_welcome_msg", body)["errcode"] == 0
    assert api.post("externalcontact/send_welcome_msg", body)["errcode"] == 41051
    (welcome,) = sim.welcomes(CORP)
    assert welcome["elapsed"] == 19 and welcome["external_userid"] == ext["external_userid"]
    assert welcome["userid"] == "zhangsan" and welcome["text"] == "欢迎"

    late = sim.add_customer(CORP, "zhangsan", deliver=False)
    clock.t += 21
    body = {"welcome_code": late["welcome_code"], "text": {"content": "hi"}}
    assert api.post("externalcontact/send_welcome_msg", body)["errcode"] == 41050
    assert len(sim.welcomes()) == 1


def test_welcome_payload_rules(sim, api):
    code = sim.add_customer(CORP, "zhangsan", deliver=False)["welcome_code"]
    send = lambda body: api.post("externalcontact/send_welcome_msg", body)["errcode"]  # noqa: E731
    assert send({"text": {"content": "hi"}}) == 41049
    assert send({"welcome_code": "unknown", "text": {"content": "hi"}}) == 41050
    assert send({"welcome_code": code}) == 44004
    assert send({"welcome_code": code, "text": {"content": "字" * 1334}}) == 45002  # 4002 bytes
    image = {"msgtype": "image", "image": {"media_id": "MEDIA"}}
    assert send({"welcome_code": code, "attachments": [image] * 10}) == 41064
    assert send({"welcome_code": code, "attachments": [{"msgtype": "image"}]}) == 40058
    # None of the rejected calls used the code up.
    assert send({"welcome_code": code, "text": {"content": "字" * 1333}, "attachments": [image] * 9}) == 0


def test_add_contact_way_validation(sim, api):
    add = lambda **body: api.post("externalcontact/add_contact_way", body)  # noqa: E731
    assert add(scene=2, user=["zhangsan"])["errcode"] == 41037
    assert add(type=1, user=["zhangsan"])["errcode"] == 41038
    assert add(type=3, scene=2, user=["zhangsan"])["errcode"] == 41039
    assert add(type=1, scene=2, user=["zhangsan", "lisi"])["errcode"] == 40058
    assert add(type=1, scene=2, user=["zhangsan"], state="s" * 31)["errcode"] == 40058
    assert add(type=1, scene=2, user=["zhangsan"], remark="r" * 31)["errcode"] == 40058
    assert add(type=1, scene=2, user=["ghost"])["errcode"] == 40003
    sim.add_staff(CORP, "newbie", status=4)
    assert add(type=1, scene=2, user=["newbie"])["errcode"] == 41054
    for i in range(101):
        sim.add_staff(CORP, f"u{i:03}")
    assert add(type=2, scene=2, user=[f"u{i:03}" for i in range(101)])["errcode"] == 41041
    assert add(type=2, scene=2, party=[1])["errcode"] == 41041  # department expanded to > 100 members

    ok = add(type=1, scene=2, user=["zhangsan"], state="s" * 30, remark="r" * 30)
    assert ok["errcode"] == 0 and ok["config_id"] and ok["qr_code"].startswith("https://")
    way = api.post("externalcontact/get_contact_way", {"config_id": ok["config_id"]})["contact_way"]
    assert way["state"] == "s" * 30 and way["user"] == ["zhangsan"] and way["skip_verify"] is True
    assert api.post("externalcontact/update_contact_way", {"config_id": ok["config_id"], "state": "x" * 31})[
        "errcode"
    ] == 40058
    assert api.post("externalcontact/update_contact_way", {"config_id": ok["config_id"], "state": "ch2"})["errcode"] == 0
    listed = api.post("externalcontact/list_contact_way", {})
    assert [w["config_id"] for w in listed["contact_way"]] == [ok["config_id"]]
    assert api.post("externalcontact/del_contact_way", {"config_id": ok["config_id"]})["errcode"] == 0
    assert api.post("externalcontact/get_contact_way", {"config_id": ok["config_id"]})["errcode"] == 41044
    assert api.post("externalcontact/get_contact_way", {})["errcode"] == 41043


def test_customer_from_contact_way_carries_its_state(sim, api, receiver):
    way = api.post("externalcontact/add_contact_way", {"type": 1, "scene": 2, "user": ["lisi"], "state": "ch9"})
    added = sim.add_customer(CORP, config_id=way["config_id"])
    (event,) = receiver.opened()
    assert event["UserID"] == "lisi" and event["State"] == "ch9"
    follow = api.get("externalcontact/get", external_userid=added["external_userid"])["follow_user"][0]
    assert follow["state"] == "ch9" and follow["add_way"] == 1 and follow["oper_userid"] == added["external_userid"]


def test_transfer_at_most_100_and_24h_takeover(sim, api, clock):
    customers = [sim.add_customer(CORP, "zhangsan", deliver=False)["external_userid"] for _ in range(2)]
    stranger = sim.add_customer(CORP, "wangwu", deliver=False)["external_userid"]
    body = {"handover_userid": "zhangsan", "takeover_userid": "lisi"}
    too_many = api.post("externalcontact/transfer_customer", {**body, "external_userid": [f"wm{i}" for i in range(101)]})
    assert too_many["errcode"] == 40058
    assert api.post("externalcontact/transfer_customer", {**body, "takeover_userid": "zhangsan",
                                                          "external_userid": customers})["errcode"] == 40130
    result = api.post("externalcontact/transfer_customer", {**body, "external_userid": [*customers, stranger]})
    assert result["errcode"] == 0
    assert [c["errcode"] for c in result["customer"]] == [0, 0, 40131]
    again = api.post("externalcontact/transfer_customer", {**body, "external_userid": customers[:1]})
    assert again["customer"][0]["errcode"] == 40129

    statuses = api.post("externalcontact/transfer_result", body)["customer"]
    assert [s["status"] for s in statuses] == [2, 2]
    clock.t += 24 * 3600
    api.refresh()  # tokens live 2 h
    statuses = api.post("externalcontact/transfer_result", body)["customer"]
    assert [s["status"] for s in statuses] == [1, 1]
    follow_users = api.get("externalcontact/get", external_userid=customers[0])["follow_user"]
    assert [f["userid"] for f in follow_users] == ["lisi"]


def test_resigned_transfer_and_unassigned_list(sim, api, clock):
    ext = sim.add_customer(CORP, "zhangsan", deliver=False)["external_userid"]
    body = {"handover_userid": "zhangsan", "takeover_userid": "lisi", "external_userid": [ext]}
    assert api.post("externalcontact/resigned/transfer_customer", body)["errcode"] == 40097
    sim.delete_user(CORP, "zhangsan", deliver=False)
    unassigned = api.post("externalcontact/get_unassigned_list", {})
    assert unassigned["info"] == [{"handover_userid": "zhangsan", "external_userid": ext,
                                   "dimission_time": int(clock.t)}]
    assert unassigned["is_last"] is True
    result = api.post("externalcontact/resigned/transfer_customer", body)
    assert result["customer"] == [{"external_userid": ext, "errcode": 0}]
    assert api.post("externalcontact/get_unassigned_list", {})["info"] == []
    clock.t += 24 * 3600
    api.refresh()
    status = api.post("externalcontact/resigned/transfer_result", {"handover_userid": "zhangsan",
                                                                   "takeover_userid": "lisi"})
    assert status["customer"][0]["status"] == 1


def test_batch_get_by_user_pagination(sim, api):
    expected = {sim.add_customer(CORP, "zhangsan", deliver=False)["external_userid"] for _ in range(7)}
    expected |= {sim.add_customer(CORP, "lisi", deliver=False)["external_userid"] for _ in range(3)}
    seen, cursor, pages = [], "", 0
    while True:
        page = api.post("externalcontact/batch/get_by_user",
                        {"userid_list": ["zhangsan", "lisi"], "cursor": cursor, "limit": 4})
        assert page["errcode"] == 0
        pages += 1
        for item in page["external_contact_list"]:
            seen.append(item["external_contact"]["external_userid"])
            assert item["follow_info"]["userid"] in ("zhangsan", "lisi")
            assert item["follow_info"]["tag_id"] == [] and item["follow_info"]["add_way"] == 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and len(seen) == 10 and set(seen) == expected
    assert api.post("externalcontact/batch/get_by_user", {"userid_list": ["zhangsan"], "limit": 101})["errcode"] == 40058
    too_many_users = {"userid_list": [f"u{i}" for i in range(101)]}
    assert api.post("externalcontact/batch/get_by_user", too_many_users)["errcode"] == 40058


def test_fault_injection_is_seeded_and_roughly_honoured(sim, api):
    sim.set_faults(0.3, ["-1", "45033"], seed=7)
    codes = [api.get("department/list")["errcode"] for _ in range(400)]
    failed = [c for c in codes if c != 0]
    assert 0.22 < len(failed) / len(codes) < 0.38
    assert set(failed) == {-1, 45033}
    outcomes = sim.stats()["outcomes"]["department/list"]
    assert outcomes == {str(c): codes.count(c) for c in set(codes)}
    assert api.gettoken(SECRET)["errcode"] == 0  # gettoken is never faulted

    sim.set_faults(1.0, ["http502"])
    resp = requests.get(f"{sim.base_url}/cgi-bin/department/list", params={"access_token": api.token}, timeout=5)
    assert resp.status_code == 502

    sim.set_faults(1.0, ["timeout"], timeout_sleep=0.5)
    with pytest.raises(requests.Timeout):
        api.post("externalcontact/add_corp_tag", {"group_name": "G", "tag": [{"name": "slow"}]}, timeout=0.1)
    sim.set_faults(0)
    # The timed-out call still takes effect once its sleep ends, as it can on the real server.
    for _ in range(50):
        groups = api.post("externalcontact/get_corp_tag_list", {})["tag_group"]
        if groups:
            break
        time.sleep(0.05)
    assert groups[0]["tag"][0]["name"] == "slow"
    assert sim.stats()["outcomes"]["externalcontact/add_corp_tag"] == {"timeout": 1}


def test_fault_sequence_repeats_with_the_same_seed(sim, api):
    runs = []
    for _ in range(2):
        sim.set_faults(0.5, ["-1"], seed=42)
        runs.append([api.get("department/list")["errcode"] for _ in range(30)])
    assert runs[0] == runs[1]


def test_block_api(sim, api):
    sim.block_api("/cgi-bin/externalcontact/get_follow_user_list")
    assert api.get("externalcontact/get_follow_user_list")["errcode"] == 45009
    sim.block_api("externalcontact/get_follow_user_list", None)
    assert api.get("externalcontact/get_follow_user_list")["errcode"] == 0


def test_unknown_path_bad_json_and_wrong_method(sim, api):
    assert api.get("no/such/api")["errcode"] == 40035
    assert api.get("externalcontact/add_contact_way")["errcode"] == 40035
    resp = requests.post(f"{sim.base_url}/cgi-bin/externalcontact/remark", params={"access_token": api.token},
                         data=b"{not json", timeout=5)
    assert resp.json()["errcode"] == 47001
    assert sim.stats()["calls"]["no/such/api"] == 1


def test_callback_is_signed_encrypted_and_well_formed(sim, receiver):
    added = sim.add_customer(CORP, "zhangsan", state="ch1")
    assert added["callback_status"] == [200]
    (query, _body), = receiver.requests
    assert set(query) == {"msg_signature", "timestamp", "nonce"}
    (event,) = receiver.opened()
    assert event == {
        "ToUserName": CORP,
        "FromUserName": "sys",
        "CreateTime": str(int(sim.now())),
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": "add_external_contact",
        "UserID": "zhangsan",
        "ExternalUserID": added["external_userid"],
        "State": "ch1",
        "WelcomeCode": added["welcome_code"],
    }
    assert added["external_userid"].startswith("wm")


def test_repeat_reseals_and_deliver_false_loses(sim, api, receiver):
    added = sim.add_customer(CORP, "zhangsan", repeat=3)
    assert added["callback_status"] == [200, 200, 200]
    nonces = {query["nonce"] for query, _ in receiver.requests}
    assert len(nonces) == 3
    events = receiver.opened()
    assert len(events) == 3 and events[0] == events[1] == events[2]

    receiver.requests.clear()
    lost = sim.add_customer(CORP, "lisi", deliver=False)
    assert lost["callback_status"] == [] and receiver.requests == []
    assert api.get("externalcontact/get", external_userid=lost["external_userid"])["errcode"] == 0

    receiver.status = 500
    assert sim.raw(CORP, "<xml><MsgType>event</MsgType></xml>", repeat=2)["callback_status"] == [500, 500]


def test_relationship_events_and_state(sim, api, receiver):
    ext = sim.add_customer(CORP, "zhangsan", deliver=False)["external_userid"]
    tag = api.post("externalcontact/add_corp_tag", {"group_name": "Level", "tag": [{"name": "VIP"}]})
    tag_id = tag["tag_group"]["tag"][0]["id"]

    sim.edit_customer(CORP, "zhangsan", ext, remark="Mr Li", add_tag=[tag_id])
    follow = api.get("externalcontact/get", external_userid=ext)["follow_user"][0]
    assert follow["remark"] == "Mr Li"
    assert follow["tags"] == [{"group_name": "Level", "tag_name": "VIP", "tag_id": tag_id, "type": 1}]

    sim.delete_follow(CORP, "zhangsan", ext)
    assert api.get("externalcontact/get", external_userid=ext)["errcode"] == 0  # one-way relation remains
    sim.staff_deletes_customer(CORP, "zhangsan", ext)
    assert api.get("externalcontact/get", external_userid=ext)["errcode"] == 84061
    assert api.get("externalcontact/list", userid="zhangsan")["errcode"] == 84061
    assert api.get("externalcontact/get", external_userid="wmUnknown")["errcode"] == 40096

    edit, delete_follow, delete_contact = receiver.opened()
    assert (edit["ChangeType"], edit["ExternalUserID"]) == ("edit_external_contact", ext)
    assert delete_follow["ChangeType"] == "del_follow_user"
    assert delete_contact["ChangeType"] == "del_external_contact" and "Source" not in delete_contact


def test_contact_tag_and_chat_events(sim, receiver):
    sim.create_user(CORP, "zhaoliu", "Zhao Liu", department=[2, 3], mobile="13900000000")
    sim.delete_user(CORP, "wangwu")
    created = sim.tag_change(CORP, "create", name="Hot", group_name="Intent")
    chat = sim.chat_change(CORP, "create", owner="zhangsan")
    sim.chat_change(CORP, "update", chat_id=chat["chat_id"], update_detail="add_member",
                    mem_change_list=["wmA", "wmB"], join_scene=3)
    sim.chat_change(CORP, "dismiss", chat_id=chat["chat_id"])

    create_user, delete_user, tag, chat_create, chat_update, dismiss = receiver.opened()
    assert create_user["Event"] == "change_contact" and create_user["ChangeType"] == "create_user"
    assert create_user["Department"] == "2,3" and create_user["MainDepartment"] == "2"
    assert (delete_user["ChangeType"], delete_user["UserID"]) == ("delete_user", "wangwu")
    assert tag["Event"] == "change_external_tag" and tag["Id"] == created["id"] and tag["TagType"] == "tag"
    assert chat_create["Event"] == "change_external_chat" and chat_create["ChatId"] == chat["chat_id"]
    assert chat_update["UpdateDetail"] == "add_member" and chat_update["JoinScene"] == "3"
    assert chat_update["MemChangeList"] == ["wmA", "wmB"] and chat_update["MemChangeCnt"] == "2"
    assert chat_update["LastMemVer"] != chat_update["CurMemVer"]
    assert dismiss["ChangeType"] == "dismiss"
    state = sim.state(CORP)["corps"][CORP]
    assert "zhaoliu" in [u["userid"] for u in state["users"]]
    assert "wangwu" in [u["userid"] for u in state["resigned"]]


def test_tags_remark_and_moments(sim, api):
    ext = sim.add_customer(CORP, "zhangsan", deliver=False)["external_userid"]
    group = api.post("externalcontact/add_corp_tag", {"group_name": "G", "tag": [{"name": "a"}, {"name": "b"}]})
    a, b = (t["id"] for t in group["tag_group"]["tag"])
    again = api.post("externalcontact/add_corp_tag", {"group_name": "G", "tag": [{"name": "a"}]})
    assert again["tag_group"]["group_id"] == group["tag_group"]["group_id"] and again["tag_group"]["tag"][0]["id"] == a
    mark = {"userid": "zhangsan", "external_userid": ext}
    assert api.post("externalcontact/mark_tag", {**mark, "add_tag": ["etNope"]})["errcode"] == 40068
    assert api.post("externalcontact/mark_tag", {**mark, "add_tag": [a, b]})["errcode"] == 0
    assert api.post("externalcontact/del_corp_tag", {"tag_id": [a]})["errcode"] == 0
    listed = api.post("externalcontact/get_corp_tag_list", {})["tag_group"]
    assert [t["name"] for t in listed[0]["tag"]] == ["b"]
    assert [t["tag_id"] for t in api.get("externalcontact/get", external_userid=ext)["follow_user"][0]["tags"]] == [b]

    assert api.post("externalcontact/remark", {**mark, "remark": "x" * 21})["errcode"] == 40058
    assert api.post("externalcontact/remark", {**mark, "remark": "VIP", "remark_mobiles": ["138"]})["errcode"] == 0
    follow = api.get("externalcontact/get", external_userid=ext)["follow_user"][0]
    assert follow["remark"] == "VIP" and follow["remark_mobiles"] == ["138"]

    assert api.post("externalcontact/add_moment_task", {})["errcode"] == 41089
    job = api.post("externalcontact/add_moment_task", {"text": {"content": "new"},
                                                       "visible_range": {"sender_list": {"user_list": ["ghost"]}}})
    result = api.get("externalcontact/get_moment_task_result", jobid=job["jobid"])
    assert result["status"] == 3 and result["result"]["moment_id"]
    assert result["result"]["invalid_sender_list"]["user_list"] == ["ghost"]
    assert api.get("externalcontact/get_moment_task_result", jobid="nope")["errcode"] == 40088


def test_control_api_over_http(clock, receiver):
    sim = WeComSimulator(clock=clock)
    sim.start(port=0)
    try:
        base = f"{sim.base_url}/sim"
        corp = {"corp_id": CORP, "secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY,
                "agent_id": AGENT, "callback_url": receiver.url}
        assert requests.post(f"{base}/corps", json=corp, timeout=5).json() == {"ok": True}
        assert requests.post(f"{base}/departments", json={"corp_id": CORP, "id": 2, "name": "Ops"}, timeout=5).ok
        staff = {"corp_id": CORP, "userid": "zhangsan", "name": "Zhang San", "department": [2], "mobile": "1"}
        assert requests.post(f"{base}/staff", json=staff, timeout=5).ok
        added = requests.post(f"{base}/actions/add_customer",
                              json={"corp_id": CORP, "userid": "zhangsan", "state": "s1", "repeat": 2}, timeout=5).json()
        assert added["callback_status"] == [200, 200] and len(receiver.requests) == 2
        bad = requests.post(f"{base}/actions/add_customer", json={"corp_id": CORP, "userid": "ghost"}, timeout=5)
        assert bad.status_code == 400 and bad.json()["errcode"] == 60111

        api = Api(sim)
        assert requests.post(f"{base}/clock/advance", json={"seconds": 5}, timeout=5).json()["now"] == clock.t + 5
        body = {"welcome_code": added["welcome_code"], "text": {"content": "hello"}}
        assert api.post("externalcontact/send_welcome_msg", body)["errcode"] == 0
        welcomes = requests.get(f"{base}/welcomes", params={"corp_id": CORP}, timeout=5).json()["welcomes"]
        assert [w["elapsed"] for w in welcomes] == [5]

        assert requests.post(f"{base}/faults", json={"rate": 1, "kinds": ["-1"], "seed": 1}, timeout=5).ok
        assert api.get("department/list")["errcode"] == -1
        assert requests.post(f"{base}/faults", json={"rate": 0.5, "kinds": ["bogus"]}, timeout=5).status_code == 400
        calls = requests.get(f"{base}/calls", timeout=5).json()
        assert calls["outcomes"]["department/list"] == {"-1": 1} and calls["gettoken"] == {CORP: 1}
        state = requests.get(f"{base}/state", params={"corp_id": CORP}, timeout=5).json()
        assert state["corps"][CORP]["customers"][0]["external_userid"] == added["external_userid"]
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    finally:
        sim.stop()


def test_each_callback_delivery_is_recorded_with_the_time_its_answer_took(sim, receiver):
    sim.add_customer(CORP, "zhangsan", repeat=2)
    sim.add_customer(CORP, "zhangsan", deliver=False)  # a lost callback is no delivery
    deliveries = sim.deliveries(CORP)
    assert [d["status"] for d in deliveries] == [200, 200]
    assert all(0 < d["seconds"] < 5 and d["sent_at"] <= time.time() for d in deliveries)
    assert sim.deliveries("wwother") == []
