"""Handlers the worker routes events to, one module per kind.

Each handler records the facts an event carries and returns a short outcome. State kept
per object carries a `version` (CreateTime * 10 + rank of the change) and is only
overwritten by an event at least as new, so reordered deliveries never move it backwards;
at the same second a deletion outranks an add or edit.
"""
from __future__ import annotations

from pynamodb.models import Model
from scrm.models import update_if


class Permanent(Exception):
    """The event can never be applied (missing ids, bad values): record it as failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def version_of(create_time: int, rank: int) -> int:
    return create_time * 10 + rank


def apply_versioned(row: Model, version: int, actions: list) -> bool:
    """Update `row` with `actions` unless it already holds a newer event; True if applied."""
    cls = type(row)
    return update_if(row, [*actions, cls.version.set(version), cls.entity.set(cls)],
                     cls.version.does_not_exist() | (cls.version <= version))


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
