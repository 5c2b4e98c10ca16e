"""Default welcomes: one for the corp and one per store, for a customer whose contact way and
campaign have none (a phone search or a card share brings no `state` at all).

A store's default wins over the corp's. Defaults never carry a coupon (scrm.domain.welcome.spec).
They live in one partition of the corp (keys.welcome_defaults), one item each, so that
10,000 stores with their own text stay well inside DynamoDB's item size, and a welcome reads
the two that can apply with one BatchGetItem.

Setting defaults names what changes: `corp` and each store in `stores` is set (a welcome) or
cleared (null); stores not named keep theirs. One request changes at most MAX_CHANGES
defaults, all or none (one transaction).
"""
from __future__ import annotations

import time
from typing import Any

from pynamodb.transactions import TransactWrite

from scrm.domain.welcome.spec import validate_welcome
from scrm.platform.errors import Invalid
from scrm.store import keys, once, paging, read_cache
from scrm.store.models import Department, WelcomeDefault

MAX_CHANGES = 100  # DynamoDB's limit of items per transaction
STORE_ID_MAX = 10


def for_store(corp_id: str, store_id: str | None) -> tuple[dict, str] | None:
    """(welcome, "store_default" | "corp_default") for a customer of `store_id`, or None."""
    rows = read_cache.cached("welcome_defaults", (corp_id, store_id), lambda: _read(corp_id, store_id))
    for row in rows:
        return row.welcome, f"{row.scope}_default"
    return None


def _read(corp_id: str, store_id: str | None) -> list[WelcomeDefault]:
    wanted = [keys.corp_welcome_default(corp_id)]
    if store_id:
        wanted.insert(0, keys.store_welcome_default(corp_id, store_id))
    found = {row.scope: row for row in WelcomeDefault.batch_get(wanted)}
    return [found[scope] for scope in ("store", "corp") if scope in found]


def _store_ids(corp_id: str, store_ids: list[str]) -> None:
    """Each id must be a store of the corp (as the org sync placed it)."""
    for store_id in store_ids:
        if not (isinstance(store_id, str) and store_id.isdigit() and len(store_id) <= STORE_ID_MAX
                and not store_id.startswith("0")):
            raise Invalid("must be a store id (a department id)", f"stores.{store_id[:STORE_ID_MAX + 1]}")
    placed = {int(row.dept_id): row for row in Department.batch_get(
        [keys.department(corp_id, int(s)) for s in store_ids])}
    for store_id in store_ids:
        row = placed.get(int(store_id))
        if row is None or row.deleted or row.level != "store":
            raise Invalid("not a store of this corp", f"stores.{store_id}")


def set_defaults(corp_id: str, *, now: float | None = None, **given: Any) -> dict:
    """Set or clear the corp's default (`corp`) and stores' defaults (`stores`: id -> welcome or
    None); returns what is now stored for what was named, in the shape given."""
    unknown = set(given) - {"corp", "stores"}
    if unknown:
        raise Invalid("is not a known field", sorted(unknown)[0])
    if not given:
        raise Invalid("names nothing to change", "body")
    stores = given.get("stores") or {}
    if not isinstance(stores, dict):
        raise Invalid("must be an object of store id -> welcome", "stores")
    if not stores and "corp" not in given:
        raise Invalid("names no store", "stores")
    if len(stores) + ("corp" in given) > MAX_CHANGES:
        raise Invalid(f"at most {MAX_CHANGES} defaults per request", "stores")
    changes: dict[tuple[str, str], tuple[str, str | None, dict | None]] = {}
    if "corp" in given:
        changes[keys.corp_welcome_default(corp_id)] = ("corp", None, validate_welcome(
            given["corp"], field="corp", coupon=False))
    for store_id, welcome in stores.items():
        changes[keys.store_welcome_default(corp_id, store_id)] = ("store", store_id, validate_welcome(
            welcome, field=f"stores.{store_id}", coupon=False))
    _store_ids(corp_id, list(stores))
    at = int(time.time() if now is None else now)
    with TransactWrite(connection=once.connection()) as tx:
        for (pk, sk), (scope, store_id, welcome) in changes.items():
            if welcome is None:
                tx.delete(WelcomeDefault(pk, sk))
            else:
                tx.save(WelcomeDefault(pk, sk, scope=scope, store_id=store_id, welcome=welcome, updated_at=at))
    out: dict[str, Any] = {}
    if "corp" in given:
        out["corp"] = changes[keys.corp_welcome_default(corp_id)][2]
    if "stores" in given:
        out["stores"] = {store_id: changes[keys.store_welcome_default(corp_id, store_id)][2] for store_id in stores}
    return out


def get_defaults(corp_id: str, *, limit: int = 50, cursor: str | None = None) -> tuple[dict, str | None]:
    """{"corp": welcome | None, "stores": {store_id: welcome}} (a page of stores) and the next cursor."""
    try:
        corp = WelcomeDefault.get(*keys.corp_welcome_default(corp_id)).welcome
    except WelcomeDefault.DoesNotExist:
        corp = None
    rows, next_cursor = paging.page(WelcomeDefault.query, keys.welcome_defaults(corp_id), limit=limit,
                                    cursor=cursor, range_key_condition=WelcomeDefault.SK.startswith(
                                        keys.STORE_DEFAULT_PREFIX))
    return {"corp": corp, "stores": {row.store_id: row.welcome for row in rows}}, next_cursor
