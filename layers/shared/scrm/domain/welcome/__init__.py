"""The welcome lane: claim → content → coupon → send → record, inside WeCom's 20 s."""
