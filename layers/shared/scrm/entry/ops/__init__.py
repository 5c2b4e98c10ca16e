"""The ops API: what store and HQ operators call (contact ways, campaigns, coupon templates,
customers, redemption at the till, stores and staff, daily figures and rankings).

`scrm.entry.ops.api.app` is the one resolver; each area is a Router in its own module, all mounted
under /ops. The caller's corp comes only from the verified token (`auth`), input is checked
at the edge (`inputs`), and every exception becomes an HTTP answer in one place (`errors`).
docs/openapi.yaml describes every route.
"""
