"""The ids a callback carries, checked against the shapes WeCom gives them.

Every id ends up in a table key (`CORP#c#CUST#<ExternalUserID>`, `FOLLOW#<UserID>`, ...) and
in an ops API path, so an id WeCom would never send is refused at the door: a 5,000-character
ExternalUserID would fail on DynamoDB's 2,048-byte key limit at every retry, and one with `#`
would be stored under a key the ops API can never address.

The shapes:
* UserID (also NewUserID, FromUserName, the members in AddUserItems / DelUserItems /
  MemChangeList): 1-64 bytes of letters, digits and `_-@.` (WeCom's rule for 成员UserID,
  user/create, path/90195).
* ExternalUserID, ChatId, corp tag and tag-group ids: opaque tokens WeCom generates
  (`wm…`, `wo…`, `wr…`, `et…`), letters, digits, `_` and `-`; 128 characters is twice the
  longest we have seen, so no real id is refused.
* WelcomeCode: an opaque single-use code; letters, digits and the Base64 punctuation.
* Department ids (Id / ParentId of address-book events, Department, MainDepartment and the
  party lists), StrategyId and address-book TagId: unsigned 32-bit integers.
* State: not a WeCom id but ours or another tool's free text (add_contact_way allows 30
  characters, a customer-acquisition link 64 bytes): only its length is bounded, so that
  a channel's add is never refused for its wording.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

UINT32_MAX = 2**32 - 1


class InvalidId(ValueError):
    """`field` holds a value WeCom never sends; `why` says what is wrong with it."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why

    @property
    def reason(self) -> str:
        return f"bad_{self.field}"


@dataclass(frozen=True)
class Shape:
    what: str  # in words, for the error
    pattern: re.Pattern
    max_length: int  # characters (all patterns but State's are ASCII, so also bytes)

    def check(self, field: str, value: str) -> None:
        if len(value) > self.max_length:
            raise InvalidId(field, f"longer than {self.max_length} characters")
        if not self.pattern.fullmatch(value):
            raise InvalidId(field, f"not {self.what}")


USERID = Shape("a WeCom UserID (letters, digits, _-@.)", re.compile(r"[A-Za-z0-9_\-@.]+"), 64)
TOKEN = Shape("a WeCom id (letters, digits, _-)", re.compile(r"[A-Za-z0-9_\-]+"), 128)
CODE = Shape("a WeCom code (letters, digits, _-+/=.)", re.compile(r"[A-Za-z0-9_\-+/=.]+"), 256)
# ids of people in a group chat's member list are UserIDs or ExternalUserIDs
MEMBER = Shape("a member id (letters, digits, _-@.)", re.compile(r"[A-Za-z0-9_\-@.]+"), 128)
STATE = Shape("printable text", re.compile(r"[^\x00-\x1f\x7f]+"), 64)
NUMBER = Shape("a whole number", re.compile(r"[0-9]+"), 10)

# field -> shape, for every event kind
FIELDS: dict[str, Shape] = {
    "UserID": USERID,
    "NewUserID": USERID,
    "FromUserName": USERID,
    "ExternalUserID": TOKEN,
    "ChatId": TOKEN,
    "WelcomeCode": CODE,
    "State": STATE,
    "StrategyId": NUMBER,
    "MainDepartment": NUMBER,
    "ParentId": NUMBER,
    "TagId": NUMBER,
}
LISTS: dict[str, Shape] = {  # comma-separated
    "Department": NUMBER,
    "AddPartyItems": NUMBER,
    "DelPartyItems": NUMBER,
    "AddUserItems": USERID,
    "DelUserItems": USERID,
}
ITEMS: dict[str, Shape] = {"MemChangeList": MEMBER}  # <MemChangeList><Item>...</Item></MemChangeList>
# `Id` means a different thing per event
ID_BY_EVENT: dict[str, Shape] = {"change_external_tag": TOKEN, "change_contact": NUMBER}


def _one(field: str, value: object, shape: Shape) -> None:
    if not isinstance(value, str):
        raise InvalidId(field, "not a single value")
    if value == "":
        return  # an empty element: the handlers treat it as absent
    shape.check(field, value)
    if shape is NUMBER and int(value) > UINT32_MAX:
        raise InvalidId(field, "larger than a WeCom id can be")


def check(event_type: str, fields: dict) -> None:
    """Raise InvalidId for the first id in `fields` that WeCom would never send."""
    for field, shape in FIELDS.items():
        if field in fields:
            _one(field, fields[field], shape)
    for field, shape in LISTS.items():
        if field in fields:
            value = fields[field]
            if not isinstance(value, str):
                raise InvalidId(field, "not a comma-separated list")
            for part in value.split(","):
                _one(field, part.strip(), shape)
    for field, shape in ITEMS.items():
        if field in fields:
            items = fields[field]
            for item in items if isinstance(items, list) else [items]:
                _one(field, item, shape)
    if "Id" in fields and event_type in ID_BY_EVENT:
        _one("Id", fields["Id"], ID_BY_EVENT[event_type])
