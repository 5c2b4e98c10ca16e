"""Schemathesis hooks for the ops API's fuzz run (loaded through SCHEMATHESIS_HOOKS).

A cursor is valid only as the listing issued it; the description cannot spell out which
strings those are, so a generated one is refused (400 `cursor`) however well it matches the
pattern. Requests meant to be valid are sent without one; requests meant to be invalid keep
theirs. Bad cursors have tests of their own (tests/integration/test_ops_edge.py).
"""
import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and case.query and "cursor" in case.query:
        del case.query["cursor"]
