"""moto's threaded server, with DynamoDB requests applied one at a time.

DynamoDB applies each request atomically; moto's in-memory backend does not lock, so two
threads' conditional writes could both pass their check, and a transaction's rollback
snapshot can race another write ("dictionary changed size during iteration"). Every
DynamoDB request therefore takes one lock. SQS and the rest stay concurrent: a long-poll
ReceiveMessage must not hold anyone up.
"""
from __future__ import annotations

import threading

from moto.server import DomainDispatcherApplication, MotoRequestHandler, ThreadedMotoServer, create_backend_app
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
        app = SerializedDynamoDB(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()
