"""What DynamoDB requests cost, measured where they arrive: inside the local moto server.

Counting on the server side sees every function's requests whichever process makes them.
For each request the meter records its operation and the kind of item it is about (the
item's `entity`, or for a query the index and the partition's kind), and for each write the
write units DynamoDB would bill, from the items' sizes (moto reports none of its own):

* an item written costs ceil(max(size before, size after) / 1 KB), at least 1; inside a
  transaction twice that; a write whose condition fails still costs its units;
* each global index the item is (or was) in costs the same again for that index, twice
  when the write changes the item's key in it (a delete and a put).

Requests of the functions that work off the table's stream (OFF_THE_PATH) are not metered:
they happen after the fact, on no customer's path. `GET /_scrm/dynamodb-meter` on the moto
endpoint answers the totals so far as JSON:
{"requests": {"<Operation> <kind>": n}, "write_units": x, "index_write_units": y}.
"""
from __future__ import annotations

import io
import json
import math
import re
import threading
from collections import Counter
from typing import Any

import requests
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

PATH = "/_scrm/dynamodb-meter"
KB = 1024
INDEXES = (("GSI1PK", "GSI1SK"), ("GSI2PK", "GSI2SK"))
_REGION = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/dynamodb/")
_CALLER = re.compile(r"Credential=([^/]+)/")
# Functions that work from the table's stream after the fact, never on a customer's path: the
# local stack signs each function's requests with its logical id as the access key id.
OFF_THE_PATH = frozenset({"StatsFunction"})
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def _units(size: int) -> int:
    return max(1, math.ceil(size / KB))


def _kind_of_key(pk: str) -> str:
    """A partition's kind from its key (CORP#<corp>#<KIND>#...), for queries."""
    parts = pk.split("#")
    return parts[2] if len(parts) > 2 else parts[0]


class DynamoDBMeter:
    """WSGI middleware in front of moto; must run where DynamoDB requests are serialized."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests: Counter = Counter()
        self.write_units = 0
        self.index_write_units = 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == PATH:
            with self._lock:
                body = json.dumps({"requests": dict(self.requests), "write_units": self.write_units,
                                   "index_write_units": self.index_write_units}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        caller = _CALLER.search(environ.get("HTTP_AUTHORIZATION", ""))
        if not target.startswith("DynamoDB_") or (caller and caller.group(1) in OFF_THE_PATH):
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)
        operation = target.split(".", 1)[1]
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            return self.app(environ, start_response)
        backend = self._backend(environ)
        writes = self._writes(operation, request)
        before = [self._item(backend, table, key) for table, key, _ in writes]
        result = list(self.app(environ, start_response))
        after = [self._item(backend, table, key) for table, key, _ in writes]
        with self._lock:
            self.requests[f"{operation} {self._kind(operation, request, before, after, result)}"] += 1
            for (_, _, factor), old, new in zip(writes, before, after):
                self._charge(old, new, factor)
        return result

    # --- what a request touches -----------------------------------------------------------
    @staticmethod
    def _backend(environ):
        match = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        return dynamodb_backends[DEFAULT_ACCOUNT_ID][match.group(1) if match else "us-east-1"]

    @staticmethod
    def _writes(operation: str, request: dict) -> list[tuple[str, dict, int]]:
        """(table, key, factor) of each item a write request writes; factor 2 in a transaction."""
        if operation not in _WRITES:
            return []
        if operation == "TransactWriteItems":
            found = []
            for entry in request.get("TransactItems", []):
                kind, op = next(iter(entry.items()))
                if kind != "ConditionCheck":
                    found.append((op["TableName"], op.get("Key") or _key(op["Item"]), 2))
            return found
        if operation == "BatchWriteItem":
            return [(table, _key(r["PutRequest"]["Item"]) if "PutRequest" in r else r["DeleteRequest"]["Key"], 1)
                    for table, batch in request.get("RequestItems", {}).items() for r in batch]
        return [(request["TableName"], request.get("Key") or _key(request["Item"]), 1)]

    @staticmethod
    def _item(backend, table: str, key: dict) -> dict | None:
        try:
            item = backend.get_item(table, key)
        except Exception:  # noqa: BLE001 - moto answers the request itself with what is wrong
            return None
        return None if item is None else {"size": item.size(), "attrs": item.to_json()["Attributes"]}

    @staticmethod
    def _kind(operation: str, request: dict, before: list, after: list, response: list) -> str:
        if operation in _WRITES:
            kinds = [_entity(new or old) for old, new in zip(before, after)]
            return "+".join(kinds) if kinds else "?"
        if operation == "GetItem":
            return _entity({"attrs": json.loads(b"".join(response) or b"{}").get("Item") or {}})
        if operation == "BatchGetItem":
            keys = [k for t in request.get("RequestItems", {}).values() for k in t.get("Keys", [])]
            return "+".join(sorted({_kind_of_key(k["PK"]["S"]) for k in keys if "PK" in k})) or "?"
        if operation == "Query":
            values = request.get("ExpressionAttributeValues") or {}
            pk = next((v["S"] for v in values.values() if "S" in v and v["S"].startswith("CORP#")), "")
            return f"{request.get('IndexName', 'table')}:{_kind_of_key(pk) if pk else '?'}"
        return request.get("TableName", "?")

    # --- what it costs ---------------------------------------------------------------------
    def _charge(self, old: dict | None, new: dict | None, factor: int) -> None:
        sizes = [i["size"] for i in (old, new) if i is not None]
        self.write_units += factor * _units(max(sizes, default=0))
        for pk, sk in INDEXES:
            was = _index_key(old, pk, sk)
            now = _index_key(new, pk, sk)
            if was is None and now is None:
                continue
            if was is not None and now is not None and was != now:
                self.index_write_units += _units(old["size"]) + _units(new["size"])
            else:
                self.index_write_units += _units((new or old)["size"])


def _key(item: dict) -> dict[str, Any]:
    """The key of an item of the template's table (PK, SK)."""
    return {name: item[name] for name in ("PK", "SK") if name in item}


def _entity(item: dict | None) -> str:
    attrs = (item or {}).get("attrs") or {}
    return (attrs.get("entity") or {}).get("S", "?")


def _index_key(item: dict | None, pk: str, sk: str) -> tuple | None:
    attrs = (item or {}).get("attrs") or {}
    if pk not in attrs or sk not in attrs:
        return None
    return json.dumps(attrs[pk]), json.dumps(attrs[sk])


def read(endpoint: str) -> dict:
    """The meter's totals from a running local moto server."""
    return requests.get(f"{endpoint}{PATH}", timeout=10).json()
