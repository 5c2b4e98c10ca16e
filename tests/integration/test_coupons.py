"""Coupons against moto: exactly-once issue, no overselling, idempotent redemption at the till."""
from __future__ import annotations

import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from scrm.domain import coupons
from scrm.domain.coupons import CouponError
from scrm.platform.errors import Invalid
from scrm.store import keys, once
from scrm.store.models import Coupon, CouponStock

CORP = "wwcoupons"
OTHER_CORP = "wwothercorp"
NOW = 1795600000
DAY = 86400
CODE_SHAPE = re.compile(r"[0-9A-HJKMNP-TV-Z]{16}")


def template(corp_id: str = CORP, **terms) -> str:
    fields = dict(name="20 off 100", kind="amount", amount=2000, threshold=10000, valid_days=7,
                  per_customer_limit=1, total_stock=100, now=NOW)
    fields.update(terms)
    return coupons.create_template(corp_id, **fields).template_id


def all_at_once(calls: list) -> list:
    """Run the calls on their own threads, released together; results (or raised errors) in order."""
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        try:
            return call()
        except CouponError as err:
            return err

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


# --- templates ---------------------------------------------------------------------------
@pytest.mark.parametrize("terms, field", [
    (dict(kind="gift"), "kind"),
    (dict(amount=0), "amount"),
    (dict(amount=None), "amount"),
    (dict(kind="discount", amount=None, discount=100), "discount"),
    (dict(kind="discount", amount=None, discount=0), "discount"),
    (dict(threshold=-1), "threshold"),
    (dict(valid_days=7, valid_until=NOW + DAY), "valid_days"),
    (dict(valid_days=None), "valid_until"),
    (dict(valid_days=None, valid_until=NOW - 1), "valid_until"),
    (dict(valid_days=None, valid_from=NOW + 2 * DAY, valid_until=NOW + DAY), "valid_from"),
    (dict(per_customer_limit=0), "per_customer_limit"),
    (dict(total_stock=-1), "total_stock"),
    (dict(name=" "), "name"),
    (dict(template_id="a#b"), "template_id"),
])
def test_given_invalid_terms_when_creating_a_template_then_the_error_names_the_field(aws, terms, field):
    with pytest.raises(CouponError) as raised:
        template(**terms)

    assert (raised.value.reason, raised.value.status, raised.value.field) == ("invalid_template", 422, field)
    assert str(raised.value).startswith(field)
    assert coupons.list_templates(CORP) == ([], None)


def test_given_templates_when_listed_then_newest_first_page_by_page_with_full_stock(aws):
    for n, template_id in enumerate(["t-old", "t-mid", "t-new"]):
        coupons.create_template(CORP, name=template_id, kind="discount", discount=85, valid_days=3,
                                total_stock=10 + n, template_id=template_id, now=NOW + n)

    first, cursor = coupons.list_templates(CORP, limit=2)
    rest, _ = coupons.list_templates(CORP, limit=2, cursor=cursor)

    assert [t.template_id for t in first + rest] == ["t-new", "t-mid", "t-old"]
    assert coupons.get_template(CORP, "t-old").discount == 85
    assert coupons.stock(CORP, "t-new") == {"remaining": 12, "issued": 0, "total": 12}
    with pytest.raises(CouponError) as raised:
        coupons.create_template(CORP, name="again", kind="amount", amount=1, valid_days=1, total_stock=1,
                                template_id="t-old", now=NOW)
    assert raised.value.reason == "template_exists"
    with pytest.raises(Invalid):
        coupons.list_templates(OTHER_CORP, cursor=cursor)
    with pytest.raises(CouponError) as raised:
        coupons.get_template(OTHER_CORP, "t-old")
    assert (raised.value.reason, raised.value.status) == ("template_not_found", 404)


# --- issue ---------------------------------------------------------------------------------
def test_given_stock_when_a_coupon_is_issued_then_its_code_is_typable_and_the_stock_drops(aws):
    template_id = template(total_stock=5)

    result = coupons.issue(CORP, template_id, "wmCust1", occasion="welcome", staff_userid="alice",
                           store_id="s1", now=NOW)

    assert result.status == "issued" and CODE_SHAPE.fullmatch(result.code)
    assert coupons.stock(CORP, template_id) == {"remaining": 4, "issued": 1, "total": 5}
    end_of_day = datetime.fromtimestamp(NOW, timezone(timedelta(hours=8))).replace(
        hour=23, minute=59, second=59) + timedelta(days=7)
    coupon = result.coupon
    assert (coupon.valid_from, coupon.valid_until) == (NOW, int(end_of_day.timestamp()))
    assert (coupon.kind, coupon.amount, coupon.threshold, coupon.status) == ("amount", 2000, 10000, "issued")
    typed = "-".join(result.code[i:i + 4] for i in range(0, 16, 4)).lower()
    assert coupons.get_coupon(CORP, typed).code == result.code
    assert [c.code for c in coupons.customer_coupons(CORP, "wmCust1")] == [result.code]
    assert (coupon.staff_userid, coupon.store_id) == ("alice", "s1")  # what the daily figures credit


def test_given_the_typing_at_a_till_when_a_code_is_normalized_then_aliases_and_grouping_are_undone():
    assert coupons.normalize_code("abcd-efgh ijkl mnoo") == "ABCDEFGH1JK1MN00"
    assert coupons.normalize_code("ABCD") is None
    assert coupons.normalize_code("ABCDEFGHJKMNPQR#") is None
    assert len({coupons.new_code() for _ in range(10000)}) == 10000


def test_given_one_campaign_customer_and_occasion_when_issued_five_times_then_one_coupon_with_one_code(aws):
    template_id = template(per_customer_limit=3)

    results = [coupons.issue(CORP, template_id, "wmCust1", occasion="welcome:e1", campaign_id="c1",
                             staff_userid="alice", now=NOW + n) for n in range(5)]

    assert [r.status for r in results] == ["issued"] + ["already_issued"] * 4
    assert len({r.code for r in results}) == 1
    assert len(coupons.customer_coupons(CORP, "wmCust1")) == 1
    assert coupons.stock(CORP, template_id)["issued"] == 1


def test_given_one_occasion_when_retried_20_times_at_once_then_every_retry_gets_the_same_code(aws):
    template_id = template(per_customer_limit=5)

    results = all_at_once([lambda: coupons.issue(CORP, template_id, "wmCust1", occasion="o", now=NOW)] * 20)

    assert Counter(r.status for r in results) == {"issued": 1, "already_issued": 19}
    assert len({r.code for r in results}) == 1
    assert coupons.stock(CORP, template_id)["issued"] == 1


def test_given_a_limit_of_two_when_a_customer_comes_on_three_occasions_then_the_third_is_limit_reached(aws):
    template_id = template(per_customer_limit=2)

    results = [coupons.issue(CORP, template_id, "wmCust1", occasion=f"visit-{n}", now=NOW) for n in range(3)]

    assert [r.status for r in results] == ["issued", "issued", "limit_reached"]
    assert results[0].code != results[1].code and results[2].coupon is None
    assert coupons.stock(CORP, template_id) == {"remaining": 98, "issued": 2, "total": 100}
    # A retry of the refused occasion is refused the same way.
    assert coupons.issue(CORP, template_id, "wmCust1", occasion="visit-2", now=NOW).status == "limit_reached"


def test_given_a_fixed_end_date_when_issued_after_it_then_template_expired_but_a_retry_keeps_its_coupon(aws):
    template_id = template(valid_days=None, valid_from=NOW + DAY, valid_until=NOW + 10 * DAY)
    first = coupons.issue(CORP, template_id, "wmCust1", occasion="o", now=NOW)

    late = coupons.issue(CORP, template_id, "wmCust2", occasion="o", now=NOW + 11 * DAY)
    retry = coupons.issue(CORP, template_id, "wmCust1", occasion="o", now=NOW + 11 * DAY)

    assert (first.coupon.valid_from, first.coupon.valid_until) == (NOW + DAY, NOW + 10 * DAY)
    assert (late.status, late.coupon) == ("template_expired", None)
    assert (retry.status, retry.code) == ("already_issued", first.code)
    assert coupons.issue(CORP, "nope", "wmCust1", occasion="o", now=NOW).status == "template_not_found"


def test_given_an_existing_code_when_drawn_again_then_the_issue_retries_with_a_new_code(aws, monkeypatch):
    template_id = template()
    taken = coupons.issue(CORP, template_id, "wmCust1", occasion="o", now=NOW).code
    draws = iter([taken, "0123456789ABCDEF"])
    monkeypatch.setattr(coupons, "new_code", lambda: next(draws))

    result = coupons.issue(CORP, template_id, "wmCust2", occasion="o", now=NOW)

    assert (result.status, result.code) == ("issued", "0123456789ABCDEF")
    assert coupons.get_coupon(CORP, taken).external_userid == "wmCust1"
    assert coupons.stock(CORP, template_id)["issued"] == 2


def test_given_a_transaction_conflict_when_issuing_then_it_is_retried_and_issued_once(aws):
    template_id = template()
    events = once.connection().client.meta.events
    conflicts = iter([True, True])

    def conflict(**_):  # DynamoDB cancels a transaction that raced another on the same item
        if next(conflicts, False):
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}, {"Code": "None"}, {"Code": "None"}]
            return (type("Http", (), {"status_code": 400})(),
                    {"Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                     "CancellationReasons": reasons, "ResponseMetadata": {"HTTPStatusCode": 400}})
        return None

    events.register_first("before-call.dynamodb.TransactWriteItems", conflict)
    try:
        result = coupons.issue(CORP, template_id, "wmCust1", occasion="o", now=NOW)
    finally:
        events.unregister("before-call.dynamodb.TransactWriteItems", conflict)

    assert next(conflicts, None) is None, "both conflicts were injected"
    assert result.status == "issued"
    assert coupons.stock(CORP, template_id)["issued"] == 1


def test_given_stock_of_100_when_200_customers_claim_at_once_then_exactly_100_coupons(aws):
    template_id = template(total_stock=100)

    results = all_at_once([
        (lambda n=n: coupons.issue(CORP, template_id, f"wmCust{n}", occasion="launch", store_id="s1", now=NOW))
        for n in range(200)])

    assert Counter(r.status for r in results) == {"issued": 100, "out_of_stock": 100}
    assert len({r.code for r in results if r.code}) == 100
    assert coupons.stock(CORP, template_id) == {"remaining": 0, "issued": 100, "total": 100}
    assert CouponStock.get(*keys.coupon_stock(CORP, template_id)).remaining == 0
    assert sum(1 for _ in Coupon.scan(Coupon.template_id == template_id)) == 100


def test_given_a_limit_of_one_when_one_customer_claims_20_times_at_once_then_exactly_one_coupon(aws):
    template_id = template(per_customer_limit=1)

    results = all_at_once([
        (lambda n=n: coupons.issue(CORP, template_id, "wmCust1", occasion=f"tap-{n}", now=NOW))
        for n in range(20)])

    assert Counter(r.status for r in results) == {"issued": 1, "limit_reached": 19}
    assert coupons.stock(CORP, template_id) == {"remaining": 99, "issued": 1, "total": 100}


# --- redemption ----------------------------------------------------------------------------
def issued_code(corp_id: str = CORP, **terms) -> str:
    template_id = template(corp_id, **terms)
    return coupons.issue(corp_id, template_id, "wmCust1", occasion="o", staff_userid="alice", store_id="s1",
                         now=NOW).code


def test_given_an_issued_coupon_when_redeemed_then_the_till_store_and_the_bringing_staff_are_credited(aws):
    code = issued_code()

    coupon = coupons.redeem(CORP, code, store_id="s2", staff_userid="bob", request_id="pos-1", now=NOW + 60)

    assert (coupon.status, coupon.redeemed_store_id, coupon.redeemed_by, coupon.redeemed_at) \
        == ("redeemed", "s2", "bob", NOW + 60)
    assert coupons.get_coupon(CORP, code).status == "redeemed"
    # what the daily figures credit (tests/integration/test_stats.py): the till's store, the bringing staff
    assert (coupon.redeemed_store_id, coupon.staff_userid) == ("s2", "alice")


def test_given_a_redeemed_coupon_when_the_same_request_comes_again_then_it_succeeds_and_counts_once(aws):
    code = issued_code()

    first = coupons.redeem(CORP, code, store_id="s2", staff_userid="bob", request_id="pos-1", now=NOW + 60)
    again = coupons.redeem(CORP, code, store_id="s2", staff_userid="bob", request_id="pos-1", now=NOW + 90)

    assert (first.code, first.redeemed_at) == (again.code, again.redeemed_at) == (code, NOW + 60)
    assert coupons.get_coupon(CORP, code).redemption_request == "pos-1"
    with pytest.raises(CouponError) as raised:
        coupons.redeem(CORP, code, store_id="s3", staff_userid="carol", request_id="pos-2", now=NOW + 90)
    assert (raised.value.reason, raised.value.status) == ("already_redeemed", 409)


def test_given_one_code_when_two_tills_redeem_it_at_once_then_exactly_one_succeeds(aws):
    codes = [issued_code(template_id=f"t{n}") for n in range(10)]

    for code in codes:
        outcomes = all_at_once([
            lambda till=till: coupons.redeem(CORP, code, store_id=f"s{till}", staff_userid="bob",
                                             request_id=f"till-{till}-{code}", now=NOW + 60)
            for till in (1, 2)])

        assert sorted(type(o).__name__ for o in outcomes) == ["Coupon", "CouponError"]
        assert next(o for o in outcomes if isinstance(o, CouponError)).reason == "already_redeemed"
    assert sum(1 for c in Coupon.scan() if c.status == "redeemed") == 10


def test_given_an_expired_coupon_when_redeemed_then_expired(aws):
    code = issued_code(valid_days=0)
    end = coupons.get_coupon(CORP, code).valid_until

    with pytest.raises(CouponError) as raised:
        coupons.redeem(CORP, code, store_id="s1", staff_userid="bob", request_id="r", now=end + 1)

    assert (raised.value.reason, raised.value.status) == ("expired", 410)
    assert coupons.redeem(CORP, code, store_id="s1", staff_userid="bob", request_id="r", now=end).status \
        == "redeemed"


@pytest.mark.parametrize("typed", ["ZZZZ-ZZZZ-ZZZZ-ZZZZ", "not a code", ""],
                         ids=["well-formed", "garbage", "empty"])
def test_given_an_unknown_code_when_redeemed_then_unknown_code(aws, typed):
    issued_code()

    with pytest.raises(CouponError) as raised:
        coupons.redeem(CORP, typed, store_id="s1", staff_userid="bob", request_id="r", now=NOW)

    assert (raised.value.reason, raised.value.status) == ("unknown_code", 404)


def test_given_another_corps_code_when_redeemed_then_unknown_code_and_the_coupon_is_untouched(aws):
    code = issued_code(OTHER_CORP)

    with pytest.raises(CouponError) as raised:
        coupons.redeem(CORP, code, store_id="s1", staff_userid="bob", request_id="r", now=NOW)

    assert raised.value.reason == "unknown_code"
    assert coupons.get_coupon(OTHER_CORP, code).status == "issued"


def test_given_fixed_future_dates_when_redeemed_early_then_not_yet_valid(aws):
    code = issued_code(valid_days=None, valid_from=NOW + DAY, valid_until=NOW + 10 * DAY)

    with pytest.raises(CouponError) as raised:
        coupons.redeem(CORP, code, store_id="s1", staff_userid="bob", request_id="r", now=NOW + DAY - 1)

    assert (raised.value.reason, raised.value.status) == ("not_yet_valid", 409)
    assert coupons.redeem(CORP, code, store_id="s1", staff_userid="bob", request_id="r", now=NOW + DAY).status \
        == "redeemed"
