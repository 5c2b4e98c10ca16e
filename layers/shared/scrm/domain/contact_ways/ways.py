"""渠道活码: contact ways (QR codes) per staff member, per store and per campaign (bulk creation
for a store or branch is the job in scrm.domain.contact_ways.bulk). The `state` each way
carries is scrm.domain.contact_ways.state.

Retry safety of creation: WeCom has no idempotency key, and a lost config_id is a code we
can no longer edit or delete. So the state is reserved before WeCom is called, in a claim
row (keys.contact_way_claim) holding a digest of the request and a lease:

1. claim the state (conditional put); an identical request maps to the same state, so it
   lands on the same claim: `created` → the existing way is returned; `pending` within
   the lease → Conflict (an attempt is running); `pending` after the lease → the earlier
   attempt crashed: take the lease and look for its way in WeCom (list_contact_way over
   the claim's time window, get_contact_way of each config_id we do not know, match the
   state) before creating;
2. call add_contact_way; a definite WeCom refusal frees the claim, an unknown outcome
   (timeout, 5xx) ends the lease so that the next retry reconciles at once;
3. write the way and mark the claim `created` in one transaction.

A deleted way marks its claim `deleted`; the same request then takes the next token, so a
state is never reused and old customers keep resolving to the way they came through.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from scrm.domain.contact_ways.campaigns import check_campaign
from scrm.domain.contact_ways.state import (
    DEFAULT_CHANNEL,
    OWNER_KINDS,
    STORE_ID,
    TOKEN_ALPHABET,
    TOKEN_LEN,
    encode_state,
)
from scrm.domain.org import tree as org
from scrm.domain.welcome.spec import validate_welcome
from scrm.platform.errors import Conflict, Invalid, NotFound
from scrm.store import keys, paging
from scrm.store.models import ContactWay, Staff, condition_failed
from scrm.store.once import connection
from scrm.wecom.apis.client import WeComClient
from scrm.wecom.apis.errors import TransientError, WeComError

_CHANNEL = re.compile(r"[A-Za-z0-9_-]{1,16}")
MAX_USERS = 100  # WeCom counts at most 100 members per way (41041)
REMARK_MAX = 30
LEASE_SECONDS = 60  # longer than one add_contact_way with the client's retries (~30 s)
CLOCK_SKEW = 300  # margin around the claim's window when looking for an orphan in WeCom
MAX_TOKEN_TRIES = 8


class BeingCreated(Conflict):
    """Another attempt holds the claim of this state (its lease has not run out)."""


def check_channel(channel: Any) -> str:
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise Invalid("must be 1-16 characters of [A-Za-z0-9_-]", "channel")
    return channel


def _remark(remark: Any) -> str | None:
    if remark is not None and (not isinstance(remark, str) or len(remark) > REMARK_MAX):
        raise Invalid(f"must be a string of at most {REMARK_MAX} characters", "remark")
    return remark


def _tag_ids(tag_ids: Any) -> list[str] | None:
    if tag_ids is None:
        return None
    if not isinstance(tag_ids, list) or not all(isinstance(t, str) and t for t in tag_ids):
        raise Invalid("must be a list of tag ids", "tag_ids")
    return list(dict.fromkeys(tag_ids))


def check_store(corp_id: str, store_id: Any) -> str:
    placement = org.department_placement(corp_id, int(store_id)) if STORE_ID.fullmatch(str(store_id)) else None
    if placement is None or placement.level != "store":
        raise Invalid("not a store", "store_id")
    return str(store_id)


def _active_staff(corp_id: str, users: Any) -> dict[str, Staff]:
    if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users) or not users:
        raise Invalid("must be a non-empty list of userids", "users")
    if len(set(users)) != len(users):
        raise Invalid("lists a userid twice", "users")
    if len(users) > MAX_USERS:
        raise Invalid(f"at most {MAX_USERS} staff per contact way", "users")
    found = {s.userid: s for s in Staff.batch_get([keys.staff(corp_id, u) for u in users])}
    missing = [u for u in users if u not in found or found[u].status != "active"]
    if missing:
        raise Invalid(f"not active staff: {', '.join(missing[:5])}", "users")
    return found


def store_staff(corp_id: str, store_id: str, limit: int | None = None) -> list[Staff]:
    return list(Staff.gsi1.query(keys.staff_by_store(corp_id, store_id), filter_condition=Staff.status == "active",
                                 limit=limit))


@dataclass(frozen=True)
class _Request:
    owner_kind: str
    owner_id: str
    users: list[str]
    store_id: str | None
    campaign_id: str | None
    channel: str
    remark: str | None
    tag_ids: list[str] | None
    welcome: dict | None

    def fingerprint(self) -> str:
        canonical = json.dumps(self.__dict__, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def state(self, salt: int) -> str:
        digest = hashlib.blake2s(f"{self.fingerprint()}:{salt}".encode(), digest_size=8).digest()
        n, token = int.from_bytes(digest, "big"), ""
        for _ in range(TOKEN_LEN):
            n, r = divmod(n, len(TOKEN_ALPHABET))
            token += TOKEN_ALPHABET[r]
        return encode_state(self.owner_kind, token, staff=self.users[0] if self.owner_kind == "staff" else None,
                            store_id=self.store_id, campaign_id=self.campaign_id, channel=self.channel)


def _request(corp_id: str, owner_kind: Any, users: Any, store_id: Any, campaign_id: Any, channel: Any,
             remark: Any, tag_ids: Any, welcome: Any) -> _Request:
    if owner_kind not in OWNER_KINDS:
        raise Invalid(f"must be one of {', '.join(OWNER_KINDS)}", "owner_kind")
    store = check_store(corp_id, store_id) if store_id is not None else None
    campaign = check_campaign(corp_id, campaign_id) if campaign_id is not None else None
    if owner_kind == "store" and store is None:
        raise Invalid("a store code needs its store", "store_id")
    if owner_kind == "campaign" and campaign is None:
        raise Invalid("a campaign code needs its campaign", "campaign_id")
    if owner_kind == "store" and not users:
        # every active staff member of the store, one over the limit to notice a too-large store
        users = [s.userid for s in store_staff(corp_id, store, limit=MAX_USERS + 1)]
    staff = _active_staff(corp_id, users)
    if owner_kind == "staff":
        if len(users) != 1:
            raise Invalid("a staff code has exactly one staff member", "users")
        store = store or staff[users[0]].store_id  # the state carries the staff member's store
    owner_id = {"staff": users[0], "store": store, "campaign": campaign}[owner_kind]
    return _Request(owner_kind, owner_id, list(users), store, campaign, check_channel(channel), _remark(remark),
                    _tag_ids(tag_ids), validate_welcome(welcome))


# --- contact ways ---------------------------------------------------------------------------
def create_contact_way(client: WeComClient, corp_id: str, *, owner_kind: str, users: list[str],
                       store_id: str | None = None, campaign_id: str | None = None, channel: str = DEFAULT_CHANNEL,
                       remark: str | None = None, tag_ids: list[str] | None = None, welcome: dict | None = None,
                       now: float | None = None, made_by: str | None = None) -> ContactWay:
    """Create a QR contact way through WeCom and keep its config_id; safe to retry (module docstring).
    `made_by` (a job's id) is kept on the way when this call is the one that creates it."""
    now = time.time() if now is None else now
    request = _request(corp_id, owner_kind, users, store_id, campaign_id, channel, remark, tag_ids, welcome)
    claim, fresh = _claim(corp_id, request, now, made_by)
    if claim.claim_status == "created":
        return get_contact_way(corp_id, claim.config_id)
    found = None if fresh else _find_in_wecom(client, corp_id, claim, now)
    if found is None:
        body = {"type": 1 if request.owner_kind == "staff" else 2, "scene": 2, "state": claim.state,
                "user": request.users, "skip_verify": True}
        if request.remark:
            body["remark"] = request.remark
        try:
            found = client.add_contact_way(**body)
        except WeComError as err:
            _give_up(claim, outcome_unknown=isinstance(err, TransientError) and err.outcome_unknown)
            raise
    return _complete(corp_id, claim, str(found["config_id"]), found.get("qr_code"), now)


def _claim(corp_id: str, request: _Request, now: float, made_by: str | None) -> tuple[ContactWay, bool]:
    """The claim of this request's state, leased to us; fresh=True if no attempt came before."""
    fingerprint = request.fingerprint()
    for salt in range(MAX_TOKEN_TRIES):
        state = request.state(salt)
        claim = ContactWay(*keys.contact_way_claim(corp_id, state), config_id="", state=state,
                           owner_kind=request.owner_kind, owner_id=request.owner_id, users=request.users,
                           store_id=request.store_id, campaign_id=request.campaign_id, channel=request.channel,
                           remark=request.remark, tag_ids=request.tag_ids, welcome=request.welcome,
                           created_at=int(now), fingerprint=fingerprint, claim_status="pending", made_by=made_by,
                           lease_until=int(now) + LEASE_SECONDS)
        try:
            claim.save(condition=ContactWay.PK.does_not_exist())
            return claim, True
        except PutError as err:
            if not condition_failed(err):
                raise
        try:
            existing = ContactWay.get(*keys.contact_way_claim(corp_id, state), consistent_read=True)
        except ContactWay.DoesNotExist:  # freed by a failing attempt just now
            raise BeingCreated("this contact way is being created; retry in a minute", "state") from None
        if existing.fingerprint != fingerprint or existing.claim_status == "deleted":
            continue  # another request's state, or a way since deleted: states are never reused
        if existing.claim_status == "created":
            return existing, False
        if (existing.lease_until or 0) > now:
            raise BeingCreated("this contact way is being created; retry in a minute", "state")
        try:  # the earlier attempt died: whoever takes the lease reconciles
            existing.update(actions=[ContactWay.lease_until.set(int(now) + LEASE_SECONDS)],
                            condition=(ContactWay.claim_status == "pending")
                            & (ContactWay.lease_until == existing.lease_until))
        except UpdateError as err:
            if condition_failed(err):
                raise BeingCreated("this contact way is being created; retry in a minute", "state") from None
            raise
        return existing, False
    raise Conflict("no free state for this request", "state")


def _give_up(claim: ContactWay, *, outcome_unknown: bool) -> None:
    """After a failed add_contact_way: free the state if WeCom surely made nothing, else let
    the next retry reconcile at once instead of waiting for the lease."""
    owned = (ContactWay.claim_status == "pending") & (ContactWay.lease_until == claim.lease_until)
    try:
        if outcome_unknown:
            claim.update(actions=[ContactWay.lease_until.set(0)], condition=owned)
        else:
            claim.delete(condition=owned)
    except (UpdateError, DeleteError):
        pass  # the lease moved on (its holder decides) or the table failed (the lease runs out)


def _find_in_wecom(client: WeComClient, corp_id: str, claim: ContactWay, now: float) -> dict | None:
    """The way an earlier attempt created in WeCom, found by its state among the config_ids
    of the claim's time window that we do not know; None if there is none."""
    cursor = ""
    while True:
        answer = client.list_contact_way(cursor=cursor, limit=1000, start_time=int(claim.created_at) - CLOCK_SKEW,
                                         end_time=int(now) + CLOCK_SKEW)
        config_ids = [str(w["config_id"]) for w in answer.get("contact_way") or []]
        known = {w.config_id for w in ContactWay.batch_get([keys.contact_way(corp_id, c) for c in config_ids])}
        for config_id in config_ids:
            if config_id in known:
                continue
            way = client.get_contact_way(config_id).get("contact_way") or {}
            if way.get("state") == claim.state:
                return {"config_id": config_id, "qr_code": way.get("qr_code")}
        cursor = answer.get("next_cursor") or ""
        if not cursor:
            return None


def _complete(corp_id: str, claim: ContactWay, config_id: str, qr_code: str | None, now: float) -> ContactWay:
    kind, owner = claim.owner_kind, claim.owner_id
    way = ContactWay(*keys.contact_way(corp_id, config_id), config_id=config_id, state=claim.state,
                     owner_kind=kind, owner_id=owner, users=claim.users, store_id=claim.store_id,
                     campaign_id=claim.campaign_id, channel=claim.channel, remark=claim.remark, qr_code=qr_code,
                     tag_ids=claim.tag_ids, welcome=claim.welcome, created_at=int(now), deleted=False,
                     made_by=claim.made_by,
                     GSI1PK=keys.contact_ways(corp_id), GSI1SK=keys.contact_way_owner(kind, owner) + config_id,
                     GSI2PK=keys.contact_way_by_state(corp_id, claim.state), GSI2SK=config_id)
    try:
        with TransactWrite(connection=connection()) as tx:
            tx.save(way, condition=ContactWay.PK.does_not_exist())
            tx.update(claim, actions=[ContactWay.claim_status.set("created"), ContactWay.config_id.set(config_id),
                                      ContactWay.qr_code.set(qr_code) if qr_code else ContactWay.qr_code.remove(),
                                      ContactWay.lease_until.remove()],
                      condition=(ContactWay.claim_status == "pending") & (ContactWay.fingerprint == claim.fingerprint))
    except TransactWriteError:
        # a concurrent reconciler completed the same claim first: its way is this one
        current = ContactWay.get(claim.PK, claim.SK, consistent_read=True)
        if current.claim_status == "created" and current.config_id == config_id:
            return get_contact_way(corp_id, config_id)
        raise
    return way


def get_contact_way(corp_id: str, config_id: str) -> ContactWay:
    try:
        return ContactWay.get(*keys.contact_way(corp_id, config_id))
    except ContactWay.DoesNotExist:
        raise NotFound("no such contact way", "config_id") from None


def list_contact_ways(corp_id: str, *, owner_kind: str | None = None, owner_id: str | None = None,
                      limit: int = 50, cursor: str | None = None) -> tuple[list[ContactWay], str | None]:
    """Live (not deleted) ways, by owner kind and owner id, then config_id."""
    if owner_kind is not None and owner_kind not in OWNER_KINDS:
        raise Invalid(f"must be one of {', '.join(OWNER_KINDS)}", "owner_kind")
    if owner_id is not None and owner_kind is None:
        raise Invalid("an owner_id needs its owner_kind", "owner_id")
    condition = ContactWay.GSI1SK.startswith(keys.contact_way_owner(owner_kind, owner_id)) if owner_kind else None
    return paging.page(ContactWay.gsi1.query, keys.contact_ways(corp_id), hash_attr="GSI1PK", limit=limit,
                       cursor=cursor, range_key_condition=condition)


def update_contact_way(client: WeComClient, corp_id: str, config_id: str, **changes: Any) -> ContactWay:
    """Change remark, users (store and campaign codes), tag_ids or welcome; WeCom first."""
    unknown = set(changes) - {"remark", "users", "tag_ids", "welcome"}
    if unknown:
        raise Invalid("cannot be changed", sorted(unknown)[0])
    way = get_contact_way(corp_id, config_id)
    if way.deleted:
        raise NotFound("the contact way is deleted", "config_id")
    values: dict[str, Any] = {}
    if "remark" in changes:
        values["remark"] = _remark(changes["remark"])
    if "users" in changes:
        if way.owner_kind == "staff":
            raise Invalid("a staff code keeps its staff member", "users")
        _active_staff(corp_id, changes["users"])
        values["users"] = list(changes["users"])
    if "tag_ids" in changes:
        values["tag_ids"] = _tag_ids(changes["tag_ids"])
    if "welcome" in changes:
        values["welcome"] = validate_welcome(changes["welcome"])
    wecom: dict[str, Any] = {}
    if "remark" in values:
        wecom["remark"] = values["remark"] or ""
    if "users" in values:
        wecom["user"] = values["users"]
    if wecom:  # a retry after our write failed sends the same values again: harmless
        client.update_contact_way(config_id, **wecom)
    if values:
        way.update(actions=[getattr(ContactWay, k).set(v) if v is not None else getattr(ContactWay, k).remove()
                            for k, v in values.items()])
    return way


def delete_contact_way(client: WeComClient, corp_id: str, config_id: str) -> ContactWay:
    """Delete in WeCom, then keep our row marked deleted (its state still resolves)."""
    way = get_contact_way(corp_id, config_id)
    if way.deleted:
        return way
    try:
        client.del_contact_way(config_id)
    except WeComError as err:
        if err.errcode != 41044:  # invalid config_id: already gone in WeCom (an earlier attempt)
            raise
    # The claim first: once it says deleted, the same request creates a new way, not this one.
    try:
        ContactWay(*keys.contact_way_claim(corp_id, way.state)).update(
            actions=[ContactWay.claim_status.set("deleted")], condition=ContactWay.config_id == config_id)
    except UpdateError as err:
        if not condition_failed(err):
            raise
    way.update(actions=[ContactWay.deleted.set(True), ContactWay.GSI1PK.remove(), ContactWay.GSI1SK.remove()])
    return way


def way_dict(way: ContactWay) -> dict:
    return {k: getattr(way, k) for k in ("config_id", "state", "owner_kind", "owner_id", "users", "store_id",
                                         "campaign_id", "channel", "remark", "qr_code", "tag_ids", "welcome",
                                         "created_at", "deleted")}
