"""Customers from callbacks: profile, follow relations, attribution, timeline, channel tags.

WeCom is the simulator on an ephemeral port; its callbacks reach a small receiver here that
decrypts them into CallbackEvents, so each test decides which to process, when, in which
order and how often. DynamoDB (and Secrets Manager) is moto with the table of template.yaml.
The harness at the top is shared with test_reconcile.py and test_tags.py.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Iterator

import pytest
from scrm.domain.contact_ways import state as states
from scrm.domain.contact_ways import ways
from scrm.domain.customers import events as external_contact
from scrm.domain.customers import profile
from scrm.domain.customers.view import customer_view
from scrm.domain.tags import corp_tags
from scrm.platform.credentials import CorpCredentials
from scrm.store import corps, keys
from scrm.store.models import Customer, Follow, Staff, TimelineEntry
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.tokens import TokenStore, default_store
from scrm.wecom.callback.crypto import WeComCrypto
from scrm.wecom.callback.events import CallbackEvent, normalize
from scrm.wecom.callback.wxml import parse_xml

from infra.local.wecom_sim import WeComSimulator

CORP = "wwcustomers0001"
CREDS = CorpCredentials(corp_id=CORP, token="hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
                        encoding_aes_key="6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
                        secret="sim-secret", agent_id="1000002")


# --- harness -------------------------------------------------------------------------------
class Inbox:
    """Stands in for our callback endpoint: decrypts what the simulator posts, keeps it in order."""

    def __init__(self, creds: CorpCredentials) -> None:
        crypto = WeComCrypto(creds.token, creds.encoding_aes_key, creds.corp_id)
        self.events: list[CallbackEvent] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                plaintext = crypto.decrypt(parse_xml(body)["Encrypt"])
                inbox.events.append(normalize(creds.corp_id, parse_xml(plaintext)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/wecom/callback/{creds.corp_id}"

    def take(self) -> list[CallbackEvent]:
        events, self.events = self.events, []
        return events

    def last(self) -> CallbackEvent:
        [event] = self.take()
        return event

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class WeCom:
    sim: WeComSimulator
    inbox: Inbox
    client: WeComClient
    ways: dict = field(default_factory=dict)  # state -> contact way (see the `wecom` fixture)

    def add(self, userid: str, state: str | None = None, **kwargs: object) -> tuple[str, CallbackEvent | None]:
        """A customer adds `userid`; returns (external_userid, the add event or None if lost)."""
        self.sim.advance(10)  # events a few seconds apart, as in life
        result = self.sim.add_customer(CORP, userid, state=state, welcome=False, **kwargs)
        events = self.inbox.take()
        return result["external_userid"], events[0] if events else None

    def act(self, action: str, *args: object, **kwargs: object) -> CallbackEvent | None:
        self.sim.advance(10)
        getattr(self.sim, action)(CORP, *args, **kwargs)
        events = self.inbox.take()
        return events[0] if events else None

    def way(self, state: str, **attrs: object) -> SimpleNamespace:
        way = SimpleNamespace(config_id=f"cfg-{state}", state=state, owner_kind="staff", users=[], store_id=None,
                              campaign_id=None, channel=None, tag_ids=[])
        way.__dict__.update(attrs)
        self.ways[state] = way
        return way


def process(event: CallbackEvent) -> str:
    """The worker's handling of a change_external_contact event; returns on_contact_event's
    outcome (the handler runs it last, with a client for the corp's own credentials)."""
    return external_contact.handle(event).rsplit(",", 1)[-1]


@pytest.fixture
def wecom(simulated_wecom: WeComSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[WeCom]:
    """The simulator with our corp (callbacks to an Inbox) and two staff members; clients made
    from the corp's secret (the handlers', the nightly run's) reach it too."""
    
    sim, inbox = simulated_wecom, Inbox(CREDS)
    sim.add_corp(CORP, CREDS.secret, CREDS.token, CREDS.encoding_aes_key, int(CREDS.agent_id),
                 callback_url=inbox.url)
    for userid in ("zhangsan", "lisi"):
        sim.add_staff(CORP, userid)
    default_store.cache_clear()  # a token of an earlier test's simulator would cost a refused call
    corps.register(CREDS)
    env = WeCom(sim, inbox, WeComClient(CREDS, token_store=TokenStore()))
    # Contact ways are scrm.domain.contact_ways' (tested there): a state in env.ways resolves to it,
    # any other state goes to the real lookup.
    resolve, decode = states.resolve_state, states.decode_state
    monkeypatch.setattr(states, "resolve_state",
                        lambda corp_id, state: env.ways.get(state) or resolve(corp_id, state))
    monkeypatch.setattr(states, "decode_state", lambda state: None if state in env.ways else decode(state))
    yield env
    inbox.stop()
    default_store.cache_clear()


def customer(external_userid: str) -> Customer:
    return Customer.get(*keys.customer(CORP, external_userid))


def follow(external_userid: str, userid: str) -> Follow:
    return Follow.get(*keys.follow(CORP, external_userid, userid))


def timeline(external_userid: str) -> list[TimelineEntry]:
    return list(TimelineEntry.query(keys.customer_pk(CORP, external_userid),
                                    TimelineEntry.SK.startswith(keys.TIMELINE_PREFIX)))


# --- profile, follow, attribution -----------------------------------------------------------
def test_add_event_stores_profile_follow_and_attribution(wecom):
    wecom.way("poster-s1", channel="poster", store_id="S1", campaign_id="spring")
    ext, event = wecom.add("zhangsan", state="poster-s1", name="Wang Wu", unionid="oUnion123")

    assert process(event) == "first+synced"

    row = customer(ext)
    assert (row.name, row.unionid, row.type, row.gender) == ("Wang Wu", "oUnion123", 1, 0)
    assert row.avatar.startswith("https://") and row.profile_at is not None
    rel = follow(ext, "zhangsan")
    assert (rel.status, rel.state, rel.add_way, rel.added_at) == ("active", "poster-s1", 1, event.create_time)
    first, latest = row.first_touch.attribute_values, row.latest_touch.attribute_values
    assert first == latest == {"at": event.create_time, "userid": "zhangsan", "state": "poster-s1",
                               "channel": "poster", "store_id": "S1", "campaign_id": "spring",
                               "config_id": "cfg-poster-s1"}
    [entry] = timeline(ext)
    assert (entry.what, entry.userid) == ("add_external_contact", "zhangsan")
    assert entry.detail == {"State": "poster-s1", "channel": "poster", "store_id": "S1", "campaign_id": "spring",
                            "config_id": "cfg-poster-s1"}


def test_edit_event_brings_the_new_remark_and_tags(wecom):
    group = wecom.client.add_corp_tag(group_name="Level", tag=[{"name": "VIP"}])["tag_group"]
    vip = group["tag"][0]["id"]
    ext, add = wecom.add("zhangsan")
    process(add)

    edit = wecom.act("edit_customer", "zhangsan", ext, remark="Wang (VIP)", description="likes tea", add_tag=[vip])
    assert process(edit) == "synced"

    rel = follow(ext, "zhangsan")
    assert (rel.remark, rel.description, rel.tag_ids) == ("Wang (VIP)", "likes tea", {vip})


def test_second_add_by_another_staff_moves_latest_and_keeps_first(wecom):
    wecom.way("poster-s1", channel="poster", store_id="S1")
    wecom.way("live-s2", channel="live", store_id="S2", campaign_id="618")
    ext, first_add = wecom.add("zhangsan", state="poster-s1")
    _, second_add = wecom.add("lisi", state="live-s2", external_userid=ext)

    process(first_add)
    assert process(second_add) == "latest+synced"

    row = customer(ext)
    assert (row.first_touch.userid, row.first_touch.channel, row.first_touch.store_id) == ("zhangsan", "poster", "S1")
    assert (row.latest_touch.userid, row.latest_touch.channel, row.latest_touch.campaign_id) == ("lisi", "live", "618")
    assert {f.userid: f.state for f in Follow.query(keys.customer_pk(CORP, ext))} == {"zhangsan": "poster-s1",
                                                                                     "lisi": "live-s2"}


def test_adds_processed_out_of_order_end_with_the_same_first_and_latest(wecom):
    wecom.way("a", channel="poster")
    wecom.way("b", channel="live")
    ext, older = wecom.add("zhangsan", state="a")
    _, newer = wecom.add("lisi", state="b", external_userid=ext)

    process(newer)
    assert process(older) == "first+synced"

    row = customer(ext)
    assert (row.first_touch.channel, row.first_touch.at) == ("poster", older.create_time)
    assert (row.latest_touch.channel, row.latest_touch.at) == ("live", newer.create_time)


def test_repeated_events_leave_one_of_everything(wecom):
    wecom.way("a", channel="poster")
    ext, add = wecom.add("zhangsan", state="a")
    edit = wecom.act("edit_customer", "zhangsan", ext, remark="once")

    for event in (add, edit, add, edit, add):
        process(event)

    assert [e.what for e in timeline(ext)] == ["add_external_contact", "edit_external_contact"]
    rel = follow(ext, "zhangsan")
    assert (rel.status, rel.remark, rel.state) == ("active", "once", "a")
    assert customer(ext).first_touch.at == add.create_time


def test_delete_processed_before_its_add_ends_deleted_and_the_fetch_84061_is_recorded(wecom):
    ext, add = wecom.add("zhangsan", state="a")
    delete = wecom.act("staff_deletes_customer", "zhangsan", ext)
    assert delete.fields["ChangeType"] == "del_external_contact"

    calls = dict(wecom.sim.call_counts)
    process(delete)
    assert dict(wecom.sim.call_counts) == calls  # a deletion needs no WeCom call
    assert process(add) == "first+gone"  # externalcontact/get answers 84061

    rel = follow(ext, "zhangsan")
    assert rel.status == "deleted_by_staff"
    assert customer(ext).first_touch.userid == "zhangsan"  # the add still happened
    assert [e.what for e in timeline(ext)] == ["add_external_contact", "relation_gone", "del_external_contact"]
    assert timeline(ext)[1].detail == {"errcode": 84061}


def test_edit_processed_before_its_add_keeps_the_add_facts(wecom):
    ext, add = wecom.add("zhangsan", state="a")
    edit = wecom.act("edit_customer", "zhangsan", ext, remark="new")

    process(edit)
    process(add)

    rel = follow(ext, "zhangsan")
    assert (rel.status, rel.state, rel.remark, rel.added_at) == ("active", "a", "new", add.create_time)


def test_an_older_fetch_never_overwrites_a_newer_one(wecom):
    ext, add = wecom.add("zhangsan")
    process(add)
    rel = follow(ext, "zhangsan")
    newer = rel.synced_at
    rel.update(actions=[Follow.synced_at.set(newer + 100), Follow.remark.set("from a later fetch")])

    wecom.act("edit_customer", "zhangsan", ext, remark="stale")
    assert process(add) == "attributed+older_fetch"  # the add again: its fetch is older
    assert follow(ext, "zhangsan").remark == "from a later fetch"


def test_customer_deleting_the_staff_member_is_kept_when_the_add_comes_late(wecom):
    ext, add = wecom.add("zhangsan")
    gone = wecom.act("delete_follow", "zhangsan", ext)

    process(gone)
    process(add)  # a one-way relation remains: the fetch still lists it

    assert follow(ext, "zhangsan").status == "deleted_by_customer"


def test_transfer_fail_and_deletions_need_no_wecom_call(wecom):
    ext, add = wecom.add("zhangsan")
    process(add)
    calls = dict(wecom.sim.call_counts)
    event = normalize(CORP, {**add.fields, "ChangeType": "transfer_fail", "FailReason": "customer_refused"})

    process(event)
    for change in ("transfer_fail", "del_external_contact", "del_follow_user"):
        assert profile.on_contact_event(normalize(CORP, {**add.fields, "ChangeType": change}),
                                          wecom.client) == "recorded"
    assert follow(ext, "zhangsan").transfer_fail_reason == "customer_refused"
    assert dict(wecom.sim.call_counts) == calls


def test_store_comes_from_the_staff_member_when_the_state_is_not_ours(wecom):
    Staff(*keys.staff(CORP, "zhangsan"), userid="zhangsan", store_id="S9", region_id="R1").save()
    ext, add = wecom.add("zhangsan", state="someone-elses")

    process(add)

    touch = customer(ext).first_touch
    assert (touch.state, touch.store_id, touch.channel, touch.campaign_id) == ("someone-elses", "S9", None, None)


def test_store_and_campaign_from_a_decoded_state_when_no_way_is_stored(wecom, monkeypatch):
    
    ref = SimpleNamespace(staff="zhangsan", store_id="S7", campaign_id="c1", channel="flyer")
    monkeypatch.setattr(states, "decode_state", lambda state: ref if state == "encoded" else None)
    ext, add = wecom.add("zhangsan", state="encoded")

    process(add)

    touch = customer(ext).first_touch
    assert (touch.store_id, touch.campaign_id, touch.channel, touch.config_id) == ("S7", "c1", "flyer", None)


# --- channel tags -----------------------------------------------------------------------------
def channel_tag(wecom: WeCom) -> str:
    return wecom.client.add_corp_tag(group_name="Channel", tag=[{"name": "poster"}])["tag_group"]["tag"][0]["id"]


def test_channel_tags_are_marked_once_even_when_asked_twice(wecom):
    tag = channel_tag(wecom)
    ext, add = wecom.add("zhangsan")
    process(add)

    assert corp_tags.apply_channel_tags(wecom.client, CORP, "zhangsan", ext, [tag]) is True
    assert corp_tags.apply_channel_tags(wecom.client, CORP, "zhangsan", ext, [tag]) is False

    assert wecom.sim.call_counts["externalcontact/mark_tag"] == 1
    [listed] = wecom.sim.state(CORP)["corps"][CORP]["follows"]
    assert listed["tag_ids"] == [tag]
    assert follow(ext, "zhangsan").tag_ids == {tag}


def test_an_add_through_a_way_with_tags_marks_them_once(wecom):
    tag = channel_tag(wecom)
    wecom.way("poster", channel="poster", tag_ids=[tag])
    ext, add = wecom.add("zhangsan", state="poster")

    assert process(add) == "first+tagged+synced"
    assert process(add) == "attributed+synced"  # WeCom re-sent the event

    assert wecom.sim.call_counts["externalcontact/mark_tag"] == 1
    assert follow(ext, "zhangsan").tag_ids == {tag}


def test_a_failed_mark_tag_releases_the_claim_so_the_retry_marks(wecom):
    tag = channel_tag(wecom)
    ext, add = wecom.add("zhangsan")
    process(add)
    wecom.sim.block_api("externalcontact/mark_tag", 60020)  # not a trusted IP: an operator fixes it

    with pytest.raises(Exception):
        corp_tags.apply_channel_tags(wecom.client, CORP, "zhangsan", ext, [tag])
    wecom.sim.block_api("externalcontact/mark_tag", None)

    assert corp_tags.apply_channel_tags(wecom.client, CORP, "zhangsan", ext, [tag]) is True
    assert follow(ext, "zhangsan").tag_ids == {tag}


class Crash(BaseException):
    """The process dies here: no `except Exception` clause gets to clean up."""


def test_a_crash_at_mark_tag_still_tags_the_customer_when_the_event_comes_again(wecom, monkeypatch):
    tag = channel_tag(wecom)
    wecom.way("poster", channel="poster", tag_ids=[tag])
    ext, add = wecom.add("zhangsan", state="poster")
    mark_tag = WeComClient.mark_tag

    def dies(self, *args, **kwargs):
        monkeypatch.setattr(WeComClient, "mark_tag", mark_tag)
        raise Crash("the worker died calling mark_tag")

    monkeypatch.setattr(WeComClient, "mark_tag", dies)
    with pytest.raises(Crash):
        process(add)

    assert process(add) == "first+tagged+synced"  # SQS delivers it again
    [listed] = wecom.sim.state(CORP)["corps"][CORP]["follows"]
    assert listed["tag_ids"] == [tag]
    assert follow(ext, "zhangsan").tag_ids == {tag}
    assert process(add) == "attributed+synced"  # and once marked, never again


def test_marking_a_relation_that_is_gone_does_not_raise(wecom):
    tag = channel_tag(wecom)
    ext, add = wecom.add("zhangsan")
    wecom.act("staff_deletes_customer", "zhangsan", ext)

    assert corp_tags.apply_channel_tags(wecom.client, CORP, "zhangsan", ext, [tag]) is False
    assert corp_tags.apply_channel_tags(wecom.client, CORP, "zhangsan", ext, [tag]) is False
    assert wecom.sim.call_counts["externalcontact/mark_tag"] == 1


def test_an_add_through_a_contact_way_created_by_scrm_contact_ways(wecom):
    
    tag = channel_tag(wecom)
    Staff(*keys.staff(CORP, "zhangsan"), userid="zhangsan", store_id="10010").save()
    way = ways.create_contact_way(wecom.client, CORP, owner_kind="staff", users=["zhangsan"],
                                          channel="poster", tag_ids=[tag])
    wecom.sim.advance(10)
    ext = wecom.sim.add_customer(CORP, config_id=way.config_id, welcome=False)["external_userid"]

    assert process(wecom.inbox.last()) == "first+tagged+synced"

    touch = customer(ext).first_touch
    assert (touch.state, touch.channel, touch.store_id, touch.config_id) == (way.state, "poster", "10010",
                                                                             way.config_id)
    assert follow(ext, "zhangsan").tag_ids == {tag}


# --- the customer view ----------------------------------------------------------------------------
def test_customer_view_has_profile_attribution_follows_timeline_newest_first_and_coupons(wecom):
    from scrm.domain import coupons
    from scrm.domain.tags import corp_tags as tags

    tag = channel_tag(wecom)
    tags.sync_corp_tags(wecom.client, CORP)
    wecom.way("poster", channel="poster", store_id="S1", tag_ids=[tag])
    ext, add = wecom.add("zhangsan", state="poster", name="Li Lei", unionid="oU9")
    _, second = wecom.add("lisi", external_userid=ext)
    edit = wecom.act("edit_customer", "lisi", ext, remark="regular")
    for event in (add, second, edit):
        process(event)
    template = coupons.create_template(CORP, name="10 off", kind="amount", amount=1000, valid_days=7,
                                       total_stock=10)
    code = coupons.issue(CORP, template.template_id, ext, occasion="welcome").code

    view = customer_view(CORP, ext, timeline_limit=2)

    assert set(view) == {"profile", "attribution", "follows", "timeline", "coupons"}
    assert (view["profile"]["name"], view["profile"]["unionid"]) == ("Li Lei", "oU9")
    assert (view["attribution"]["first"]["channel"], view["attribution"]["first"]["store_id"]) == ("poster", "S1")
    assert view["attribution"]["latest"]["userid"] == "lisi"
    zhangsan, lisi = sorted(view["follows"], key=lambda f: f["userid"], reverse=True)
    assert [(t["tag_id"], t["name"], t["group_name"]) for t in zhangsan["tags"]] == [(tag, "poster", "Channel")]
    assert (zhangsan["state"], zhangsan["added_at"]) == ("poster", add.create_time)
    assert (lisi["remark"], lisi["status"], lisi["add_way"], lisi["tags"]) == ("regular", "active", 1, [])
    assert [(e["what"], e["at"]) for e in view["timeline"]] == [("edit_external_contact", edit.create_time),
                                                               ("add_external_contact", second.create_time)]
    assert [(c["code"], c["status"]) for c in view["coupons"]] == [(code, "issued")]


def test_customer_view_of_an_unknown_customer_is_none(wecom):
    assert customer_view(CORP, "wmUnknown") is None
