"""scrm.wecom.callback.crypto against the two official vectors (FACTS §2) and hostile input."""
from __future__ import annotations

import base64
import struct
import time
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scrm.wecom.callback.crypto import (
    CryptoError,
    DecryptError,
    ReceiveIdError,
    SignatureError,
    WeComCrypto,
)
from scrm.wecom.callback.wxml import parse_xml


@dataclass(frozen=True)
class Vector:
    name: str
    token: str
    encoding_aes_key: str
    receive_id: str
    msg_signature: str
    timestamp: str
    nonce: str
    encrypted: str
    plaintext: str
    cipher_len: int
    pad: int
    prefix: bytes
    msg_len: int


A_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
A_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
A_RID = "ww1436e0e65a779aee"
A_AES_HEX = "eaa91d32babaf274ca76ece72583b5037ed6da8120a64314be4b6d453a2a854b"
A_IV_HEX = "eaa91d32babaf274ca76ece72583b503"

A1 = Vector(
    name="A1",
    token=A_TOKEN,
    encoding_aes_key=A_KEY,
    receive_id=A_RID,
    msg_signature="012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
    timestamp="1476416373",
    nonce="47744683",
    encrypted="fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
    plaintext="1288432023552776189",
    cipher_len=64,
    pad=7,
    prefix=b"8908d0ff052afda0",
    msg_len=19,
)

A2_BODY = (
    "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n"
    "<Encrypt><![CDATA[Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIje"
    "LvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0"
    "VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qA"
    "RR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOY"
    "uPDGOCI8jmnKiypE+]]></Encrypt>\n"
    "<AgentID><![CDATA[1000002]]></AgentID>\n"
    "</xml>"
)
A2 = Vector(
    name="A2",
    token=A_TOKEN,
    encoding_aes_key=A_KEY,
    receive_id=A_RID,
    msg_signature="0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
    timestamp="1476422779",
    nonce="1597212914",
    encrypted=parse_xml(A2_BODY)["Encrypt"],
    plaintext=(
        "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
        "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
        "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
    ),
    cipher_len=288,
    pad=22,
    prefix=b"694ce5a83ae07fe3",
    msg_len=228,
)

B = Vector(
    name="B",
    token="QDG6eK",
    encoding_aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    receive_id="wx5823bf96d3bd56c7",
    msg_signature="477715d11cdb4164915debcba66cb864d751f3e6",
    timestamp="1409659813",
    nonce="1372623149",
    encrypted=(
        "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj9"
        "11L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DO"
        "dnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03"
        "v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpN"
        "elZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
    ),
    plaintext=(
        "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
        "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
        "<CreateTime>1409659813</CreateTime>\n"
        "<MsgType><![CDATA[text]]></MsgType>\n"
        "<Content><![CDATA[hello]]></Content>\n"
        "<MsgId>4561255354251345929</MsgId>\n"
        "<AgentID>218</AgentID>\n"
        "</xml>"
    ),
    cipher_len=352,
    pad=30,
    prefix=b"0960688932c47ef1",
    msg_len=284,
)

VECTORS = pytest.mark.parametrize("v", [A1, A2, B], ids=lambda v: v.name)


def crypto_for(v: Vector) -> WeComCrypto:
    return WeComCrypto(v.token, v.encoding_aes_key, v.receive_id)


# Independent AES helpers so the tests can inspect and forge plaintext layouts
# without going through the code under test.
def _cipher(encoding_aes_key: str) -> Cipher:
    key = base64.b64decode(encoding_aes_key + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def raw_decrypt(encoding_aes_key: str, encrypted: str) -> bytes:
    d = _cipher(encoding_aes_key).decryptor()
    return d.update(base64.b64decode(encrypted)) + d.finalize()


def raw_encrypt(encoding_aes_key: str, plain: bytes) -> str:
    e = _cipher(encoding_aes_key).encryptor()
    return base64.b64encode(e.update(plain) + e.finalize()).decode()


def layout(msg: bytes, receive_id: bytes = A_RID.encode(), length: int | None = None) -> bytes:
    """16-byte prefix + length + msg + receive id, unpadded."""
    return b"p" * 16 + struct.pack(">I", len(msg) if length is None else length) + msg + receive_id


def pad32(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


def flip(encrypted: str, index: int) -> str:
    data = bytearray(base64.b64decode(encrypted))
    data[index] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


# --- official vectors -------------------------------------------------------------


def test_vector_a_key_and_iv_derivation() -> None:
    key = base64.b64decode(A_KEY + "=")
    assert key.hex() == A_AES_HEX
    assert key[:16].hex() == A_IV_HEX


@VECTORS
def test_vector_signature(v: Vector) -> None:
    c = crypto_for(v)
    assert c.signature(v.timestamp, v.nonce, v.encrypted) == v.msg_signature
    c.verify_signature(v.msg_signature, v.timestamp, v.nonce, v.encrypted)


def test_vector_b_signs_the_documented_sorted_concatenation() -> None:
    # The doc spells out the order: nonce, timestamp, token, Encrypt.
    assert "".join(sorted([B.token, B.timestamp, B.nonce, B.encrypted])).startswith(
        "13726231491409659813QDG6eK" + B.encrypted[:8]
    )


@VECTORS
def test_vector_decrypts_to_exact_plaintext(v: Vector) -> None:
    assert crypto_for(v).decrypt(v.encrypted) == v.plaintext


@VECTORS
def test_vector_internals(v: Vector) -> None:
    # Pads 22 and 30 (> 16) are why a 16-byte PKCS#7 unpadder cannot be used.
    plain = raw_decrypt(v.encoding_aes_key, v.encrypted)
    assert len(plain) == v.cipher_len
    assert plain[-v.pad :] == bytes([v.pad]) * v.pad and plain[-v.pad - 1] != v.pad
    assert plain[:16] == v.prefix
    assert struct.unpack(">I", plain[16:20])[0] == v.msg_len == len(v.plaintext.encode())
    assert plain[20 + v.msg_len : -v.pad] == v.receive_id.encode()


@VECTORS
def test_encrypt_with_vector_prefix_reproduces_the_official_ciphertext(v: Vector) -> None:
    # CBC with a fixed IV is deterministic: this pins key, IV, layout and 32-byte padding.
    assert crypto_for(v).encrypt(v.plaintext, random_prefix=v.prefix) == v.encrypted


def test_a1_verify_url_returns_echostr_plaintext() -> None:
    echo = crypto_for(A1).verify_url(A1.msg_signature, A1.timestamp, A1.nonce, A1.encrypted)
    assert echo == "1288432023552776189"


def test_a2_post_body_end_to_end() -> None:
    body = parse_xml(A2_BODY)
    assert body["ToUserName"] == A_RID and body["AgentID"] == "1000002"
    c = crypto_for(A2)
    c.verify_signature(A2.msg_signature, A2.timestamp, A2.nonce, body["Encrypt"])
    msg = parse_xml(c.decrypt(body["Encrypt"]))
    assert msg["Content"] == "你好"
    assert msg["FromUserName"] == "ChenJiaShun"


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("size", range(71))
def test_round_trip_sizes(size: int) -> None:
    c = crypto_for(A1)
    message = "".join(chr(ord("a") + i % 26) for i in range(size))
    encrypted = c.encrypt(message)
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert c.decrypt(encrypted) == message


@pytest.mark.parametrize("message", ["你好", "客户 🙂 é\n<xml/>", "\u0000", "x" * 5000])
def test_round_trip_multibyte_utf8(message: str) -> None:
    c = crypto_for(B)
    assert c.decrypt(c.encrypt(message)) == message


def test_aligned_message_gets_a_full_block_of_pad_32() -> None:
    c = crypto_for(A1)
    message = "m" * (64 - 20 - len(A_RID))  # prefix + len + msg + rid = 64 bytes exactly
    encrypted = c.encrypt(message)
    plain = raw_decrypt(A_KEY, encrypted)
    assert len(plain) == 96
    assert plain[-32:] == bytes([32]) * 32
    assert c.decrypt(encrypted) == message


def test_random_prefix_differs_between_calls() -> None:
    c = crypto_for(A1)
    first, second = c.encrypt("same"), c.encrypt("same")
    assert first != second
    assert raw_decrypt(A_KEY, first)[:16] != raw_decrypt(A_KEY, second)[:16]


def test_random_prefix_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        crypto_for(A1).encrypt("x", random_prefix=b"short")


def test_receive_id_may_be_empty() -> None:
    # Personal-subject third-party apps use an empty receiveid (FACTS §1.6).
    c = WeComCrypto(A_TOKEN, A_KEY, "")
    assert c.decrypt(c.encrypt("hi")) == "hi"


# --- seal ---------------------------------------------------------------------------


def test_seal_builds_what_wecom_posts() -> None:
    c = crypto_for(A1)
    body, query = c.seal(
        "<xml><Event>x</Event></xml>", timestamp="1700000000", nonce="42", agent_id=1000002
    )
    assert body.startswith(f"<xml><ToUserName><![CDATA[{A_RID}]]></ToUserName><Encrypt><![CDATA[")
    assert body.endswith("]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
    fields = parse_xml(body)
    assert set(query) == {"msg_signature", "timestamp", "nonce"}
    assert query["timestamp"] == "1700000000" and query["nonce"] == "42"
    c.verify_signature(query["msg_signature"], query["timestamp"], query["nonce"], fields["Encrypt"])
    assert c.decrypt(fields["Encrypt"]) == "<xml><Event>x</Event></xml>"


def test_seal_defaults_and_no_agent_id() -> None:
    c = crypto_for(B)
    before = int(time.time())
    body, query = c.seal("hello")
    assert "AgentID" not in body
    assert before <= int(query["timestamp"]) <= int(time.time())
    assert query["nonce"].isdigit()
    fields = parse_xml(body)
    assert fields["ToUserName"] == B.receive_id
    echo = c.verify_url(query["msg_signature"], query["timestamp"], query["nonce"], fields["Encrypt"])
    assert echo == "hello"


# --- signature failures -------------------------------------------------------------


@pytest.mark.parametrize(
    ("signature", "timestamp", "nonce", "reason"),
    [
        (A1.msg_signature, "1476416374", A1.nonce, "signature_mismatch"),
        (A1.msg_signature, A1.timestamp, "47744684", "signature_mismatch"),
        ("0" * 40, A1.timestamp, A1.nonce, "signature_mismatch"),
        (A1.msg_signature[:-1], A1.timestamp, A1.nonce, "signature_mismatch"),
        ("签名", A1.timestamp, A1.nonce, "signature_mismatch"),
        ("", A1.timestamp, A1.nonce, "missing_signature"),
        (None, A1.timestamp, A1.nonce, "missing_signature"),
        (A1.msg_signature, None, A1.nonce, "missing_parameter"),
        (A1.msg_signature, A1.timestamp, None, "missing_parameter"),
    ],
)
def test_signature_rejected(
    signature: str | None, timestamp: str | None, nonce: str | None, reason: str
) -> None:
    with pytest.raises(SignatureError) as err:
        crypto_for(A1).verify_signature(signature, timestamp, nonce, A1.encrypted)
    assert err.value.code == -40001 and err.value.reason == reason


def test_signature_depends_on_token_and_ciphertext() -> None:
    with pytest.raises(SignatureError):
        WeComCrypto("other", A_KEY, A_RID).verify_signature(
            A1.msg_signature, A1.timestamp, A1.nonce, A1.encrypted
        )
    with pytest.raises(SignatureError):
        crypto_for(A1).verify_signature(A1.msg_signature, A1.timestamp, A1.nonce, flip(A1.encrypted, 5))


def test_verify_url_checks_signature_before_decrypting() -> None:
    with pytest.raises(SignatureError):
        crypto_for(A1).verify_url("0" * 40, A1.timestamp, A1.nonce, "garbage")
    with pytest.raises(SignatureError):
        crypto_for(A1).verify_url(A1.msg_signature, A1.timestamp, A1.nonce, None)


# --- decrypt failures ---------------------------------------------------------------


def test_tampered_last_block_breaks_padding() -> None:
    # Flipping a bit of the previous ciphertext block flips the same bit of the pad byte.
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(flip(A1.encrypted, -17))
    assert (err.value.code, err.value.reason) == (-40007, "bad_padding")


def test_tampered_first_block_corrupts_length() -> None:
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(flip(A1.encrypted, 0))  # flips the length field's top byte
    assert (err.value.code, err.value.reason) == (-40008, "bad_length")


def test_wrong_key_fails() -> None:
    c = WeComCrypto(A_TOKEN, B.encoding_aes_key, A_RID)
    with pytest.raises(DecryptError):
        c.decrypt(A2.encrypted)


@pytest.mark.parametrize(
    "receive_id", ["wx5823bf96d3bd56c7", A_RID[:-1], A_RID + "x", A_RID.upper(), ""]
)
def test_wrong_receive_id(receive_id: str) -> None:
    with pytest.raises(ReceiveIdError) as err:
        WeComCrypto(A_TOKEN, A_KEY, receive_id).decrypt(A2.encrypted)
    assert (err.value.code, err.value.reason) == (-40005, "receive_id_mismatch")


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64!!",
        "abc",  # bad base64 padding
        A1.encrypted.replace("+", " "),  # echostr form-decoded once too often
        A1.encrypted[:-2] + "\n" + A1.encrypted[-2:],
        "密文",
    ],
)
def test_bad_base64(encrypted: str) -> None:
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(encrypted)
    assert (err.value.code, err.value.reason) == (-40010, "bad_base64")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 15, b"\x00" * 33, base64.b64decode(A1.encrypted)[:61]],
    ids=["empty", "15", "33", "truncated-61"],
)
def test_ciphertext_length_not_block_multiple(data: bytes) -> None:
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(base64.b64encode(data).decode())
    assert (err.value.code, err.value.reason) == (-40007, "bad_ciphertext_length")


def test_ciphertext_truncated_by_a_block() -> None:
    truncated = base64.b64encode(base64.b64decode(A1.encrypted)[:48]).decode()
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(truncated)
    assert err.value.reason == "bad_padding"


@pytest.mark.parametrize(
    "tail",
    [b"\x00", b"\x21", b"\x05\x05\x05\x04\x05", b"\x03\x02\x03"],
    ids=["pad-0", "pad-33", "pad-bytes-differ", "pad-bytes-differ-short"],
)
def test_bad_padding(tail: bytes) -> None:
    plain = layout(b"hello")
    plain += b"z" * (-(len(plain) + len(tail)) % 32) + tail
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, plain))
    assert (err.value.code, err.value.reason) == (-40007, "bad_padding")


def test_pad_larger_than_plaintext_is_rejected() -> None:
    # 16 bytes of value 32: the pad claims more bytes than exist.
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, bytes([32]) * 16))
    assert err.value.reason == "bad_padding"


def test_plaintext_shorter_than_header() -> None:
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, pad32(b"p" * 19)))
    assert (err.value.code, err.value.reason) == (-40008, "bad_layout")


@pytest.mark.parametrize("length", [5 + len(A_RID) + 1, 1000, 2**32 - 1])
def test_length_field_longer_than_the_data(length: int) -> None:
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, pad32(layout(b"hello", length=length))))
    assert (err.value.code, err.value.reason) == (-40008, "bad_length")


def test_length_field_shorter_than_the_message_shifts_into_receive_id() -> None:
    with pytest.raises(ReceiveIdError):
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, pad32(layout(b"hello", length=4))))


def test_length_covering_exactly_msg_and_receive_id_leaves_no_receive_id() -> None:
    with pytest.raises(ReceiveIdError):
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, pad32(layout(b"hello", length=5 + len(A_RID)))))


def test_message_not_utf8() -> None:
    with pytest.raises(DecryptError) as err:
        crypto_for(A1).decrypt(raw_encrypt(A_KEY, pad32(layout("你好".encode("gbk")))))
    assert (err.value.code, err.value.reason) == (-40008, "bad_utf8")


# --- key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [A_KEY[:-1], A_KEY + "A", "A" * 39, "", "*" * 43, A_KEY[:-1] + "!", "你" * 43],
    ids=["42", "44", "39-decodes-to-29", "empty", "not-base64", "bad-last-char", "non-ascii"],
)
def test_illegal_aes_key(key: str) -> None:
    with pytest.raises(CryptoError) as err:
        WeComCrypto(A_TOKEN, key, A_RID)
    assert (err.value.code, err.value.reason) == (-40004, "illegal_aes_key")


def test_errors_share_a_base_and_carry_code_and_reason() -> None:
    for cls, code in [(SignatureError, -40001), (DecryptError, -40007), (ReceiveIdError, -40005)]:
        err = cls("why")
        assert isinstance(err, CryptoError)
        assert err.code == code and err.reason == "why"
    assert DecryptError("bad_base64", -40010).code == -40010
