"""Reads memoized for one unit of work (one queued event and everything it causes).

The welcome lane and the event's general handler ask for the same rows (the contact way a
state resolves to, its campaign, the staff member, the default welcomes); inside a
`scope()` each is read once. Outside any scope nothing is cached, so the ops API and the
nightly jobs always read fresh. A scope inside a scope shares the outer one.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_memo: ContextVar[dict | None] = ContextVar("scrm_read_cache", default=None)


@contextmanager
def scope() -> Iterator[None]:
    if _memo.get() is not None:
        yield
        return
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def cached(kind: str, key: Hashable, load: Callable[[], T]) -> T:
    """`load()` once per (kind, key) within the current scope; a raised error is not kept."""
    memo = _memo.get()
    if memo is None:
        return load()
    if (kind, key) not in memo:
        memo[(kind, key)] = load()
    return memo[(kind, key)]
