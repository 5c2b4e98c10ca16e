"""Coupons: templates, stock, exactly-once issue and redemption at the till.

Issue is ONE TransactWriteItems. PynamoDB sends puts before updates, so the items (and their
cancellation reasons) come in this order:
  0   put Issued marker of (campaign or template, occasion) in the customer's partition,
        cause = the code issued                    attribute_not_exists
  1   put Coupon                                   attribute_not_exists (code uniqueness)
  2   update CouponStock  remaining -1, issued +1  remaining > 0
  3   update CouponClaims count +1                 attribute_not_exists(count) OR count < limit
No item shared by many customers is touched (apart from the template's stock): the daily
figures count the Coupon item's arrival from the table's stream (scrm.domain.stats).
The cancellation reasons tell, in this priority: already_issued (the marker's code is handed back),
out_of_stock, limit_reached, then a code collision (retried with a new code). Nothing is checked
outside the transaction, so two claims can never both pass the per-customer limit, and a retry
finds the marker and returns the code issued the first time.

Redemption is one transaction too: the coupon goes issued -> redeemed under the condition
`status = issued AND valid_from <= now AND valid_until >= now`; the stats projector credits the
redeeming store, the staff member who brought the customer and the corp from that change. The
POS's request_id is stored on the coupon: the same request again is answered with success.

Codes: 16 characters of Crockford base32 (0-9 and A-Z without I, L, O, U) drawn from 80 bits of
`secrets`, stored ungrouped. A till may type them in any case, grouped with '-' or spaces, and
with I/L for 1 and O for 0; `normalize_code` turns that back into the stored form.

Scale: every issue of one template writes its single stock item, and one DynamoDB item takes
about 1,000 writes/s (fewer inside transactions that conflict). Sharding would lift that: split
the stock into N items (`STOCK#0..N-1`, each holding total/N), have issue pick a shard at random
and move to another on `remaining > 0` failing, and report stock as the sum of the shards. The
transaction layout stays the same; only item 2 names a shard.
"""
from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from scrm.platform.config import BUSINESS_UTC_OFFSET_HOURS
from scrm.platform.errors import ScrmError
from scrm.platform.times import readable
from scrm.store import keys, once, paging
from scrm.store.models import Coupon, CouponClaims, CouponStock, CouponTemplate, Once
from scrm.store.once import Write

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16  # 16 x 5 bits = 80 bits
_TYPED_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})
_CODE_SHAPE = re.compile(f"[{CROCKFORD}]{{{CODE_LENGTH}}}")
_TEMPLATE_ID_SHAPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

ISSUE_ATTEMPTS = 8  # code collisions and transaction conflicts, each retried with a fresh attempt
REDEEM_ATTEMPTS = 5
# Cancellation codes DynamoDB gives when the transaction lost a race, not a condition.
_RETRYABLE = {"TransactionConflict", "ThrottlingError"}
_FAILED = "ConditionalCheckFailed"
# Positions in the issue transaction (see the module docstring): PynamoDB sends condition checks,
# deletes, puts, then updates, each group in the order added.
_MARKER, _COUPON, _STOCK, _CLAIMS, _RECORD = 0, 1, 2, 3, 4
TEMPLATE_CACHE_SIZE = 256

_STATUS = {
    "unknown_code": 404,
    "template_not_found": 404,
    "already_redeemed": 409,
    "request_id_reused": 409,
    "not_yet_valid": 409,
    "template_exists": 409,
    "expired": 410,
    # well-formed but refused on meaning (the ops API checks the shape first)
    "invalid_template": 422,
    "invalid_request": 422,
}


class CouponError(ScrmError):
    """`reason` is a key of _STATUS, `status` its HTTP status, `field` the template field at fault."""

    def __init__(self, reason: str, message: str | None = None, field: str | None = None) -> None:
        super().__init__(reason, field)
        self.status = _STATUS[reason]
        self.message = message or reason

    def __str__(self) -> str:
        return self.message


@dataclass
class IssueResult:
    # issued | already_issued | out_of_stock | limit_reached | template_not_found | template_expired
    # | unrecorded (the caller's record refused: nothing issued)
    status: str
    coupon: Coupon | None = None

    @property
    def code(self) -> str | None:
        return self.coupon.code if self.coupon else None


# --- codes -----------------------------------------------------------------------------
def new_code() -> str:
    value = int.from_bytes(secrets.token_bytes(CODE_LENGTH * 5 // 8), "big")
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH)))


def normalize_code(typed: str) -> str | None:
    """The stored form of a code as typed at a till, or None if it cannot be a code."""
    code = re.sub(r"[\s-]", "", typed or "").upper().translate(_TYPED_ALIASES)
    return code if _CODE_SHAPE.fullmatch(code) else None


# --- templates -------------------------------------------------------------------------
def _whole(field: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise _invalid(field, f"must be a whole number {bounds}, got {value!r}")
    return value


def _invalid(field: str, problem: str) -> CouponError:
    return CouponError("invalid_template", f"{field} {problem}", field)


def create_template(corp_id: str, *, name: str, kind: str, amount: int | None = None,
                    discount: int | None = None, threshold: int = 0, valid_days: int | None = None,
                    valid_from: int | None = None, valid_until: int | None = None,
                    per_customer_limit: int = 1, total_stock: int, template_id: str | None = None,
                    now: float | None = None) -> CouponTemplate:
    """Validate and write a template with its stock row in one transaction.

    Amounts are in fen; `discount` is the percent paid (85 = 15% off); fixed dates are epoch seconds.
    """
    now = int(time.time() if now is None else now)
    if not name or not name.strip():
        raise _invalid("name", "must not be empty")
    if kind == "amount":
        _whole("amount", amount, 1)
        if discount is not None:
            raise _invalid("discount", "is only for kind 'discount'")
    elif kind == "discount":
        _whole("discount", discount, 1, 99)
        if amount is not None:
            raise _invalid("amount", "is only for kind 'amount'")
    else:
        raise _invalid("kind", f"must be 'amount' or 'discount', got {kind!r}")
    _whole("threshold", threshold, 0)
    if valid_days is not None and (valid_from is not None or valid_until is not None):
        raise _invalid("valid_days", "excludes valid_from/valid_until: give one validity style")
    if valid_days is not None:
        _whole("valid_days", valid_days, 0)
    elif valid_until is None:
        raise _invalid("valid_until", "(fixed dates) or valid_days (days after issue) is required")
    else:
        _whole("valid_until", valid_until, now + 1)
        if valid_from is not None and _whole("valid_from", valid_from, 0) >= valid_until:
            raise _invalid("valid_from", "must be before valid_until")
    _whole("per_customer_limit", per_customer_limit, 1)
    _whole("total_stock", total_stock, 0)
    if template_id is None:
        template_id = new_code()[:8]
    elif not _TEMPLATE_ID_SHAPE.fullmatch(template_id):
        raise _invalid("template_id", "must be 1-64 letters, digits, '_', '.' or '-'")

    template = CouponTemplate(
        *keys.coupon_template(corp_id, template_id), template_id=template_id, name=name.strip(), kind=kind,
        amount=amount, discount=discount, threshold=threshold, valid_days=valid_days,
        valid_from=valid_from, valid_until=valid_until, per_customer_limit=per_customer_limit,
        total_stock=total_stock, created_at=now,
        GSI1PK=keys.coupon_templates(corp_id), GSI1SK=keys.coupon_template_sk(now, template_id))
    stock_row = CouponStock(*keys.coupon_stock(corp_id, template_id), template_id=template_id,
                            remaining=total_stock, issued=0)
    try:
        with TransactWrite(connection=once.connection()) as tx:
            tx.save(template, condition=CouponTemplate.PK.does_not_exist())
            tx.save(stock_row, condition=CouponStock.PK.does_not_exist())
    except TransactWriteError as err:
        if any(r is not None and r.code == _FAILED for r in err.cancellation_reasons or []):
            raise CouponError("template_exists", f"template_id {template_id} already exists") from err
        raise
    return template


def get_template(corp_id: str, template_id: str) -> CouponTemplate:
    try:
        return CouponTemplate.get(*keys.coupon_template(corp_id, template_id), consistent_read=True)
    except CouponTemplate.DoesNotExist:
        raise CouponError("template_not_found", f"no coupon template {template_id}") from None


_templates: dict[tuple[str, str], CouponTemplate] = {}


def known_template(corp_id: str, template_id: str) -> CouponTemplate:
    """get_template, once per process: a template never changes after it is created."""
    key = (corp_id, template_id)
    if key not in _templates:
        if len(_templates) >= TEMPLATE_CACHE_SIZE:
            _templates.clear()
        _templates[key] = get_template(corp_id, template_id)
    return _templates[key]


def forget_templates() -> None:
    """For tests and the local stack, whose tables start empty again."""
    _templates.clear()


def list_templates(corp_id: str, *, limit: int = 50,
                   cursor: str | None = None) -> tuple[list[CouponTemplate], str | None]:
    """Newest first; pass the returned cursor back for the next page (None: no more)."""
    return paging.page(CouponTemplate.gsi1.query, keys.coupon_templates(corp_id), hash_attr="GSI1PK",
                       limit=limit, cursor=cursor, scan_index_forward=False)


def stock(corp_id: str, template_id: str) -> dict[str, int]:
    try:
        row = CouponStock.get(*keys.coupon_stock(corp_id, template_id), consistent_read=True)
    except CouponStock.DoesNotExist:
        raise CouponError("template_not_found", f"no coupon template {template_id}") from None
    remaining, issued = int(row.remaining), int(row.issued or 0)
    return {"remaining": remaining, "issued": issued, "total": remaining + issued}


# --- issue -----------------------------------------------------------------------------
def _end_of_business_day(ts: float) -> int:
    offset = BUSINESS_UTC_OFFSET_HOURS * 3600
    return (int(ts + offset) // 86400 + 1) * 86400 - 1 - offset


def _source(template_id: str, campaign_id: str | None) -> str:
    return f"campaign:{campaign_id}" if campaign_id else f"template:{template_id}"


def _issued_before(corp_id: str, marker_key: tuple[str, str]) -> Coupon | None:
    try:
        marker = Once.get(*marker_key, consistent_read=True)
    except Once.DoesNotExist:
        return None
    return get_coupon(corp_id, marker.cause or "")


def _failed(reasons: list, position: int) -> bool:
    return len(reasons) > position and reasons[position] is not None and reasons[position].code == _FAILED


def _retryable(reasons: list) -> bool:
    return any(r is not None and r.code in _RETRYABLE for r in reasons)


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.01 * 2 ** attempt))


def issue(corp_id: str, template_id: str, external_userid: str, *, occasion: str,
          campaign_id: str | None = None, staff_userid: str | None = None, store_id: str | None = None,
          now: float | None = None, record: Callable[[str], Write] | None = None) -> IssueResult:
    """Issue one coupon, exactly once per (campaign or template, customer, occasion).

    `record(code)` is a write made in the same transaction (the welcome's claim holding the
    code): the coupon exists if and only if the record does; if the record's condition fails,
    nothing is issued and the status is `unrecorded`."""
    if not external_userid or not occasion:
        raise CouponError("invalid_request", "external_userid and occasion are required")
    now = int(time.time() if now is None else now)
    try:
        template = known_template(corp_id, template_id)
    except CouponError:
        return IssueResult("template_not_found")
    marker_key = keys.coupon_issued(corp_id, external_userid, _source(template_id, campaign_id), occasion)
    if template.valid_until is not None and template.valid_until < now:
        # A retry that comes after the end date still gets the coupon it was given.
        earlier = _issued_before(corp_id, marker_key)
        return IssueResult("already_issued", earlier) if earlier else IssueResult("template_expired")

    if template.valid_days is not None:
        valid_from, valid_until = now, _end_of_business_day(now + template.valid_days * 86400)
    else:
        valid_from, valid_until = int(template.valid_from or now), int(template.valid_until)
    stock_key = keys.coupon_stock(corp_id, template_id)
    claims_key = keys.coupon_claims(corp_id, external_userid, template_id)

    for attempt in range(ISSUE_ATTEMPTS):
        code = new_code()
        coupon = Coupon(
            *keys.coupon(corp_id, code), code=code, template_id=template_id, campaign_id=campaign_id,
            external_userid=external_userid, occasion=occasion, kind=template.kind, amount=template.amount,
            discount=template.discount, threshold=template.threshold, status="issued", issued_at=now,
            valid_from=valid_from, valid_until=valid_until, staff_userid=staff_userid, store_id=store_id,
            GSI1PK=keys.coupons_of_customer(corp_id, external_userid),
            GSI1SK=keys.coupon_of_customer_sk(now, code))
        marker = Once(*marker_key, effect="coupon_issue", done_at=now, cause=code,
                      expires_at=now + once.ONCE_TTL_SECONDS)
        try:
            with TransactWrite(connection=once.connection()) as tx:
                tx.save(marker, condition=Once.PK.does_not_exist())
                tx.save(coupon, condition=Coupon.PK.does_not_exist())
                tx.update(CouponStock(*stock_key), actions=[CouponStock.remaining.add(-1),
                                                            CouponStock.issued.add(1)],
                          condition=CouponStock.remaining > 0)
                tx.update(CouponClaims(*claims_key),
                          actions=[CouponClaims.count.add(1), CouponClaims.entity.set(CouponClaims),
                                   CouponClaims.template_id.set(template_id),
                                   CouponClaims.external_userid.set(external_userid)],
                          condition=CouponClaims.count.does_not_exist()
                          | (CouponClaims.count < int(template.per_customer_limit)))
                if record is not None:
                    record(code)(tx)
            return IssueResult("issued", coupon)
        except TransactWriteError as err:
            reasons = err.cancellation_reasons or []
            if _failed(reasons, _RECORD):
                return IssueResult("unrecorded")
            if _failed(reasons, _MARKER):
                return IssueResult("already_issued", _issued_before(corp_id, marker_key))
            if _failed(reasons, _STOCK):
                return IssueResult("out_of_stock")
            if _failed(reasons, _CLAIMS):
                return IssueResult("limit_reached")
            if _failed(reasons, _COUPON):
                continue  # 80 random bits met an existing code: draw another
            if not _retryable(reasons) or attempt == ISSUE_ATTEMPTS - 1:
                raise
            _backoff(attempt)
    raise RuntimeError("no free coupon code after repeated draws")


# --- lookups ---------------------------------------------------------------------------
def get_coupon(corp_id: str, code: str) -> Coupon:
    stored = normalize_code(code)
    if stored is None:
        raise CouponError("unknown_code", "no such coupon code")
    try:
        return Coupon.get(*keys.coupon(corp_id, stored), consistent_read=True)
    except Coupon.DoesNotExist:
        # The corp is part of the key: another corp's code is simply not found here.
        raise CouponError("unknown_code", "no such coupon code") from None


def customer_coupons(corp_id: str, external_userid: str, limit: int = 50) -> list[Coupon]:
    """A customer's coupons, newest first."""
    return list(Coupon.gsi1.query(keys.coupons_of_customer(corp_id, external_userid),
                                  scan_index_forward=False, limit=limit))


# --- redemption ------------------------------------------------------------------------
def _settled(coupon: Coupon, request_id: str, store_id: str, staff_userid: str, now: int) -> bool:
    """True if this request (from this till) redeemed the coupon before; raises why it cannot be
    redeemed; False: go on."""
    if coupon.status == "redeemed":
        if coupon.redemption_request != request_id:
            raise CouponError("already_redeemed",
                              f"coupon already redeemed at {readable(coupon.redeemed_at or 0)}")
        if (coupon.redeemed_store_id, coupon.redeemed_by) != (store_id, staff_userid):
            raise CouponError("request_id_reused", f"request_id {request_id} redeemed this coupon at another till "
                              f"(store {coupon.redeemed_store_id}); a till cannot reuse another till's request",
                              "request_id")
        return True
    if coupon.valid_until < now:
        raise CouponError("expired", f"coupon expired at {readable(coupon.valid_until)}")
    if coupon.valid_from > now:
        raise CouponError("not_yet_valid", f"coupon is valid from {readable(coupon.valid_from)}")
    return False


def redeem(corp_id: str, code: str, *, store_id: str, staff_userid: str, request_id: str,
           now: float | None = None) -> Coupon:
    """Redeem at a till; the same request_id again from the same till returns the redeemed coupon."""
    if not store_id or not staff_userid or not request_id:
        raise CouponError("invalid_request", "store_id, staff_userid and request_id are required")
    now = int(time.time() if now is None else now)
    attempt = 0
    while True:
        coupon = get_coupon(corp_id, code)
        if _settled(coupon, request_id, store_id, staff_userid, now):
            return coupon
        try:
            _redeem_write(corp_id, coupon, store_id, staff_userid, request_id, now)
            return coupon
        except TransactWriteError as err:
            reasons = err.cancellation_reasons or []
            if _failed(reasons, 0):
                # Another till, or an earlier try of this request, got there first: a fresh read says which.
                fresh = get_coupon(corp_id, code)
                if _settled(fresh, request_id, store_id, staff_userid, now):
                    return fresh
                raise
            attempt += 1
            if not _retryable(reasons) or attempt == REDEEM_ATTEMPTS:
                raise
            _backoff(attempt)


def _redeem_write(corp_id: str, coupon: Coupon, store_id: str, staff_userid: str, request_id: str,
                  now: int) -> None:
    """issued -> redeemed, conditionally; updates `coupon`."""
    with TransactWrite(connection=once.connection()) as tx:
        tx.update(Coupon(*keys.coupon(corp_id, coupon.code)),
                  actions=[Coupon.status.set("redeemed"), Coupon.redeemed_at.set(now),
                           Coupon.redeemed_store_id.set(store_id), Coupon.redeemed_by.set(staff_userid),
                           Coupon.redemption_request.set(request_id)],
                  condition=(Coupon.status == "issued") & (Coupon.valid_from <= now)
                  & (Coupon.valid_until >= now))
    coupon.status, coupon.redeemed_at, coupon.redeemed_store_id = "redeemed", now, store_id
    coupon.redeemed_by, coupon.redemption_request = staff_userid, request_id
