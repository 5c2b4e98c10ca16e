"""Event rows after intake: the worker's outcome, failed attempts and dead letters, replays,
and the events the callback stored but never noted as queued (the sweeper's work).

An event's `status`: `received` (stored; in the pending index until its message is known
to be sent) -> `queued` -> `processed` | `failed` (can never be applied; kept, visible) |
`dead` (its message went to a dead-letter queue; `make replay-dlq` makes it `queued` again).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pynamodb.exceptions import UpdateError

from scrm.store import keys
from scrm.store.models import Event, condition_failed, update_if
from scrm.wecom.callback.events import CallbackEvent

# statuses a failed attempt may still change: a late failure of a duplicate message must
# never overwrite an event another delivery has settled
_OPEN = ("received", "queued", "dead")


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def _row(event: CallbackEvent) -> Event:
    return Event(*keys.event(event.corp_id, event.event_id))


def finish(event: CallbackEvent, status: str, outcome: str, now: float | None = None) -> None:
    """Record the result (`processed` or `failed`) and take the row out of the pending index."""
    try:
        _row(event).update(
            actions=[
                Event.status.set(status),
                Event.outcome.set(outcome),
                Event.processed_at.set(_now(now)),
                Event.dead_at.remove(),
                Event.GSI2PK.remove(),
                Event.GSI2SK.remove(),
            ],
            condition=Event.PK.exists(),
        )
    except UpdateError as err:
        if not condition_failed(err):
            raise
        # The row expired (TTL) before a replay reached us: the effects ran, nothing to mark.


def record_failure(event: CallbackEvent, error: str, receives: int, dead: bool, now: float | None = None) -> bool:
    """Note a failed attempt; `dead`: it was the last one, its message goes to the dead-letter
    queue. False if the row is gone or settled already (another delivery succeeded)."""
    at = _now(now)
    actions = [Event.error.set(error[:500]), Event.failed_at.set(at), Event.receives.set(receives),
               Event.GSI2PK.remove(), Event.GSI2SK.remove()]  # it was received from a queue: it is queued
    if dead:
        actions += [Event.status.set("dead"), Event.dead_at.set(at)]
    else:
        actions.append(Event.status.set("queued"))
    return update_if(_row(event), actions, Event.PK.exists() & Event.status.is_in(*_OPEN))


def revive(corp_id: str, event_id: str, now: float | None = None) -> bool:
    """A dead event whose message is back in its queue (`make replay-dlq`): live again.
    False if there is no such dead row."""
    row = Event(*keys.event(corp_id, event_id))
    return update_if(row, [Event.status.set("queued"), Event.replayed_at.set(_now(now)), Event.dead_at.remove()],
                     Event.PK.exists() & (Event.status == "dead"))


def get(corp_id: str, event_id: str) -> Event | None:
    try:
        return Event.get(*keys.event(corp_id, event_id))
    except Event.DoesNotExist:
        return None


@dataclass
class PendingPage:
    events: list[CallbackEvent]
    next_key: dict | None  # where the shard's next page starts; None: the shard is done


def pending_page(shard: str, older_than: float, limit: int, start: dict | None = None) -> PendingPage:
    """One page of a pending-index shard: events stored before `older_than` (epoch seconds)
    and still not known to be queued, oldest first."""
    results = Event.gsi2.query(shard, Event.GSI2SK <= keys.pending_sk(older_than), limit=limit, page_size=limit,
                               last_evaluated_key=start)
    events = [CallbackEvent(corp_id=row.corp_id, event_id=row.event_id, kind=row.kind, event_type=row.event_type,
                            change_type=row.change_type, create_time=int(row.create_time), fields=row.fields)
              for row in results]
    return PendingPage(events, results.last_evaluated_key)
