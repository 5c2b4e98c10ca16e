"""PynamoDB models of the one table.

Every item carries `entity` (the discriminator) so a scan or a mixed query can tell items
apart; PynamoDB cannot use a discriminator as a key, so reads narrow by SK prefix
(see docs/data-model.md). Keys are built only by scrm.store.keys.
"""
from __future__ import annotations

import os

from pynamodb.attributes import (
    BooleanAttribute,
    DiscriminatorAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.exceptions import UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

TTL_ATTRIBUTE = "expires_at"
CONDITION_FAILED = "ConditionalCheckFailedException"
INVALID_REQUEST = "ValidationException"


def condition_failed(err: Exception) -> bool:
    """Whether a PynamoDB write error is a failed condition (not an outage)."""
    return getattr(err, "cause_response_code", None) == CONDITION_FAILED


def invalid_request(err: Exception) -> bool:
    """Whether DynamoDB refused the request itself (a key over 2,048 bytes, an item over
    400 KB, ...): the same request fails the same way every time, so retrying cannot help.
    Sees PynamoDB's errors and botocore's."""
    code = getattr(err, "cause_response_code", None)
    if code is None:
        code = (getattr(err, "response", None) or {}).get("Error", {}).get("Code")
    return code == INVALID_REQUEST


def update_if(row: Model, actions: list, condition) -> bool:
    """Update `row` if `condition` holds; False when it does not, any other error raised."""
    try:
        row.update(actions=actions, condition=condition)
    except UpdateError as err:
        if condition_failed(err):
            return False
        raise
    return True


def apply_versioned(row: Model, version: int, actions: list) -> bool:
    """Update `row` with `actions` unless it already holds a newer event; True if applied."""
    cls = type(row)
    return update_if(row, [*actions, cls.version.set(version), cls.entity.set(cls)],
                     cls.version.does_not_exist() | (cls.version <= version))


class GSI1(GlobalSecondaryIndex):
    class Meta:
        index_name = "GSI1"
        projection = AllProjection()

    GSI1PK = UnicodeAttribute(hash_key=True)
    GSI1SK = UnicodeAttribute(range_key=True)


class GSI2(GlobalSecondaryIndex):
    class Meta:
        index_name = "GSI2"
        projection = AllProjection()

    GSI2PK = UnicodeAttribute(hash_key=True)
    GSI2SK = UnicodeAttribute(range_key=True)


class Entity(Model):
    class Meta:
        table_name = os.environ.get("TABLE_NAME", "scrm-local")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)
    entity = DiscriminatorAttribute(attr_name="entity")
    GSI1PK = UnicodeAttribute(null=True)
    GSI1SK = UnicodeAttribute(null=True)
    GSI2PK = UnicodeAttribute(null=True)
    GSI2SK = UnicodeAttribute(null=True)
    gsi1 = GSI1()
    gsi2 = GSI2()
    expires_at = NumberAttribute(null=True)  # TTL (epoch seconds); moto never expires, so readers check it

    @classmethod
    def _get_connection(cls):
        # Every entity lives in the one table under one key schema: one connection (so one
        # botocore client) serves them all. PynamoDB's default, one per class, makes each
        # class's first request of a cold start load the DynamoDB service model anew.
        return Model._get_connection.__func__(Entity)


class Corp(Entity, discriminator="Corp"):
    corp_id = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    agent_id = UnicodeAttribute(null=True)
    registered_at = NumberAttribute()
    # How departments map to branch / region / store (issue 3): {"mode": "depth", ...}
    org_rule = JSONAttribute(null=True)


class AccessToken(Entity, discriminator="AccessToken"):
    token = UnicodeAttribute(null=True)
    token_expires_at = NumberAttribute(default=0)
    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(default=0)


class ApiBlock(Entity, discriminator="ApiBlock"):
    """What every worker must know about one WeCom API of a corp (scrm.wecom.apis.governor):
    a 45009 stops it until `blocked_until`; a 45033 slows it to `slow_factor` of its budget
    until `slow_until`."""

    api = UnicodeAttribute()
    errcode = NumberAttribute(null=True)
    blocked_until = NumberAttribute(default=0)
    slow_until = NumberAttribute(null=True)
    slow_factor = NumberAttribute(null=True)


class RateWindow(Entity, discriminator="RateWindow"):
    """Calls of one API leased by all workers in one window of the rate budget; written with
    a conditional ADD (plain boto3, scrm.wecom.apis.governor), read only through its answers."""

    used = NumberAttribute(default=0)
    blocked_until = NumberAttribute(null=True)  # a 45009 seen in this window: every lease learns it
    slow_until = NumberAttribute(null=True)  # a 45033 seen in this window
    slow_factor = NumberAttribute(null=True)


class Job(Entity, discriminator="Job"):
    """A long job (scrm.jobs): its progress in items, its chunks' bookkeeping, its result."""

    job_id = UnicodeAttribute()
    corp_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    params = JSONAttribute(null=True)
    state = UnicodeAttribute()  # queued | running | done | failed
    total = NumberAttribute(default=0)  # items planned (chunk sizes summed)
    done = NumberAttribute(default=0)  # items done
    failed = NumberAttribute(default=0)  # items failed
    chunks = NumberAttribute(default=0)  # chunks planned or spawned
    settled = NumberAttribute(default=0)  # chunks done, failed or skipped
    next_seq = NumberAttribute(default=0)  # sequence number of the next planned chunk
    planned = BooleanAttribute(default=False)  # the plan has no more pages
    plan_cursor = JSONAttribute(null=True)
    plan_owner = UnicodeAttribute(null=True)
    plan_lease_until = NumberAttribute(default=0)
    plan_retries = NumberAttribute(default=0)
    window = NumberAttribute()  # chunks dispatched ahead of those settled
    result = JSONAttribute(null=True)
    error = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()  # last progress: the watchdog looks at jobs quiet for a while
    finished_at = NumberAttribute(null=True)


class JobChunk(Entity, discriminator="JobChunk"):
    """One chunk of a job, claimed with a lease before it runs."""

    job_id = UnicodeAttribute()
    chunk_id = UnicodeAttribute()  # 6-digit sequence number, ".n" appended for spawned chunks
    payload = JSONAttribute()
    size = NumberAttribute(default=1)  # items it covers
    state = UnicodeAttribute()  # pending | running | waiting | done | failed | skipped
    owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(default=0)
    not_before = NumberAttribute(null=True)  # a waiting chunk runs again from then
    attempts = NumberAttribute(default=0)  # claims
    crashes = NumberAttribute(default=0)  # runs that died holding the lease
    retries = NumberAttribute(default=0)  # transient WeCom failures waited out
    done = NumberAttribute(null=True)
    failed = NumberAttribute(null=True)
    result = JSONAttribute(null=True)
    error = UnicodeAttribute(null=True)
    updated_at = NumberAttribute()


class Event(Entity, discriminator="Event"):
    """One accepted callback, written by the callback function before it answers."""

    corp_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    event_type = UnicodeAttribute()
    change_type = UnicodeAttribute(null=True)
    create_time = NumberAttribute()
    received_at = NumberAttribute()
    # received (stored, not yet known to be queued) -> queued -> processed | failed | dead
    status = UnicodeAttribute()
    fields = JSONAttribute()
    deliveries = NumberAttribute(default=1)
    queued_at = NumberAttribute(null=True)
    processed_at = NumberAttribute(null=True)
    outcome = UnicodeAttribute(null=True)  # processed: what the handler did; failed: why it never can
    error = UnicodeAttribute(null=True)  # the last failed attempt's error
    failed_at = NumberAttribute(null=True)
    receives = NumberAttribute(null=True)  # SQS receives of the message at that attempt
    dead_at = NumberAttribute(null=True)  # when its message went to a dead-letter queue
    replayed_at = NumberAttribute(null=True)


class Once(Entity, discriminator="Once"):
    """Marker of an effect that has happened; written in the same transaction as the effect."""

    effect = UnicodeAttribute()
    done_at = NumberAttribute()
    cause = UnicodeAttribute(null=True)


class Department(Entity, discriminator="Department"):
    dept_id = NumberAttribute()
    name = UnicodeAttribute(null=True)
    parent_id = NumberAttribute(null=True)
    order = NumberAttribute(null=True)
    level = UnicodeAttribute(null=True)  # branch | region | store | other
    depth = NumberAttribute(null=True)  # root = 1; None while the parent chain is unknown
    # Placement by the corp's org rule (scrm.domain.org.tree): the store/region/branch this department is in
    store_id = UnicodeAttribute(null=True)
    region_id = UnicodeAttribute(null=True)
    branch_id = UnicodeAttribute(null=True)
    deleted = BooleanAttribute(default=False)
    version = NumberAttribute(default=0)


class Staff(Entity, discriminator="Staff"):
    userid = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    mobile = UnicodeAttribute(null=True)
    departments = ListAttribute(of=NumberAttribute, null=True)
    main_department = NumberAttribute(null=True)
    store_id = UnicodeAttribute(null=True)
    region_id = UnicodeAttribute(null=True)
    branch_id = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="active")  # active | resigned
    resigned_at = NumberAttribute(null=True)
    customers_left_behind = NumberAttribute(null=True)  # active follows when marked resigned
    renamed_to = UnicodeAttribute(null=True)
    version = NumberAttribute(default=0)


class Touch(MapAttribute):
    """One add of a customer: who was added, through which state, channel, store and campaign."""

    at = NumberAttribute()
    userid = UnicodeAttribute()
    state = UnicodeAttribute(null=True)
    channel = UnicodeAttribute(null=True)
    store_id = UnicodeAttribute(null=True)
    campaign_id = UnicodeAttribute(null=True)
    config_id = UnicodeAttribute(null=True)


class Customer(Entity, discriminator="Customer"):
    external_userid = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    unionid = UnicodeAttribute(null=True)
    type = NumberAttribute(null=True)
    gender = NumberAttribute(null=True)
    avatar = UnicodeAttribute(null=True)
    corp_name = UnicodeAttribute(null=True)
    first_seen_at = NumberAttribute(null=True)
    # Attribution: the earliest and the latest add (each written only if older / newer)
    first_touch = Touch(null=True)
    latest_touch = Touch(null=True)
    profile_at = NumberAttribute(null=True)  # when the profile was fetched: it only moves forward


class Follow(Entity, discriminator="Follow"):
    """One customer followed by one staff member (跟进成员)."""

    external_userid = UnicodeAttribute()
    userid = UnicodeAttribute()
    status = UnicodeAttribute()  # active | half | deleted_by_customer | deleted_by_staff
    added_at = NumberAttribute(null=True)
    state = UnicodeAttribute(null=True)
    add_way = NumberAttribute(null=True)
    remark = UnicodeAttribute(null=True)
    description = UnicodeAttribute(null=True)
    tag_ids = UnicodeSetAttribute(null=True)
    delete_source = UnicodeAttribute(null=True)
    transfer_fail_reason = UnicodeAttribute(null=True)
    # create_time * 10 + rank of the last event applied: state never goes backwards
    version = NumberAttribute(default=0)
    # when remark/description/state/add_way/tags were fetched from WeCom: they only move forward
    synced_at = NumberAttribute(null=True)


class TimelineEntry(Entity, discriminator="TimelineEntry"):
    external_userid = UnicodeAttribute()
    at = NumberAttribute()
    what = UnicodeAttribute()
    userid = UnicodeAttribute(null=True)
    detail = JSONAttribute(null=True)


class TagGroup(Entity, discriminator="TagGroup"):
    group_id = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    order = NumberAttribute(null=True)
    deleted = BooleanAttribute(default=False)
    needs_sync = BooleanAttribute(default=False)
    strategy_id = UnicodeAttribute(null=True)  # rule-group (策略) tags: not in get_corp_tag_list
    synced_at = NumberAttribute(null=True)  # when last pulled from WeCom
    version = NumberAttribute(default=0)


class Tag(Entity, discriminator="Tag"):
    tag_id = UnicodeAttribute()
    group_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    order = NumberAttribute(null=True)
    deleted = BooleanAttribute(default=False)
    needs_sync = BooleanAttribute(default=False)
    strategy_id = UnicodeAttribute(null=True)  # rule-group (策略) tags: not in get_corp_tag_list
    synced_at = NumberAttribute(null=True)  # when last pulled from WeCom
    version = NumberAttribute(default=0)


class GroupChat(Entity, discriminator="GroupChat"):
    chat_id = UnicodeAttribute()
    status = UnicodeAttribute()  # active | dismissed
    last_change = UnicodeAttribute(null=True)
    member_version = UnicodeAttribute(null=True)
    needs_sync = BooleanAttribute(default=False)
    version = NumberAttribute(default=0)


class DailyCounter(Entity, discriminator="DailyCounter"):
    """One scope's figures of one business day, written only by the stats projector
    (scrm.domain.stats), never inside a business transaction."""

    scope = UnicodeAttribute()
    scope_id = UnicodeAttribute()
    day = UnicodeAttribute()
    # One attribute per metric (scrm.domain.stats.facts.METRICS): DynamoDB's ADD works on them
    # atomically without a read.
    new_customers = NumberAttribute(default=0)
    lost_customers = NumberAttribute(default=0)
    deleted_customers = NumberAttribute(default=0)
    welcomes_sent = NumberAttribute(default=0)
    coupons_issued = NumberAttribute(default=0)
    coupons_redeemed = NumberAttribute(default=0)


class RankEntry(Entity, discriminator="RankEntry"):
    """A scope's value of one metric on one day, in the ranking of its parent scope.

    Written after the counter it copies, only ever upwards (`value` grows as the counter
    does), so concurrent or repeated writers converge on the counter's value."""

    scope = UnicodeAttribute()
    scope_id = UnicodeAttribute()
    parent_scope = UnicodeAttribute()
    parent_id = UnicodeAttribute()
    day = UnicodeAttribute()
    metric = UnicodeAttribute()
    value = NumberAttribute()


# --- acquisition (issue 3) ---------------------------------------------------------------
class ContactWay(Entity, discriminator="ContactWay"):
    """A 渠道活码 created through add_contact_way; `state` decodes back to its owner."""

    config_id = UnicodeAttribute()
    state = UnicodeAttribute()
    owner_kind = UnicodeAttribute()  # staff | store | campaign
    owner_id = UnicodeAttribute()
    users = ListAttribute(of=UnicodeAttribute, null=True)
    store_id = UnicodeAttribute(null=True)
    campaign_id = UnicodeAttribute(null=True)
    channel = UnicodeAttribute(null=True)
    remark = UnicodeAttribute(null=True)
    qr_code = UnicodeAttribute(null=True)
    tag_ids = ListAttribute(of=UnicodeAttribute, null=True)  # channel tags marked on new customers
    welcome = JSONAttribute(null=True)  # overrides the campaign's welcome
    created_at = NumberAttribute()
    deleted = BooleanAttribute(default=False)
    made_by = UnicodeAttribute(null=True)  # the job that created it (bulk creation), if one did
    # Only on the claim row (keys.contact_way_claim) that reserves the state before WeCom is called
    fingerprint = UnicodeAttribute(null=True)  # digest of the create request
    claim_status = UnicodeAttribute(null=True)  # pending | created | deleted
    lease_until = NumberAttribute(null=True)


class Campaign(Entity, discriminator="Campaign"):
    campaign_id = UnicodeAttribute()
    name = UnicodeAttribute()
    welcome = JSONAttribute(null=True)  # {"text": ..., "link": {...} | "miniprogram": {...}}
    coupon_template_id = UnicodeAttribute(null=True)
    starts_at = NumberAttribute(null=True)
    ends_at = NumberAttribute(null=True)
    created_at = NumberAttribute()


class CouponTemplate(Entity, discriminator="CouponTemplate"):
    template_id = UnicodeAttribute()
    name = UnicodeAttribute()
    kind = UnicodeAttribute()  # amount | discount
    amount = NumberAttribute(null=True)  # fen, for kind=amount
    discount = NumberAttribute(null=True)  # percent paid, e.g. 85, for kind=discount
    threshold = NumberAttribute(default=0)  # minimum spend in fen
    valid_days = NumberAttribute(null=True)  # validity: days after issue ...
    valid_from = NumberAttribute(null=True)  # ... or fixed dates (epoch seconds)
    valid_until = NumberAttribute(null=True)
    per_customer_limit = NumberAttribute(default=1)
    total_stock = NumberAttribute()
    created_at = NumberAttribute()


class CouponStock(Entity, discriminator="CouponStock"):
    template_id = UnicodeAttribute()
    remaining = NumberAttribute()
    issued = NumberAttribute(default=0)


class CouponClaims(Entity, discriminator="CouponClaims"):
    """How many coupons of one template a customer holds: the per-customer limit's counter."""

    template_id = UnicodeAttribute()
    external_userid = UnicodeAttribute()
    count = NumberAttribute(default=0)


class Coupon(Entity, discriminator="Coupon"):
    code = UnicodeAttribute()
    template_id = UnicodeAttribute()
    campaign_id = UnicodeAttribute(null=True)
    external_userid = UnicodeAttribute()
    occasion = UnicodeAttribute()
    # The template's terms, copied at issue so the till needs no second read.
    kind = UnicodeAttribute(null=True)
    amount = NumberAttribute(null=True)
    discount = NumberAttribute(null=True)
    threshold = NumberAttribute(null=True)
    status = UnicodeAttribute()  # issued | redeemed
    issued_at = NumberAttribute()
    valid_from = NumberAttribute()
    valid_until = NumberAttribute()
    staff_userid = UnicodeAttribute(null=True)  # who brought the customer: credited on redemption
    store_id = UnicodeAttribute(null=True)
    redeemed_at = NumberAttribute(null=True)
    redeemed_store_id = UnicodeAttribute(null=True)
    redeemed_by = UnicodeAttribute(null=True)
    redemption_request = UnicodeAttribute(null=True)


class Welcome(Entity, discriminator="Welcome"):
    """One welcome per add event: claimed before sending, so it is never sent twice.

    Only the claim's `holder` writes its outcome (scrm.domain.welcome.claim); the coupon code
    is on the claim before the welcome is sent, so no later failure can lose it."""

    external_userid = UnicodeAttribute()
    userid = UnicodeAttribute()
    status = UnicodeAttribute()  # sending | sent | failed | skipped | unknown
    holder = UnicodeAttribute(null=True)  # random per claim: the one worker that may record the outcome
    claimed_at = NumberAttribute()
    lease_until = NumberAttribute()  # past the 20 s window: nobody takes a claim over while it can still send
    sent_at = NumberAttribute(null=True)
    source = UnicodeAttribute(null=True)  # way | campaign | store_default | corp_default
    campaign_id = UnicodeAttribute(null=True)
    coupon_code = UnicodeAttribute(null=True)
    coupon_reason = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)


class WelcomeDefault(Entity, discriminator="WelcomeDefault"):
    """The welcome a customer gets when neither the contact way nor its campaign has one."""

    scope = UnicodeAttribute()  # corp | store
    store_id = UnicodeAttribute(null=True)
    welcome = JSONAttribute()
    updated_at = NumberAttribute()
