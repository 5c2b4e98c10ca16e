"""What a domain module writes to run a long job: a Kind (plan, run, finish) and the values
those functions take and return. The runner (scrm.jobs.runner) does the rest.

    KIND = Kind("contact-ways-bulk", plan=plan, run=run, finish=finish, chunk_seconds=180)

* `plan(ctx, cursor) -> Page`: the next chunks of the job and the cursor after them (None
  when there are no more). Called again with the returned cursor until it is None, possibly
  in another invocation, and again with the same cursor after a crash: the same cursor must
  give the same chunks. `ctx.params` holds what `start` was given.
* `run(ctx, payload) -> Done | Failed | Wait`: one chunk's work, within `ctx.deadline`.
  It may run more than once (a crash, a duplicate message taken over after its lease):
  its effects must be idempotent (a claim before a WeCom call that creates something, a
  conditional write), and `ctx.resumed` says that an earlier attempt may have done part
  of them. Raising is fine too: RateLimited waits for the block to end, TransientError
  waits with backoff (max_retries times), a corp-wide ConfigurationError or an unknown
  corp fails the job, any other WeComError or ScrmError fails the chunk; anything else
  counts as a crash (run again later, at most max_crashes times).
* `finish(ctx, reports) -> dict`: the job's result from every chunk's report, once all
  have settled. Must be pure (it may run twice) and small (it is stored on the job row).

Progress is counted in items: a chunk covers `size` items (Chunk), and says how many of them
were done and failed (Done / Failed); the job's total, done and failed are the sums.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from scrm.wecom.apis.client import WeComClient, for_corp
from scrm.wecom.apis.governor import BULK

KIND_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class Chunk:
    payload: dict
    size: int = 1  # items this chunk covers


@dataclass(frozen=True)
class Page:
    chunks: list[Chunk]
    cursor: Any = None  # JSON-able; None: the plan is complete


@dataclass(frozen=True)
class Done:
    result: dict | None = None  # this chunk's part of the job's result (finish reads it)
    done: int | None = None  # items done; default: the chunk's size less `failed`
    failed: int = 0  # items that failed although the chunk ran to its end
    spawn: tuple[Chunk, ...] = ()  # more chunks found while running (dispatched at once)


@dataclass(frozen=True)
class Failed:
    error: str  # short and machine-readable, e.g. "wecom_48002"
    result: dict | None = None
    done: int = 0
    failed: int | None = None  # default: the chunk's size less `done`


@dataclass(frozen=True)
class Wait:
    seconds: float  # run the chunk again this much later (a 24 h takeover, a job still in WeCom's hands...)
    payload: dict | None = None  # where to go on from; None keeps the payload
    reason: str = ""


Outcome = Union[Done, Failed, Wait]


@dataclass(frozen=True)
class ChunkReport:
    """A settled chunk, as `finish` sees it."""

    chunk_id: str
    payload: dict
    size: int
    state: str  # done | failed | skipped (not run: the job had failed)
    done: int
    failed: int
    result: dict | None
    error: str | None


@dataclass
class Context:
    corp_id: str
    job_id: str
    kind: str
    params: dict
    started_at: float  # when the job was started
    deadline: float  # epoch seconds this step must end by
    chunk_id: str | None = None  # None while planning or finishing
    attempt: int = 1  # claims of this chunk, this one included
    clock: Callable[[], float] = time.time
    _client: WeComClient | None = field(default=None, repr=False)

    @property
    def resumed(self) -> bool:
        """An earlier attempt of this chunk ran: some of its effects may have happened."""
        return self.attempt > 1

    def time_left(self) -> float:
        return self.deadline - self.clock()

    def client(self) -> WeComClient:
        """The corp's WeCom client at bulk priority (jobs leave room for interactive calls); a
        call never waits for the rate budget past this step's deadline (RateLimited: the
        chunk waits for the next window instead, without holding its lease)."""
        if self._client is None:
            self._client = for_corp(self.corp_id, BULK, self.deadline)
        return self._client


@dataclass(frozen=True)
class Kind:
    name: str
    plan: Callable[[Context, Any], Page]
    run: Callable[[Context, dict], Outcome]
    finish: Callable[[Context, list[ChunkReport]], dict]
    chunk_seconds: float = 120  # a chunk's time budget; the lease is this plus a margin
    window: int = 50  # chunks dispatched ahead of the settled ones: other jobs' chunks get their turn
    max_crashes: int = 3  # runs that died holding the lease before the chunk is failed
    max_retries: int = 5  # transient WeCom failures waited out before the chunk is failed

    def __post_init__(self) -> None:
        if not KIND_NAME.fullmatch(self.name):
            raise ValueError(f"kind name {self.name!r} must match {KIND_NAME.pattern}")


class UnknownKind(LookupError):
    pass


class Registry:
    """The kinds a deployment runs (scrm.entry.jobs lists them)."""

    def __init__(self, kinds: list[Kind]):
        self._kinds = {kind.name: kind for kind in kinds}
        if len(self._kinds) != len(kinds):
            raise ValueError("two kinds share a name")

    def get(self, name: str) -> Kind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name) from None

    def __iter__(self):
        return iter(self._kinds.values())
