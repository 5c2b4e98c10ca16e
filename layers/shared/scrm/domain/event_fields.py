"""What every event handler shares: reading a callback's fields, and its version.

Each handler (one per kind: customers.events, org.events, chats, tags.events) records the
facts an event carries and returns a short outcome. State kept per object carries a
`version` (CreateTime * 10 + rank of the change) and is only overwritten by an event at
least as new (scrm.store.models.apply_versioned), so reordered deliveries never move it
backwards; at the same second a deletion outranks an add or edit.
"""
from __future__ import annotations


class Permanent(Exception):
    """The event can never be applied (missing ids, bad values): record it as failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def version_of(create_time: int, rank: int) -> int:
    return create_time * 10 + rank


def text(fields: dict, name: str) -> str | None:
    value = fields.get(name)
    return value if isinstance(value, str) and value else None


def integer(fields: dict, name: str) -> int | None:
    value = text(fields, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Permanent(f"bad_{name}") from None
