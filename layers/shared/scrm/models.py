"""PynamoDB models of the one table.

Every item carries `entity` (the discriminator) so a scan or a mixed query can tell items
apart; PynamoDB cannot use a discriminator as a key, so reads narrow by SK prefix
(see docs/data-model.md). Keys are built only by scrm.keys.
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
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

TTL_ATTRIBUTE = "expires_at"


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
    api = UnicodeAttribute()
    errcode = NumberAttribute()
    blocked_until = NumberAttribute()


class Event(Entity, discriminator="Event"):
    """One accepted callback, written by the callback function before it answers."""

    corp_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    event_type = UnicodeAttribute()
    change_type = UnicodeAttribute(null=True)
    create_time = NumberAttribute()
    received_at = NumberAttribute()
    status = UnicodeAttribute()  # received -> processed | failed
    fields = JSONAttribute()
    deliveries = NumberAttribute(default=1)
    processed_at = NumberAttribute(null=True)
    outcome = UnicodeAttribute(null=True)
    error = UnicodeAttribute(null=True)


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
    renamed_to = UnicodeAttribute(null=True)
    version = NumberAttribute(default=0)


class Customer(Entity, discriminator="Customer"):
    external_userid = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    unionid = UnicodeAttribute(null=True)
    type = NumberAttribute(null=True)
    gender = NumberAttribute(null=True)
    avatar = UnicodeAttribute(null=True)
    corp_name = UnicodeAttribute(null=True)
    first_seen_at = NumberAttribute(null=True)
    attribution = MapAttribute(null=True)  # first/latest channel, staff, store, campaign
    profile_at = NumberAttribute(null=True)


class Follow(Entity, discriminator="Follow"):
    """One customer followed by one staff member (跟进成员)."""

    external_userid = UnicodeAttribute()
    userid = UnicodeAttribute()
    status = UnicodeAttribute()  # active | half | deleted_by_customer | deleted_by_staff
    added_at = NumberAttribute(null=True)
    state = UnicodeAttribute(null=True)
    add_way = NumberAttribute(null=True)
    remark = UnicodeAttribute(null=True)
    tag_ids = UnicodeSetAttribute(null=True)
    delete_source = UnicodeAttribute(null=True)
    transfer_fail_reason = UnicodeAttribute(null=True)
    # create_time * 10 + rank of the last event applied: state never goes backwards
    version = NumberAttribute(default=0)


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
    version = NumberAttribute(default=0)


class Tag(Entity, discriminator="Tag"):
    tag_id = UnicodeAttribute()
    group_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    order = NumberAttribute(null=True)
    deleted = BooleanAttribute(default=False)
    needs_sync = BooleanAttribute(default=False)
    version = NumberAttribute(default=0)


class GroupChat(Entity, discriminator="GroupChat"):
    chat_id = UnicodeAttribute()
    status = UnicodeAttribute()  # active | dismissed
    last_change = UnicodeAttribute(null=True)
    member_version = UnicodeAttribute(null=True)
    needs_sync = BooleanAttribute(default=False)
    version = NumberAttribute(default=0)


class DailyCounter(Entity, discriminator="DailyCounter"):
    scope = UnicodeAttribute()
    scope_id = UnicodeAttribute()
    day = UnicodeAttribute()
    # One attribute per metric (scrm.once.COUNTER_METRICS): DynamoDB's ADD works on them
    # atomically without a read.
    new_customers = NumberAttribute(default=0)
    lost_customers = NumberAttribute(default=0)
    deleted_customers = NumberAttribute(default=0)
    welcomes_sent = NumberAttribute(default=0)
    coupons_issued = NumberAttribute(default=0)
    coupons_redeemed = NumberAttribute(default=0)
