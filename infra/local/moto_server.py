"""moto's threaded server, with DynamoDB requests applied one at a time.

DynamoDB applies each request atomically; moto's in-memory backend does not lock, so two
threads' conditional writes could both pass their check, and a transaction's rollback
snapshot can race another write ("dictionary changed size during iteration"). Every
DynamoDB request therefore takes one lock. SQS and the rest stay concurrent: a long-poll
ReceiveMessage must not hold anyone up.
"""
from __future__ import annotations

import copy
import threading

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.server import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    ThreadedMotoServer,
    create_backend_app,
)
from werkzeug.serving import make_server


class SerializedDynamoDB:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self.lock:
                # Build the whole response inside the lock; werkzeug may iterate it later.
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


class LocalMotoServer(ThreadedMotoServer):
    def _server_entry(self) -> None:
        install_fast_transactions()
        app = SerializedDynamoDB(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class _TableSnapshotSkipper:
    """Stands in for `copy` inside moto's DynamoDB backend: a Table is not deep-copied.

    moto takes a deep copy of the whole table for every item of a TransactWriteItems call,
    so to roll back a cancelled transaction; with a few thousand items that makes each
    transaction cost tens of milliseconds and the local stack crawl. `fast_transactions`
    snapshots only the items the transaction touches and restores those instead.
    """

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def _key_of(backend, op_type: str, op: dict) -> tuple[str, dict]:
    table = backend.get_table(op["TableName"])
    if op_type != "Put":
        return op["TableName"], op["Key"]
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return op["TableName"], key


def install_fast_transactions() -> None:
    """Patch moto's TransactWriteItems to snapshot only the touched items (idempotent).

    Needs requests to the backend to be serialized (they are, see SerializedDynamoDB, and
    the integration tests' fixture), which DynamoDB's own atomicity makes correct anyway.
    A cancelled transaction also leaves no stream record behind, as on DynamoDB: moto applies
    the items one by one (each adding a record) before it finds a failed condition, and the
    restore adds more.
    """
    if getattr(DynamoDBBackend.transact_write_items, "_scrm_fast", False):
        return
    original = DynamoDBBackend.transact_write_items
    dynamodb_models.copy = _TableSnapshotSkipper()

    def transact_write_items(self, transact_items):
        snapshots = []
        streams = {}
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            try:
                table_name, key = _key_of(self, op_type, op)
                current = self.get_item(table_name, key)
            except Exception:  # noqa: BLE001 - moto itself reports what is wrong with the item
                continue
            snapshots.append((table_name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
            shard = self.get_table(table_name).stream_shard
            if shard is not None:
                streams.setdefault(table_name, (shard, len(shard.items)))
        try:
            return original(self, transact_items)
        except Exception:
            for table_name, key, attributes in reversed(snapshots):
                if attributes is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attributes)
            for shard, length in streams.values():
                del shard.items[length:]
            raise

    transact_write_items._scrm_fast = True
    DynamoDBBackend.transact_write_items = transact_write_items
