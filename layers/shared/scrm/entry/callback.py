"""The callback's logic: verify, decrypt, persist, enqueue, answer.

This runs inside WeCom's 5-second window on a cold-start path, so it imports only boto3,
the crypto and the XML parser (no PynamoDB) and makes at most two writes before it
answers, both through scrm.store.inbox: the event row (conditional on its dedupe key) and
one queue message.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from scrm.platform import credentials
from scrm.platform.observability import NAMESPACE, log
from scrm.store import inbox
from scrm.wecom.callback.crypto import (
    CryptoError,
    ReceiveIdError,
    SignatureError,
    WeComCrypto,
)
from scrm.wecom.callback.events import (
    CallbackEvent,
    EventError,
    check_create_time,
    normalize,
)
from scrm.wecom.callback.wxml import MAX_BODY, XmlError, parse_xml


@dataclass
class Answer:
    status: int
    body: str = ""
    reason: str = ""
    event: CallbackEvent | None = None
    duplicate: bool = False
    headers: dict = field(default_factory=lambda: {"Content-Type": "text/plain; charset=utf-8"})

    def to_http(self) -> dict:
        return {"statusCode": self.status, "headers": self.headers, "body": self.body}


class Rejected(Exception):
    """`reason` is short (the EventsRejected metric's dimension); the answer's body adds `detail`."""

    def __init__(self, status: int, reason: str, detail: str = ""):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail

    @property
    def body(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


# --- request parsing -------------------------------------------------------------------
def _body_bytes(http_event: dict) -> bytes:
    body = http_event.get("body") or ""
    if http_event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=False)
        except ValueError:
            raise Rejected(400, "bad_body_encoding") from None
    return body.encode("utf-8") if isinstance(body, str) else body


def _query(http_event: dict) -> dict:
    # API Gateway already percent-decoded these; decoding again would turn '+' into ' '.
    return http_event.get("queryStringParameters") or {}


def _arrival(http_event: dict) -> float | None:
    """When API Gateway received the request (epoch seconds), if it says: the moment the
    CreateTime window is measured from, and a recorded request replays with its own time."""
    epoch_ms = (http_event.get("requestContext") or {}).get("timeEpoch")
    return epoch_ms / 1000 if isinstance(epoch_ms, (int, float)) and epoch_ms > 0 else None


def _crypto_for(corp_id: str) -> WeComCrypto:
    try:
        creds = credentials.load_callback(corp_id)
    except credentials.UnknownCorp:
        raise Rejected(404, "unknown_corp") from None
    return WeComCrypto(creds.token, creds.encoding_aes_key, creds.expected_receive_id)


def _signature_params(query: dict) -> tuple[str, str, str]:
    sig, ts, nonce = query.get("msg_signature"), query.get("timestamp"), query.get("nonce")
    if not sig or not ts or not nonce:
        raise Rejected(403, "missing_signature")
    return sig, ts, nonce


def _decrypt(crypto: WeComCrypto, sig: str, ts: str, nonce: str, encrypted: str) -> str:
    try:
        crypto.verify_signature(sig, ts, nonce, encrypted)
    except SignatureError:
        raise Rejected(403, "bad_signature") from None
    try:
        return crypto.decrypt(encrypted)
    except ReceiveIdError:
        raise Rejected(400, "other_receive_id") from None
    except CryptoError:
        raise Rejected(400, "undecryptable") from None


# --- GET: URL verification --------------------------------------------------------------
def verify_url(corp_id: str, query: dict) -> Answer:
    crypto = _crypto_for(corp_id)
    sig, ts, nonce = _signature_params(query)
    echostr = query.get("echostr")
    if not echostr:
        raise Rejected(400, "missing_echostr")
    return Answer(200, _decrypt(crypto, sig, ts, nonce, echostr))


# --- POST: a business callback ----------------------------------------------------------
def accept(corp_id: str, query: dict, body: bytes, now: float | None = None) -> Answer:
    """`now`: when the request arrived (default: the clock)."""
    crypto = _crypto_for(corp_id)
    if len(body) > MAX_BODY:
        raise Rejected(413, "too_large")
    sig, ts, nonce = _signature_params(query)
    try:
        envelope = parse_xml(body)
    except XmlError as err:
        raise Rejected(400, f"envelope_{err.reason}") from None
    encrypted = envelope.get("Encrypt")
    if not isinstance(encrypted, str) or not encrypted:
        raise Rejected(400, "no_encrypt")
    plaintext = _decrypt(crypto, sig, ts, nonce, encrypted)
    now = time.time() if now is None else now
    try:
        event = normalize(corp_id, parse_xml(plaintext))
        check_create_time(event, now)
    except XmlError as err:
        raise Rejected(400, f"message_{err.reason}") from None
    except EventError as err:
        raise Rejected(400, err.reason, err.detail) from None
    duplicate = not inbox.persist(event, now)
    return Answer(200, "", event=event, duplicate=duplicate)


# --- the HTTP API entry point -------------------------------------------------------------
def _count(metrics: Metrics, name: str, reason: str | None = None) -> None:
    if reason is None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="reason", value=reason)


def handle_http(http_event: dict, metrics: Metrics) -> dict:
    """API Gateway HTTP API (payload v2) event in, response out. Never raises for bad input."""
    method = (http_event.get("requestContext", {}).get("http", {}).get("method") or "").upper()
    corp_id = (http_event.get("pathParameters") or {}).get("corp_id", "")
    try:
        if method == "GET":
            answer = verify_url(corp_id, _query(http_event))
        elif method == "POST":
            answer = accept(corp_id, _query(http_event), _body_bytes(http_event), _arrival(http_event))
        else:
            raise Rejected(405, "method_not_allowed")
    except Rejected as rej:
        _count(metrics, "EventsRejected", rej.reason)
        log.warning("callback rejected", extra={"corp_id": corp_id, "reason": rej.reason, "detail": rej.detail,
                                                "status": rej.status})
        return Answer(rej.status, rej.body, rej.reason).to_http()
    if answer.event is not None:
        _count(metrics, "DuplicateEvents" if answer.duplicate else "EventsReceived")
        log.info(
            "callback accepted",
            extra={"corp_id": corp_id, "event_id": answer.event.event_id, "kind": answer.event.kind,
                   "change_type": answer.event.change_type, "duplicate": answer.duplicate},
        )
    return answer.to_http()
