"""Domain errors the business modules raise and the ops API turns into HTTP answers.

`status` is the HTTP status, `reason` a short machine-readable text, `field` the request
field at fault (if one is). NotFound and Invalid also subclass LookupError / ValueError so
plain Python callers can catch them the usual way.
"""
from __future__ import annotations


class ScrmError(Exception):
    status = 500

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class NotFound(ScrmError, LookupError):
    status = 404


class Invalid(ScrmError, ValueError):
    """Well-formed input refused on meaning (no such store, dates in the wrong order)."""

    status = 422


class Malformed(Invalid):
    """Input without the shape the API describes, or a cursor it never issued."""

    status = 400


class Conflict(ScrmError):
    status = 409
