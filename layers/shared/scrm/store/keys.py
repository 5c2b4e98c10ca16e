"""Every table key is spelled here and nowhere else.

Partition keys start with the corp so that no two tenants ever share an item, and the
high-volume entities (customers, staff, events, coupons) each get a partition of their
own so that 20 million customers spread over the whole key space. docs/data-model.md
holds the same templates as a chart; keep the two in step.
"""
from __future__ import annotations

import hashlib

SEP = "#"
# Sparse index of events stored but not yet known to be queued, spread over shards so that
# a burst of callbacks does not pile onto one GSI partition.
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


# --- ops API: Idempotency-Key records (written by Powertools' idempotency utility) ---------
def idempotency(corp_id: str) -> str:
    """PK of a corp's idempotency records; SK = IDEMPOTENCY_PREFIX#<md5 of route and key>."""
    return f"{_corp(corp_id)}{SEP}IDEMPOTENCY"


IDEMPOTENCY_PREFIX = "IDEMPOTENCY"


# --- callback events -----------------------------------------------------------------
def event(corp_id: str, event_id: str) -> tuple[str, str]:
    return f"{_corp(corp_id)}{SEP}EVENT{SEP}{event_id}", "EVENT"


def pending(event_id: str) -> str:
    """GSI2PK of an event stored but not yet known to be queued (removed once it is)."""
    return f"PENDING{SEP}{shard_of(event_id, PENDING_SHARDS)}"


def pending_sk(received_at: float) -> str:
    """GSI2SK of a pending event: when it was received, zero-padded so it sorts as a number."""
    return f"{int(received_at):010d}"


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


def coupon_issued(corp_id: str, external_userid: str, source: str, occasion: str) -> tuple[str, str]:
    """The coupon a customer was issued for one occasion of a campaign or template (`source`
    is `campaign:<id>` or `template:<id>`): what makes an issue happen once. In the customer's
    partition, so that the welcome's transaction stays there (and on the stock)."""
    return customer_pk(corp_id, external_userid), f"ISSUED{SEP}{source}{SEP}{occasion}"


def welcome(corp_id: str, external_userid: str, userid: str, welcome_code: str) -> tuple[str, str]:
    """The welcome of one add event (a WelcomeCode is single-use, so it names the occasion)."""
    return customer_pk(corp_id, external_userid), f"{WELCOME_PREFIX}{userid}{SEP}{welcome_code}"


WELCOME_PREFIX = f"WELCOME{SEP}"


def welcome_defaults(corp_id: str) -> str:
    """The corp's default welcomes: one item for the corp, one per store that has its own."""
    return f"{_corp(corp_id)}{SEP}WELCOMEDEFAULTS"


def corp_welcome_default(corp_id: str) -> tuple[str, str]:
    return welcome_defaults(corp_id), "CORP"


def store_welcome_default(corp_id: str, store_id: str) -> tuple[str, str]:
    return welcome_defaults(corp_id), f"{STORE_DEFAULT_PREFIX}{store_id}"


STORE_DEFAULT_PREFIX = f"STORE{SEP}"


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


# --- daily figures (projected from the table's stream by scrm.domain.stats) ------------
SCOPES = ("staff", "store", "region", "branch", "corp")


def corp_of(pk: str) -> str:
    """The corp a partition key belongs to (every key but the global index ones starts with it)."""
    prefix, _, rest = pk.partition(SEP)
    corp_id = rest.partition(SEP)[0]
    if prefix != "CORP" or not corp_id:
        raise ValueError("not a key of a corp's item")
    return corp_id


def _scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown counter scope {scope!r}")
    return scope


def daily_counters(corp_id: str, scope: str, scope_id: str) -> str:
    """PK of one scope's daily counters; SK = day_sk(day), so a date range is one Query."""
    return f"{_corp(corp_id)}{SEP}STATS{SEP}{_scope(scope)}{SEP}{scope_id}"


def day_sk(day: str) -> str:
    return f"DAY{SEP}{day}"


def daily_counter(corp_id: str, scope: str, scope_id: str, day: str) -> tuple[str, str]:
    return daily_counters(corp_id, scope, scope_id), day_sk(day)


def ranking(corp_id: str, parent_scope: str, parent_id: str, scope: str, day: str, metric: str) -> str:
    """PK (and GSI1PK) of one ranking: the `scope`s directly under one parent, one day, one metric.

    A few dozen items at most (the staff of a store, the stores of a region); SK = scope_id,
    GSI1SK = rank_sk(value, scope_id), so the top N is one Query of GSI1, highest first."""
    return (f"{_corp(corp_id)}{SEP}RANK{SEP}{_scope(parent_scope)}{SEP}{parent_id}{SEP}{_scope(scope)}"
            f"{SEP}{day}{SEP}{metric}")


def rank_sk(value: int, scope_id: str) -> str:
    return f"{value:012d}{SEP}{scope_id}"  # zero-padded: string order is numeric order
