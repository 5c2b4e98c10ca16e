"""The compact `state` of a contact way: what WeCom hands back with every customer who adds
through the code, encoded so that it decodes back to staff, store, campaign and channel.

State format (WeCom returns the state with every customer who adds through the code; it
must be at most 30 characters, FACTS §5.3)::

    <kind><token>[.<tag><value>]...          e.g. "uk3x9a.uzhangsan.s10010.c7f2q"

* kind: `u` staff code, `s` store code, `c` campaign code. Lower case when every field of
  the way is spelled out in the state; UPPER case when one did not fit (then decode_state
  leaves it None and resolve_state reads it from the table). The kind letters double as
  the format version: a later format takes other leading characters.
* token: 5 characters [0-9a-z], derived from the create request, which is what makes
  retries find their earlier attempt (see create_contact_way); a state is unique per way.
* segments, owner first, then as many as fit in 30 characters: `u` staff userid, `s` store
  (department id, digits), `c` campaign id, `h` channel (left out when it is the default
  "qr"). A value is only embedded if it is made of [A-Za-z0-9_-] (userids may hold "." or
  "@"). Generated campaign ids are 4 characters so that a typical staff code fits whole.

The state is decodable offline (store, campaign, channel, short userids) and always
resolvable through the table (GSI2 keys.contact_way_by_state): a 64-character userid never
fits, the token finds the way and the way names its staff.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from scrm.store import keys, read_cache
from scrm.store.models import ContactWay

STATE_MAX = 30
KIND_CODES = {"staff": "u", "store": "s", "campaign": "c"}
OWNER_KINDS = tuple(KIND_CODES)
TOKEN_LEN = 5
TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
DEFAULT_CHANNEL = "qr"
SEP = "."
TAGS = {"u": "staff", "s": "store_id", "c": "campaign_id", "h": "channel"}
_VALUE = re.compile(r"[A-Za-z0-9_-]+")
STORE_ID = re.compile(r"[1-9][0-9]{0,9}")


@dataclass(frozen=True)
class StateRef:
    staff: str | None
    store_id: str | None
    campaign_id: str | None
    channel: str | None
    kind: str  # staff | store | campaign
    token: str
    complete: bool  # False: some field did not fit; resolve_state has it


def encode_state(kind: str, token: str, *, staff: str | None = None, store_id: str | None = None,
                 campaign_id: str | None = None, channel: str | None = DEFAULT_CHANNEL) -> str:
    """At most STATE_MAX characters whatever the values; see the module docstring."""
    code = KIND_CODES[kind]
    if len(token) != TOKEN_LEN or set(token) - set(TOKEN_ALPHABET):
        raise ValueError(f"token must be {TOKEN_LEN} characters of [0-9a-z]")
    values = {"u": staff, "s": store_id, "c": campaign_id, "h": None if channel == DEFAULT_CHANNEL else channel}
    if values[code] is None:
        raise ValueError(f"a {kind} code needs its {TAGS[code]}")
    state, complete = f"{code}{token}", True
    for tag in sorted(values, key=lambda t: t != code):  # the owner first: attribution needs it most
        value = values[tag]
        if value is None:
            continue
        segment = f"{SEP}{tag}{value}"
        if _embeddable(tag, value) and len(state) + len(segment) <= STATE_MAX:
            state += segment
        else:
            complete = False
    return state if complete else code.upper() + state[1:]


def _embeddable(tag: str, value: str) -> bool:
    return bool(STORE_ID.fullmatch(value) if tag == "s" else _VALUE.fullmatch(value))


def decode_state(state: Any) -> StateRef | None:
    """The fields a state spells out; None for anything that is not one of our states."""
    head = 1 + TOKEN_LEN
    if not isinstance(state, str) or not head <= len(state) <= STATE_MAX:
        return None
    kind = {c: k for k, c in KIND_CODES.items()}.get(state[0].lower())
    token, rest = state[1:head], state[head:]
    if kind is None or set(token) - set(TOKEN_ALPHABET) or (rest and not rest.startswith(SEP)):
        return None
    values: dict[str, str] = {}
    for segment in rest[1:].split(SEP) if rest else []:
        tag, value = segment[:1], segment[1:]
        if tag not in TAGS or tag in values or not _embeddable(tag, value):
            return None
        values[tag] = value
    complete = state[0].islower()
    if complete and KIND_CODES[kind] not in values:
        return None
    channel = values.get("h") or (DEFAULT_CHANNEL if complete else None)
    return StateRef(staff=values.get("u"), store_id=values.get("s"), campaign_id=values.get("c"), channel=channel,
                    kind=kind, token=token, complete=complete)


def resolve_state(corp_id: str, state: str) -> ContactWay | None:
    """The contact way a customer came through (deleted ways too: attribution outlives the code);
    read once per unit of work (scrm.store.read_cache)."""
    if decode_state(state) is None:
        return None
    return read_cache.cached("way_by_state", (corp_id, state), lambda: next(
        iter(ContactWay.gsi2.query(keys.contact_way_by_state(corp_id, state), limit=1)), None))
