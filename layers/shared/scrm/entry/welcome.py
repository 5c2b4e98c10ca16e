"""What WelcomeFunction runs for each add event that carries a WelcomeCode: the welcome first,
then everything else the event means.

The WelcomeCode dies 20 s after the add, so nothing may stand between the event and the
send: the follow's state, the timeline, the profile fetch, attribution and channel tags
(scrm.entry.worker.route, the general handler) run after the welcome lane
(scrm.domain.welcome.lane) has sent and recorded it. Both read the same rows once
(scrm.store.read_cache, opened per record by scrm.entry.worker.process_event). If the lane
fails, the rest is still recorded before the record is reported failed; its redelivery finds
the welcome's claim and does not send twice.
"""
from __future__ import annotations

from aws_lambda_powertools import Metrics

from scrm.domain.welcome import lane
from scrm.entry import worker
from scrm.wecom.apis.client import for_corp
from scrm.wecom.callback.events import CallbackEvent

# WeCom's 20 s window for the welcome, then the rest of the event (a profile fetch).
RECORD_BUDGET = 30.0


def handle(event: CallbackEvent) -> str:
    """The welcome's outcome, then the general handler's."""
    try:
        welcome = lane.send_for(event, for_corp(event.corp_id))
    except Exception:
        worker.route(event)
        raise
    return f"{welcome},{worker.route(event)}"


def handle_batch(event: dict, context, metrics: Metrics) -> dict:
    return worker.handle_batch(event, context, metrics, record_handler=handle, record_budget=RECORD_BUDGET)
