"""WeCom callback crypto: SHA-1 signature, AES-256-CBC, 32-byte PKCS#7, message layout.

Wire format (FACTS §1.4-1.6): base64(AES-256-CBC(key, iv=key[:16],
pad32(random16 + len4_be + msg + receive_id))), signed with
sha1(sorted(token, timestamp, nonce, encrypted)).

Only stdlib and the cipher primitives of `cryptography` are imported: this module sits on
the callback's cold-start path.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Official error codes of the WXBizMsgCrypt samples (FACTS §1.10).
VALIDATE_SIGNATURE_ERROR = -40001
ILLEGAL_AES_KEY = -40004
VALIDATE_RECEIVE_ID_ERROR = -40005
DECRYPT_AES_ERROR = -40007
ILLEGAL_BUFFER = -40008
DECODE_BASE64_ERROR = -40010

BLOCK = 32  # WeCom pads to 32 bytes, not to the AES block size
_PREFIX = 16
_HEADER = _PREFIX + 4  # random prefix + big-endian message length


class CryptoError(Exception):
    """Any callback crypto failure; `.code` is the official -400xx code."""

    code: int = ILLEGAL_AES_KEY

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.reason = reason
        if code is not None:
            self.code = code
        super().__init__(f"{reason} ({self.code})")


class SignatureError(CryptoError):
    code = VALIDATE_SIGNATURE_ERROR


class DecryptError(CryptoError):
    code = DECRYPT_AES_ERROR


class ReceiveIdError(CryptoError):
    code = VALIDATE_RECEIVE_ID_ERROR


class WeComCrypto:
    """Signs, verifies, encrypts and decrypts for one (token, EncodingAESKey, receive id)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise CryptoError("illegal_aes_key", ILLEGAL_AES_KEY) from None
        if len(key) != 32:
            raise CryptoError("illegal_aes_key", ILLEGAL_AES_KEY)
        self._token = token
        self._receive_id = receive_id.encode("utf-8")
        self._receive_id_text = receive_id
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        # Code-point order of str equals UTF-8 byte order, so sorted() is the documented order.
        joined = "".join(sorted((self._token, timestamp, nonce, encrypted)))
        return hashlib.sha1(joined.encode("utf-8")).hexdigest()

    def verify_signature(
        self,
        msg_signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        encrypted: str | None,
    ) -> None:
        # Arguments come straight from the query string / body, hence the None handling.
        if not msg_signature:
            raise SignatureError("missing_signature")
        if timestamp is None or nonce is None or encrypted is None:
            raise SignatureError("missing_parameter")
        expected = self.signature(timestamp, nonce, encrypted)
        # compare_digest on str only accepts ASCII; bytes keeps odd input a plain mismatch.
        if not hmac.compare_digest(expected.encode(), msg_signature.encode("utf-8", "replace")):
            raise SignatureError("signature_mismatch")

    def decrypt(self, encrypted: str) -> str:
        """Decrypt one Encrypt/echostr value. Verify the signature first: it is what
        keeps attackers from probing the padding checks with forged ciphertexts."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise DecryptError("bad_base64", DECODE_BASE64_ERROR) from None
        if not data or len(data) % 16:
            raise DecryptError("bad_ciphertext_length", DECRYPT_AES_ERROR)
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(data) + decryptor.finalize()

        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes((pad,)) * pad:
            raise DecryptError("bad_padding", DECRYPT_AES_ERROR)
        body = plain[:-pad]
        if len(body) < _HEADER:
            raise DecryptError("bad_layout", ILLEGAL_BUFFER)
        (msg_len,) = struct.unpack(">I", body[_PREFIX:_HEADER])
        if msg_len > len(body) - _HEADER:
            raise DecryptError("bad_length", ILLEGAL_BUFFER)
        end = _HEADER + msg_len
        if body[end:] != self._receive_id:
            raise ReceiveIdError("receive_id_mismatch")
        try:
            return body[_HEADER:end].decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("bad_utf8", ILLEGAL_BUFFER) from None

    def encrypt(self, plaintext: str, random_prefix: bytes | None = None) -> str:
        prefix = os.urandom(_PREFIX) if random_prefix is None else random_prefix
        if len(prefix) != _PREFIX:
            raise ValueError(f"random_prefix must be {_PREFIX} bytes")
        msg = plaintext.encode("utf-8")
        body = prefix + struct.pack(">I", len(msg)) + msg + self._receive_id
        pad = BLOCK - len(body) % BLOCK  # 1..32; a whole block when already aligned
        encryptor = self._cipher.encryptor()
        data = encryptor.update(body + bytes((pad,)) * pad) + encryptor.finalize()
        return base64.b64encode(data).decode("ascii")

    def verify_url(
        self,
        msg_signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        echostr: str | None,
    ) -> str:
        """GET verification: the returned plaintext is the exact response body."""
        self.verify_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)  # type: ignore[arg-type]  # not None once verified

    def seal(
        self,
        plaintext: str,
        timestamp: str | None = None,
        nonce: str | None = None,
        agent_id: str | int | None = None,
    ) -> tuple[str, dict[str, str]]:
        """Build what WeCom POSTs for `plaintext`: (XML body, query parameters).

        Used by tests and the local WeCom simulator."""
        timestamp = str(int(time.time())) if timestamp is None else timestamp
        nonce = str(secrets.randbelow(10**10)) if nonce is None else nonce
        encrypted = self.encrypt(plaintext)
        agent = "" if agent_id is None else f"<AgentID><![CDATA[{agent_id}]]></AgentID>"
        body = (
            f"<xml><ToUserName><![CDATA[{self._receive_id_text}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>{agent}</xml>"
        )
        query = {
            "msg_signature": self.signature(timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        return body, query
