"""Event rows after intake: marking one processed or failed, and the events still pending."""
from __future__ import annotations

import time

from pynamodb.exceptions import UpdateError

from scrm.store import keys
from scrm.store.models import Event, condition_failed
from scrm.wecom.callback.events import CallbackEvent


def finish(event: CallbackEvent, status: str, outcome: str, now: float | None = None) -> None:
    """Record the result and take the row out of the sweeper's pending index."""
    pk, sk = keys.event(event.corp_id, event.event_id)
    try:
        Event(pk, sk).update(
            actions=[
                Event.status.set(status),
                Event.outcome.set(outcome),
                Event.processed_at.set(int(time.time() if now is None else now)),
                Event.GSI2PK.remove(),
                Event.GSI2SK.remove(),
            ],
            condition=Event.PK.exists(),
        )
    except UpdateError as err:
        if not condition_failed(err):
            raise
        # The row expired (TTL) before a replay reached us: the effects ran, nothing to mark.


def pending_events(older_than: float):
    """Events accepted before `older_than` (epoch seconds) and not yet processed."""
    upper = f"{int(older_than):010d}"
    for shard in keys.pending_shards():
        yield from Event.gsi2.query(shard, Event.GSI2SK <= upper)
