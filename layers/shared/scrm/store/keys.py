"""Every table key is spelled here and nowhere else.

Partition keys start with the corp so that no two tenants ever share an item, and the
high-volume entities (customers, staff, events, coupons) each get a partition of their
own so that 20 million customers spread over the whole key space. docs/data-model.md
holds the same templates as a chart; keep the two in step.
"""
from __future__ import annotations

import hashlib

SEP = "#"
# Sparse index of events still waiting for the worker, spread over shards so that a
# burst of callbacks does not pile onto one GSI partition.
PENDING_SHARDS = 10


def _corp(corp_id: str) -> str:
    if not corp_id or SEP in corp_id:
        raise ValueError("corp_id must be non-empty and must not contain '#'")
    return f"CORP{SEP}{corp_id}"


def shard_of(value: str, shards: int) -> int:
    return int(hashlib.blake2s(value.encode(), digest_size=4).hexdigest(), 16) % shards


# --- corp, tokens, rate-limit blocks -------------------------------------------------
def corp(corp_id: str) -> tuple[str, str]:
    return _corp(corp_id), "CORP"


CORPS_INDEX_PK = "CORPS"  # GSI1: every registered corp (the scheduled jobs walk it)


def access_token(corp_id: str, agent_id: str) -> tuple[str, str]:
    return _corp(corp_id), f"TOKEN{SEP}{agent_id}"


def api_block(corp_id: str, api: str) -> tuple[str, str]:
    return _corp(corp_id), f"APIBLOCK{SEP}{api}"


API_BLOCK_PREFIX = f"APIBLOCK{SEP}"


def rate_window(corp_id: str, api: str, window_start: int) -> tuple[str, str]:
    """Calls of one WeCom API leased in one window (scrm.wecom.apis.governor): a partition per
    API, so that a busy API's counter never shares a partition with the corp's other rows."""
    return f"{_corp(corp_id)}{SEP}RATE{SEP}{api}", f"W{SEP}{window_start:010d}"


# --- callback events -----------------------------------------------------------------
def event(corp_id: str, event_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}EVENT{SEP}{event_id}", "EVENT"


def events_by_day(corp_id: str, day: str) -> str:
    """GSI1PK: one corp's events of one UTC day (yyyy-mm-dd), GSI1SK = create_time#event_id."""
    return f"{_corp(corp_id)}{SEP}EVENTS{SEP}{day}"


def events_by_day_sk(create_time: int, event_id: str) -> str:
    return f"{create_time:010d}{SEP}{event_id}"


def pending(event_id: str) -> str:
    """GSI2PK of an event not yet processed (removed once processed)."""
    return f"PENDING{SEP}{shard_of(event_id, PENDING_SHARDS)}"


def pending_shards() -> list[str]:
    return [f"PENDING{SEP}{n}" for n in range(PENDING_SHARDS)]


# --- jobs (scrm.jobs) ------------------------------------------------------------------
ACTIVE_JOBS = "JOBS#ACTIVE"  # GSI2PK of every job not yet finished (the watchdog walks it)


def job(corp_id: str, job_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}JOB{SEP}{job_id}", "JOB"


def job_chunk(corp_id: str, job_id: str, chunk_id: str) -> tuple[str, str]:
    """A chunk lives in its job's partition: finishing a job reads them with one Query."""
    return f"{_corp(corp_id)}{SEP}JOB{SEP}{job_id}", f"{CHUNK_PREFIX}{chunk_id}"


CHUNK_PREFIX = f"CHUNK{SEP}"


def active_job_sk(created_at: int, corp_id: str, job_id: str) -> str:
    return f"{created_at:010d}{SEP}{corp_id}{SEP}{job_id}"


# --- exactly-once effects ------------------------------------------------------------
def once(corp_id: str, effect: str, key: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}ONCE{SEP}{effect}{SEP}{key}", "ONCE"


# --- org: departments (branch/region/store) and staff --------------------------------
def org(corp_id: str) -> str:
    """The org tree of one corp lives in one partition: read whole, written only by syncs."""
    return f"{_corp(corp_id)}{SEP}ORG"


def department(corp_id: str, dept_id: int | str) -> tuple[str, str]:
    return org(corp_id), f"DEPT{SEP}{dept_id}"


def staff(corp_id: str, userid: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}STAFF{SEP}{userid}", "STAFF"


def staff_by_store(corp_id: str, store_id: int | str) -> str:
    """GSI1PK of staff: the store they belong to; GSI1SK = STAFF#userid."""
    return f"{_corp(corp_id)}{SEP}STORE{SEP}{store_id}"


STAFF_PREFIX = f"STAFF{SEP}"


def staff_of_corp(corp_id: str) -> str:
    """GSI2PK of every staff row of a corp (the full sync diffs against it); GSI2SK = userid."""
    return f"{_corp(corp_id)}{SEP}STAFFS"


def stores(corp_id: str) -> str:
    """GSI1PK of the departments that are stores; GSI1SK = store_sort(dept_id)."""
    return f"{_corp(corp_id)}{SEP}STORES"


def store_sort(dept_id: int | str) -> str:
    return f"STORE{SEP}{int(dept_id):010d}"  # zero-padded: stores list in id order


# --- customers, follow relations, timeline -------------------------------------------
def customer_pk(corp_id: str, external_userid: str) -> str:
    return f"{_corp(corp_id)}{SEP}CUST{SEP}{external_userid}"


def customer(corp_id: str, external_userid: str) -> tuple[str, str]:
    return customer_pk(corp_id, external_userid), "CUSTOMER"


def follow(corp_id: str, external_userid: str, userid: str) -> tuple[str, str]:
    return customer_pk(corp_id, external_userid), f"FOLLOW{SEP}{userid}"


FOLLOW_PREFIX = f"FOLLOW{SEP}"


def follows_of_staff(corp_id: str, userid: str) -> str:
    """GSI1PK of a follow: the staff member's customers; GSI1SK = FOLLOW#external_userid."""
    return f"{_corp(corp_id)}{SEP}STAFF{SEP}{userid}{SEP}FOLLOWS"


def timeline(corp_id: str, external_userid: str, create_time: int, event_id: str) -> tuple[str, str]:
    return customer_pk(corp_id, external_userid), f"TL{SEP}{create_time:010d}{SEP}{event_id}"


TIMELINE_PREFIX = f"TL{SEP}"


# --- tags and group chats ------------------------------------------------------------
def tags(corp_id: str) -> str:
    return f"{_corp(corp_id)}{SEP}TAGS"


def tag_group(corp_id: str, group_id: str) -> tuple[str, str]:
    return tags(corp_id), f"GROUP{SEP}{group_id}"


def tag(corp_id: str, tag_id: str) -> tuple[str, str]:
    return tags(corp_id), f"TAG{SEP}{tag_id}"


TAG_GROUP_PREFIX = f"GROUP{SEP}"
TAG_PREFIX = f"TAG{SEP}"


def group_chat(corp_id: str, chat_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}CHAT{SEP}{chat_id}", "CHAT"


# --- contact ways and campaigns (acquisition) ----------------------------------------
def contact_way(corp_id: str, config_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}WAY{SEP}{config_id}", "WAY"


def contact_ways(corp_id: str) -> str:
    """GSI1PK listing a corp's contact ways; GSI1SK = owner_kind#owner_id#config_id."""
    return f"{_corp(corp_id)}{SEP}WAYS"


def contact_way_by_state(corp_id: str, state: str) -> str:
    """GSI2PK: the contact way a `state` came from; GSI2SK = config_id."""
    return f"{_corp(corp_id)}{SEP}STATE{SEP}{state}"


def contact_way_owner(owner_kind: str, owner_id: str | None = None) -> str:
    """GSI1SK prefix of a corp's contact ways of one owner kind (and owner); + config_id = GSI1SK."""
    return f"{owner_kind}{SEP}" if owner_id is None else f"{owner_kind}{SEP}{owner_id}{SEP}"


def contact_way_claim(corp_id: str, state: str) -> tuple[str, str]:
    """A state reserved before add_contact_way is called: what makes creation retry-safe."""
    return f"{_corp(corp_id)}{SEP}WAYCLAIM{SEP}{state}", "CLAIM"


def campaign(corp_id: str, campaign_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}CAMPAIGN{SEP}{campaign_id}", "CAMPAIGN"


def campaigns(corp_id: str) -> str:
    return f"{_corp(corp_id)}{SEP}CAMPAIGNS"


# --- coupons ---------------------------------------------------------------------------
def coupon_template(corp_id: str, template_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}COUPONTPL{SEP}{template_id}", "TEMPLATE"


def coupon_stock(corp_id: str, template_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}COUPONTPL{SEP}{template_id}", "STOCK"


def coupon_templates(corp_id: str) -> str:
    """GSI1PK listing a corp's coupon templates; GSI1SK = coupon_template_sk (newest last)."""
    return f"{_corp(corp_id)}{SEP}COUPONTPLS"


def coupon_template_sk(created_at: int, template_id: str) -> str:
    return f"TPL{SEP}{created_at:010d}{SEP}{template_id}"


def coupon(corp_id: str, code: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}COUPON{SEP}{code}", "COUPON"


def coupon_redemption(corp_id: str, code: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}COUPON{SEP}{code}", "REDEMPTION"


def coupons_of_customer(corp_id: str, external_userid: str) -> str:
    """GSI1PK of an issued coupon; GSI1SK = COUPON#issued_at#code."""
    return f"{customer_pk(corp_id, external_userid)}{SEP}COUPONS"


def coupon_of_customer_sk(issued_at: int, code: str) -> str:
    return f"COUPON{SEP}{issued_at:010d}{SEP}{code}"


def coupon_claims(corp_id: str, external_userid: str, template_id: str) -> tuple[str, str]:
    """Per-customer issue count of one template: the per-customer limit's counter."""
    return customer_pk(corp_id, external_userid), f"CLAIMS{SEP}{template_id}"


def welcome(corp_id: str, external_userid: str, userid: str, welcome_code: str) -> tuple[str, str]:
    """The welcome of one add event (a WelcomeCode is single-use, so it names the occasion)."""
    return customer_pk(corp_id, external_userid), f"WELCOME{SEP}{userid}{SEP}{welcome_code}"


# --- moments ---------------------------------------------------------------------------
MOMENT_TASK_SHARDS = 16


def moment(corp_id: str, moment_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}MOMENT{SEP}{moment_id}", "MOMENT"


def moments(corp_id: str) -> str:
    return f"{_corp(corp_id)}{SEP}MOMENTS"


def moment_task(corp_id: str, moment_id: str, userid: str) -> tuple[str, str]:
    """Per-staff task of a moment: 50,000 of them per wave, so spread over shards."""
    shard = shard_of(userid, MOMENT_TASK_SHARDS)
    return f"{_corp(corp_id)}{SEP}MOMENT{SEP}{moment_id}{SEP}S{shard}", f"TASK{SEP}{userid}"


# --- staff turnover (handovers) --------------------------------------------------------
def handover(corp_id: str, handover_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}HANDOVER{SEP}{handover_id}", "HANDOVER"


def handover_customer(corp_id: str, handover_id: str, external_userid: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}HANDOVER{SEP}{handover_id}", f"CUST{SEP}{external_userid}"


def handovers(corp_id: str) -> str:
    return f"{_corp(corp_id)}{SEP}HANDOVERS"


# --- daily counters (watching the numbers) ---------------------------------------------
SCOPES = ("staff", "store", "region", "branch", "corp")


def daily_counter(corp_id: str, scope: str, scope_id: str, day: str) -> tuple[str, str]:
    if scope not in SCOPES:
        raise ValueError(f"unknown counter scope {scope!r}")
    return f"{_corp(corp_id)}{SEP}STATS{SEP}{scope}{SEP}{scope_id}", f"DAY{SEP}{day}"


def daily_ranking(corp_id: str, scope: str, day: str) -> str:
    """GSI1PK: every counter of one scope and day (read whole to rank); GSI1SK = scope_id."""
    return f"{_corp(corp_id)}{SEP}DAY{SEP}{day}{SEP}{scope}"
