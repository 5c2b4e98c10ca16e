"""The new-customer coupon, issued in one transaction with the welcome's claim.

scrm.domain.coupons.issue writes the claim (holding the code) as the transaction's `record`:
claim and coupon exist together or not at all, so a second worker either finds the claim
(and stops) or issues nothing, and the code is on the claim before the welcome is sent. When
no coupon is issued (out of stock, the per-customer limit, an error) the claim is written on
its own with the reason, and the welcome goes out without a coupon. A transaction that keeps
conflicting (the stock is shared by every customer of the campaign) costs the coupon, never
the welcome.
"""
from __future__ import annotations

from scrm.domain import coupons
from scrm.domain.welcome import claim
from scrm.domain.welcome.content import Choice
from scrm.platform.observability import log
from scrm.store.models import Welcome

OCCASION = "welcome"  # one coupon per campaign and customer, however often they add staff


def claim_with_coupon(corp_id: str, row: Welcome, choice: Choice) -> bool:
    """Claim the welcome and issue its coupon (row.coupon_code / coupon_reason say how it went);
    False if the welcome was claimed before."""
    try:
        result = coupons.issue(corp_id, choice.template_id, row.external_userid, occasion=OCCASION,
                               campaign_id=choice.campaign_id, staff_userid=row.userid, store_id=choice.store_id,
                               record=lambda code: claim.write(row, code))
    except Exception as err:  # noqa: BLE001 - whatever fails, the welcome still goes out in time
        log.warning("coupon not issued with welcome", extra={"reason": type(err).__name__})
        row.coupon_reason = f"error:{type(err).__name__}"
        return claim.put(row)
    if result.status == "unrecorded":
        return False
    if result.status == "issued":
        row.coupon_code, row.coupon_reason = result.code, "issued"
        return True
    # An earlier welcome of this campaign already gave the customer its coupon: say it again.
    row.coupon_code, row.coupon_reason = result.code, result.status
    return claim.put(row)
