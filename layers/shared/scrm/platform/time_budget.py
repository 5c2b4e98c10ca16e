"""The deadline of the work in progress, so that code deep down (the WeCom client's retries)
never runs past what the Lambda invocation has left.

A batch handler opens `until(deadline)` around each record; the WeCom client clips every
call's own deadline to it (`clip`). Nested budgets only ever shorten. Epoch seconds, as
`time.time()`. A context variable, so that threads and tasks each see their own.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("scrm_time_budget", default=None)


def deadline() -> float | None:
    """When the current work must be done (epoch seconds); None outside any budget."""
    return _deadline.get()


def clip(own: float | None) -> float | None:
    """The earlier of `own` and the current budget's deadline (None if neither is set)."""
    current = _deadline.get()
    if current is None:
        return own
    return current if own is None else min(own, current)


@contextmanager
def until(when: float) -> Iterator[float]:
    """Run the block with `when` as its deadline (or the enclosing one, if earlier)."""
    effective = clip(when)
    token = _deadline.set(effective)
    try:
        yield effective
    finally:
        _deadline.reset(token)
