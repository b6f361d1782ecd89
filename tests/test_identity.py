"""Tests of aim.identity: key parsing, canonical JSON, signatures, rotation, the key vault and nonces.

Pure functions, so no database or Redis is needed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_add

from aim.config import Settings, load_settings
from aim.errors import ConfigError, ValidationError
from aim.identity import (
    DEFAULT_KEY_GRACE_PERIOD,
    ED25519_GROUP_ORDER,
    KEY_ENCRYPTION_KEY_ENV,
    NONCE_MAX_LENGTH,
    NONCE_MIN_LENGTH,
    KeyPair,
    PrivateKeyDecryptionError,
    PrivateKeyVault,
    canonical_request,
    compute_key_id,
    decode_signature,
    generate_key_encryption_key,
    generate_keypair,
    has_canonical_scalar,
    is_valid_public_key,
    load_private_key,
    new_nonce,
    parse_public_key,
    previous_key_valid_until,
    public_key_pem,
    select_verification_keys,
    sign,
    sign_request,
    validate_nonce,
    verify_signature,
)

# A fixed seed whose public key's base64 contains both '+' and '/', so the standard and URL-safe
# encodings of the key differ.
SEED = hashlib.sha256(b"aim-test-4").digest()
PRIVATE = ed25519.Ed25519PrivateKey.from_private_bytes(SEED)
PUBLIC = PRIVATE.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
PUBLIC_STD = base64.b64encode(PUBLIC).decode()
PUBLIC_URLSAFE = base64.urlsafe_b64encode(PUBLIC).decode()
PUBLIC_PEM = PRIVATE.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()
MESSAGE = b'{"action":"db:read","resource":"orders"}'
SIGNATURE = PRIVATE.sign(MESSAGE)

# Small-order points: the identity (y = 1), the point of order 2 (y = -1) and a point of order 4 (y = 0).
IDENTITY_POINT = bytes([1]) + bytes(31)
ORDER_2_POINT = bytes([0xEC]) + bytes([0xFF]) * 30 + bytes([0x7F])
ORDER_4_POINT = bytes(32)
# y = p, which is a non-canonical encoding of y = 0.
NON_CANONICAL_POINT = bytes([0xED]) + bytes([0xFF]) * 30 + bytes([0x7F])
# The valid key plus a torsion point: on the curve, not small order, but outside the prime-order subgroup.
MIXED_ORDER_POINT = crypto_core_ed25519_add(PUBLIC, ORDER_2_POINT)
# Ed25519 SubjectPublicKeyInfo DER prefix (RFC 8410), followed by the 32 key bytes.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url_unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def spki_pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    return "-----BEGIN PUBLIC KEY-----\n" + body + "\n-----END PUBLIC KEY-----\n"


def with_last_char_bits_set(text: str) -> str:
    """Return `text` with its last base64 character moved to the next one, which sets unused low bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    body = text.rstrip("=")
    return body[:-1] + alphabet[alphabet.index(body[-1]) + 1] + text[len(body) :]


# --- key generation -------------------------------------------------------------------------------


def test_generate_keypair_shapes():
    pair = generate_keypair()
    assert isinstance(pair, KeyPair)
    assert len(pair.public_key) == 32
    assert len(pair.private_key) == 32
    assert re.fullmatch(r"ed25519:[A-Za-z0-9_-]{16}", pair.key_id)


def test_generate_keypair_is_random():
    first = generate_keypair()
    second = generate_keypair()
    assert first.private_key != second.private_key
    assert first.public_key != second.public_key
    assert first.key_id != second.key_id


def test_key_id_matches_documented_formula():
    digest = hashlib.sha256(PUBLIC).digest()
    expected = "ed25519:" + base64.urlsafe_b64encode(digest).decode()[:16]
    assert compute_key_id(PUBLIC) == expected
    assert compute_key_id(PUBLIC) == compute_key_id(bytes(PUBLIC))


@pytest.mark.parametrize("value", [PUBLIC[:31], PUBLIC + b"\x00", PUBLIC_STD, None])
def test_key_id_rejects_non_raw_key(value):
    with pytest.raises(ValueError):
        compute_key_id(value)


def test_keypair_repr_hides_private_key():
    pair = generate_keypair()
    text = repr(pair)
    assert "private_key" not in text
    assert pair.private_key.hex() not in text
    assert repr(pair.private_key) not in text


def test_keypair_pem_forms_match_keys():
    pair = generate_keypair()
    private = serialization.load_pem_private_key(pair.private_key_pem().encode(), password=None)
    raw_public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw_public == pair.public_key
    assert parse_public_key(pair.public_key_pem()) == pair.public_key
    assert parse_public_key(pair.public_key_base64()) == pair.public_key


# --- public key parsing: accepted forms -----------------------------------------------------------


ACCEPTED_PUBLIC_KEY_FORMS = {
    "standard padded": PUBLIC_STD,
    "standard unpadded": PUBLIC_STD.rstrip("="),
    "url-safe padded": PUBLIC_URLSAFE,
    "url-safe unpadded": PUBLIC_URLSAFE.rstrip("="),
    "standard as bytes": PUBLIC_STD.encode(),
    "pem": PUBLIC_PEM,
    "pem without final newline": PUBLIC_PEM.rstrip("\n"),
    "pem with crlf": PUBLIC_PEM.replace("\n", "\r\n"),
    "pem as bytes": PUBLIC_PEM.encode(),
    "pem from helper": public_key_pem(PUBLIC),
}


def test_test_key_alphabets_differ():
    assert "+" in PUBLIC_STD
    assert "/" in PUBLIC_STD
    assert PUBLIC_STD != PUBLIC_URLSAFE


@pytest.mark.parametrize("value", ACCEPTED_PUBLIC_KEY_FORMS.values(), ids=ACCEPTED_PUBLIC_KEY_FORMS.keys())
def test_parse_public_key_accepts(value):
    assert parse_public_key(value) == PUBLIC


def test_parse_public_key_round_trips_generated_keys():
    for _ in range(20):
        pair = generate_keypair()
        assert parse_public_key(b64(pair.public_key)) == pair.public_key
        assert parse_public_key(b64url_unpadded(pair.public_key)) == pair.public_key
        assert parse_public_key(pair.public_key_pem()) == pair.public_key


# --- public key parsing: rejected forms -----------------------------------------------------------


def _pem_of(key) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
PRIVATE_PKCS8_PEM = PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PRIVATE_OPENSSH_PEM = PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
).decode()
PRIVATE_ENCRYPTED_PEM = PRIVATE.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(b"correct horse"),
).decode()
PUBLIC_STD_WITH_NONZERO_BITS = with_last_char_bits_set(PUBLIC_STD)
PUBLIC_URLSAFE_43_WITH_NONZERO_BITS = with_last_char_bits_set(PUBLIC_URLSAFE.rstrip("="))
MIXED_ALPHABETS = PUBLIC_STD.replace("+", "-", 1)  # still contains '/'

# (case id, value, substrings that the message must contain besides the accepted forms)
REJECTED_PUBLIC_KEYS = [
    ("31 bytes standard", b64(PUBLIC[:31]), ["got 31 bytes"]),
    ("33 bytes standard", b64(PUBLIC + b"\x01"), ["got 33 bytes"]),
    ("31 bytes url-safe unpadded (42 chars)", b64url_unpadded(PUBLIC[:31]), ["got 31 bytes"]),
    ("33 bytes url-safe unpadded (44 chars)", b64url_unpadded(PUBLIC + b"\x01"), ["got 33 bytes"]),
    ("64 hex digits", PUBLIC.hex(), ["got 48 bytes", "hex"]),
    ("64 upper-case hex digits", PUBLIC.hex().upper(), ["got 48 bytes", "hex"]),
    ("64-byte libsodium secret key", b64(SEED + PUBLIC), ["got 64 bytes", "private seed"]),
    ("empty", "", ["empty"]),
    ("empty bytes", b"", ["empty"]),
    ("whitespace only", "   ", ["whitespace", "position 0"]),
    ("leading space", " " + PUBLIC_STD, ["whitespace", "position 0"]),
    ("trailing newline", PUBLIC_STD + "\n", ["whitespace", "U+000A"]),
    ("inner space", PUBLIC_STD[:10] + " " + PUBLIC_STD[10:], ["whitespace", "position 10"]),
    ("garbage punctuation", "!!!!" * 11, ["'!'", "neither base64 alphabet"]),
    ("non-ASCII text", "é" * 43, ["non-ASCII", "U+00E9"]),
    ("non-ASCII bytes", b"\xff" * 43, ["non-ASCII", "0xff"]),
    ("mixed alphabets", MIXED_ALPHABETS, ["mix", "URL-safe"]),
    ("misplaced padding", "AA==" + PUBLIC_STD, ["misplaced '=' padding", "position 2"]),
    ("too much padding", PUBLIC_STD + "==", ["3 '=' padding characters"]),
    ("wrong padding count", PUBLIC_STD.rstrip("=") + "==", ["2 '=' padding", "has 1"]),
    ("impossible length", "AAAAA", ["5 base64 characters"]),
    ("non-canonical 44 chars", PUBLIC_STD_WITH_NONZERO_BITS, ["non-canonical", "32 bytes", "low bits"]),
    ("non-canonical 43 chars", PUBLIC_URLSAFE_43_WITH_NONZERO_BITS, ["non-canonical", "32 bytes"]),
    ("pkcs8 private pem", PRIVATE_PKCS8_PEM, ["private key", "never send"]),
    ("openssh private pem", PRIVATE_OPENSSH_PEM, ["private key", "never send"]),
    ("encrypted private pem", PRIVATE_ENCRYPTED_PEM, ["private key", "never send"]),
    ("private pem after public pem", PUBLIC_PEM + PRIVATE_PKCS8_PEM, ["private key"]),
    ("rsa public pem", _pem_of(RSA_KEY.public_key()), ["RSA (2048-bit)", "not an Ed25519"]),
    ("ec public pem", _pem_of(EC_KEY.public_key()), ["EC (secp256r1)", "not an Ed25519"]),
    (
        "ed448 public pem",
        _pem_of(ed448.Ed448PrivateKey.generate().public_key()),
        ["Ed448", "not an Ed25519"],
    ),
    (
        "pkcs1 rsa public pem",
        RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode(),
        ["'RSA PUBLIC KEY'"],
    ),
    ("certificate label", PUBLIC_PEM.replace("PUBLIC KEY", "CERTIFICATE"), ["'CERTIFICATE'"]),
    ("two public pem blocks", PUBLIC_PEM + PUBLIC_PEM, ["2 PEM BEGIN lines"]),
    (
        "pem with bad body",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ["does not parse"],
    ),
    ("identity point base64", b64(IDENTITY_POINT), ["small order"]),
    ("order 2 point base64", b64(ORDER_2_POINT), ["small order"]),
    ("order 4 point base64", b64(ORDER_4_POINT), ["small order"]),
    ("non-canonical point base64", b64(NON_CANONICAL_POINT), ["not canonically encoded"]),
    ("mixed order point base64", b64(MIXED_ORDER_POINT), ["not a usable Ed25519 public key"]),
    ("identity point pem", spki_pem(ED25519_SPKI_PREFIX + IDENTITY_POINT), ["small order"]),
    ("oversized", "A" * 5000, ["5000 characters", "4096"]),
    ("none", None, ["type NoneType"]),
    ("integer", 12345, ["type int"]),
    ("bytearray", bytearray(PUBLIC_STD.encode()), ["type bytearray"]),
    ("list", [PUBLIC_STD], ["type list"]),
]


@pytest.mark.parametrize(
    ("value", "expected_parts"),
    [(value, parts) for _, value, parts in REJECTED_PUBLIC_KEYS],
    ids=[case_id for case_id, _, _ in REJECTED_PUBLIC_KEYS],
)
def test_parse_public_key_rejects(value, expected_parts):
    with pytest.raises(ValidationError) as info:
        parse_public_key(value)
    error = info.value
    assert error.field == "public_key"
    assert "base64 (standard or URL-safe, padding optional)" in error.message
    assert "exactly 32 bytes" in error.message
    assert "PEM SubjectPublicKeyInfo Ed25519" in error.message
    for part in expected_parts:
        assert part in error.message


def test_private_key_message_never_echoes_key():
    with pytest.raises(ValidationError) as info:
        parse_public_key(PRIVATE_PKCS8_PEM)
    body = PRIVATE_PKCS8_PEM.splitlines()[1]
    assert body not in info.value.message
    assert body not in str(info.value)


def test_private_key_warning_never_logs_key(caplog):
    with caplog.at_level("WARNING", logger="aim.identity.keys"):
        with pytest.raises(ValidationError):
            parse_public_key(PRIVATE_PKCS8_PEM)
    assert "private key" in caplog.text
    assert PRIVATE_PKCS8_PEM.splitlines()[1] not in caplog.text


def test_parse_public_key_accepts_pem_with_surrounding_whitespace():
    assert parse_public_key("\n  " + PUBLIC_PEM + "\n\n") == PUBLIC


def test_parse_public_key_uses_field_name():
    with pytest.raises(ValidationError) as info:
        parse_public_key(b64(PUBLIC[:31]), field="agent.public_key")
    assert info.value.field == "agent.public_key"
    assert str(info.value).startswith("agent.public_key: ")


# --- private keys ---------------------------------------------------------------------------------


PRIVATE_KEY_FORMS = {
    "key object": PRIVATE,
    "raw seed": SEED,
    "base64 seed": b64(SEED),
    "base64 seed with newline": b64(SEED) + "\n",
    "url-safe seed": b64url_unpadded(SEED),
    "pkcs8 pem": PRIVATE_PKCS8_PEM,
    "pkcs8 pem bytes": PRIVATE_PKCS8_PEM.encode(),
}


@pytest.mark.parametrize("value", PRIVATE_KEY_FORMS.values(), ids=PRIVATE_KEY_FORMS.keys())
def test_load_private_key_accepts(value):
    key = load_private_key(value)
    assert verify_signature(PUBLIC, MESSAGE, key.sign(MESSAGE))


REJECTED_PRIVATE_KEYS = [
    ("31-byte seed", SEED[:31], "31 bytes"),
    ("base64 of 31 bytes", b64(SEED[:31]), "31 bytes"),
    ("encrypted pem", PRIVATE_ENCRYPTED_PEM, "password-protected"),
    (
        "rsa pem",
        RSA_KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "RSA",
    ),
    ("bad pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "does not parse"),
    ("integer", 7, "type int"),
]


@pytest.mark.parametrize(
    ("value", "expected_part"),
    [(value, part) for _, value, part in REJECTED_PRIVATE_KEYS],
    ids=[case_id for case_id, _, _ in REJECTED_PRIVATE_KEYS],
)
def test_load_private_key_rejects(value, expected_part):
    with pytest.raises(ValidationError) as info:
        load_private_key(value)
    assert info.value.field == "private_key"
    assert "32-byte seed" in info.value.message
    assert "PKCS#8 PEM" in info.value.message
    assert expected_part in info.value.message


# --- verify_signature -----------------------------------------------------------------------------


def malleate(signature: bytes) -> bytes:
    """Return the signature with S replaced by S + L, which the Ed25519 equation also satisfies."""
    s = int.from_bytes(signature[32:], "little")
    return signature[:32] + (s + ED25519_GROUP_ORDER).to_bytes(32, "little")


def test_verify_signature_accepts_valid():
    assert verify_signature(PUBLIC, MESSAGE, SIGNATURE) is True


def test_verify_signature_accepts_empty_message():
    assert verify_signature(PUBLIC, b"", PRIVATE.sign(b"")) is True


OTHER_PUBLIC = generate_keypair().public_key

# (case id, public key, message, signature): every one must return False.
INVALID_VERIFICATIONS = [
    ("truncated signature", PUBLIC, MESSAGE, SIGNATURE[:63]),
    ("extended signature", PUBLIC, MESSAGE, SIGNATURE + b"\x00"),
    ("empty signature", PUBLIC, MESSAGE, b""),
    ("malleated S + L", PUBLIC, MESSAGE, malleate(SIGNATURE)),
    ("S equal to L", PUBLIC, MESSAGE, SIGNATURE[:32] + ED25519_GROUP_ORDER.to_bytes(32, "little")),
    ("S all ones", PUBLIC, MESSAGE, SIGNATURE[:32] + b"\xff" * 32),
    ("wrong key", OTHER_PUBLIC, MESSAGE, SIGNATURE),
    ("other message", PUBLIC, MESSAGE + b" ", SIGNATURE),
    ("31-byte key", PUBLIC[:31], MESSAGE, SIGNATURE),
    ("33-byte key", PUBLIC + b"\x00", MESSAGE, SIGNATURE),
    ("empty key", b"", MESSAGE, SIGNATURE),
    ("identity key with forged signature", IDENTITY_POINT, MESSAGE, IDENTITY_POINT + bytes(32)),
    ("order 2 key with forged signature", ORDER_2_POINT, MESSAGE, IDENTITY_POINT + bytes(32)),
    ("order 4 key", ORDER_4_POINT, MESSAGE, SIGNATURE),
    ("non-canonical key", NON_CANONICAL_POINT, MESSAGE, SIGNATURE),
    ("mixed order key", MIXED_ORDER_POINT, MESSAGE, SIGNATURE),
    ("key as base64 text", PUBLIC_STD, MESSAGE, SIGNATURE),
    ("key as bytearray", bytearray(PUBLIC), MESSAGE, SIGNATURE),
    ("message as str", PUBLIC, MESSAGE.decode(), SIGNATURE),
    ("message as memoryview", PUBLIC, memoryview(MESSAGE), SIGNATURE),
    ("signature as base64 text", PUBLIC, MESSAGE, b64(SIGNATURE)),
    ("signature as bytearray", PUBLIC, MESSAGE, bytearray(SIGNATURE)),
    ("signature none", PUBLIC, MESSAGE, None),
    ("key none", None, MESSAGE, SIGNATURE),
    ("message none", PUBLIC, None, SIGNATURE),
    ("signature integer", PUBLIC, MESSAGE, 0),
]


@pytest.mark.parametrize(
    ("public_key", "message", "signature"),
    [case[1:] for case in INVALID_VERIFICATIONS],
    ids=[case[0] for case in INVALID_VERIFICATIONS],
)
def test_verify_signature_rejects(public_key, message, signature):
    assert verify_signature(public_key, message, signature) is False


SCALAR_CASES = [
    ("valid signature", SIGNATURE, True),
    ("S zero", SIGNATURE[:32] + bytes(32), True),
    ("S equal to L - 1", SIGNATURE[:32] + (ED25519_GROUP_ORDER - 1).to_bytes(32, "little"), True),
    ("S equal to L", SIGNATURE[:32] + ED25519_GROUP_ORDER.to_bytes(32, "little"), False),
    ("S + L", malleate(SIGNATURE), False),
    ("S all ones", SIGNATURE[:32] + b"\xff" * 32, False),
]


@pytest.mark.parametrize(
    ("signature", "expected"),
    [case[1:] for case in SCALAR_CASES],
    ids=[case[0] for case in SCALAR_CASES],
)
def test_has_canonical_scalar(signature, expected):
    # Checked on its own because OpenSSL 3 also rejects S >= L, which would hide a missing check.
    assert has_canonical_scalar(signature) is expected


def test_verify_signature_rejects_every_bit_flip():
    for bit in range(len(SIGNATURE) * 8):
        flipped = bytearray(SIGNATURE)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert verify_signature(PUBLIC, MESSAGE, bytes(flipped)) is False, f"bit {bit} flipped"


def test_verify_signature_rejects_message_bit_flips():
    for bit in range(len(MESSAGE) * 8):
        flipped = bytearray(MESSAGE)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert verify_signature(PUBLIC, bytes(flipped), SIGNATURE) is False, f"bit {bit} flipped"


def test_is_valid_public_key():
    assert is_valid_public_key(PUBLIC)
    assert not is_valid_public_key(IDENTITY_POINT)
    assert not is_valid_public_key(ORDER_2_POINT)
    assert not is_valid_public_key(ORDER_4_POINT)
    assert not is_valid_public_key(NON_CANONICAL_POINT)
    assert not is_valid_public_key(MIXED_ORDER_POINT)
    assert not is_valid_public_key(PUBLIC[:31])
    assert not is_valid_public_key(PUBLIC_STD)


@settings(max_examples=400, deadline=None)
@given(public_key=st.binary(max_size=40), message=st.binary(max_size=64), signature=st.binary(max_size=80))
def test_verify_signature_fuzz_bytes_never_raises(public_key, message, signature):
    assert verify_signature(public_key, message, signature) is False


@settings(max_examples=300, deadline=None)
@given(signature=st.binary(min_size=64, max_size=64))
def test_verify_signature_fuzz_signature_for_real_key(signature):
    assert verify_signature(PUBLIC, MESSAGE, signature) is (signature == SIGNATURE)


ANY_VALUE = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=100),
    st.binary(max_size=100),
    st.lists(st.integers(), max_size=3),
    st.builds(bytearray, st.binary(max_size=70)),
)


@settings(max_examples=300, deadline=None)
@given(public_key=ANY_VALUE, message=ANY_VALUE, signature=ANY_VALUE)
def test_verify_signature_fuzz_any_type_never_raises(public_key, message, signature):
    assert verify_signature(public_key, message, signature) is False


# --- decode_signature -----------------------------------------------------------------------------


ACCEPTED_SIGNATURE_FORMS = {
    "standard padded": b64(SIGNATURE),
    "standard unpadded": b64(SIGNATURE).rstrip("="),
    "url-safe padded": base64.urlsafe_b64encode(SIGNATURE).decode(),
    "url-safe unpadded": b64url_unpadded(SIGNATURE),
    "ascii bytes": b64(SIGNATURE).encode(),
}


@pytest.mark.parametrize("text", ACCEPTED_SIGNATURE_FORMS.values(), ids=ACCEPTED_SIGNATURE_FORMS.keys())
def test_decode_signature_accepts(text):
    assert decode_signature(text) == SIGNATURE


REJECTED_SIGNATURE_TEXTS = {
    "63 bytes": b64(SIGNATURE[:63]),
    "65 bytes": b64(SIGNATURE + b"\x00"),
    "non-canonical trailing bits": with_last_char_bits_set(b64(SIGNATURE)),
    "whitespace": " " + b64(SIGNATURE),
    "garbage": "not a signature",
    "empty": "",
    "too long": "A" * 10_000,
    "hex": SIGNATURE.hex(),
    "non-ASCII bytes": b"\xff" * 88,
    "none": None,
    "integer": 5,
    "raw signature bytes": SIGNATURE,
}


@pytest.mark.parametrize("text", REJECTED_SIGNATURE_TEXTS.values(), ids=REJECTED_SIGNATURE_TEXTS.keys())
def test_decode_signature_rejects(text):
    assert decode_signature(text) is None


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=120), st.binary(max_size=120)))
def test_decode_signature_fuzz_never_raises(text):
    result = decode_signature(text)
    assert result is None or len(result) == 64


# --- canonical JSON and signed requests -----------------------------------------------------------


CANONICAL_EXAMPLES = [
    ("key order", {"b": 1, "a": 2, "c": {"z": 0, "y": 1}}, b'{"a":2,"b":1,"c":{"y":1,"z":0}}'),
    # U+1F600 is the surrogate pair D83D DE00 in UTF-16, so it sorts before U+FB01. Code-point order
    # would put it after.
    ("utf-16 key order", {"\ufb01": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ufb01":1}'.encode()),
    ("unicode kept as utf-8", {"k": "é€"}, '{"k":"é€"}'.encode()),
    ("control characters escaped", {"k": "a\nb\u001f"}, b'{"k":"a\\nb\\u001f"}'),
    ("quote and backslash escaped", {"k": 'a"b\\c'}, b'{"k":"a\\"b\\\\c"}'),
    ("float with zero fraction", {"n": 1.0}, b'{"n":1}'),
    ("negative zero", {"n": -0.0}, b'{"n":0}'),
    ("large float exponent", {"n": 1e21}, b'{"n":1e+21}'),
    ("large float without exponent", {"n": 1e20}, b'{"n":100000000000000000000}'),
    ("small float", {"n": 1e-7}, b'{"n":1e-7}'),
    ("decimal float", {"n": 0.1}, b'{"n":0.1}'),
    ("shortest round trip", {"n": 4.5e-324}, b'{"n":5e-324}'),
    ("max safe integer", {"n": 2**53 - 1}, b'{"n":9007199254740991}'),
    ("literals", {"t": True, "f": False, "z": None}, b'{"f":false,"t":true,"z":null}'),
    ("list order kept", {"l": [3, 1, 2]}, b'{"l":[3,1,2]}'),
    ("signature removed", {"a": 1, "signature": "abc"}, b'{"a":1}'),
    ("nested signature kept", {"a": {"signature": "x"}}, b'{"a":{"signature":"x"}}'),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [case[1:] for case in CANONICAL_EXAMPLES],
    ids=[case[0] for case in CANONICAL_EXAMPLES],
)
def test_canonical_request_examples(fields, expected):
    assert canonical_request(fields) == expected


REJECTED_CANONICAL_INPUTS = [
    ("nan", {"n": float("nan")}, "RFC 8785"),
    ("infinity", {"n": float("inf")}, "RFC 8785"),
    ("integer beyond 2**53", {"n": 2**53}, "RFC 8785"),
    ("bytes value", {"b": b"x"}, "RFC 8785"),
    ("non-string key", {1: "x"}, "RFC 8785"),
    ("not a mapping", [("a", 1)], "type list"),
    ("none", None, "type NoneType"),
]


@pytest.mark.parametrize(
    ("fields", "expected_part"),
    [case[1:] for case in REJECTED_CANONICAL_INPUTS],
    ids=[case[0] for case in REJECTED_CANONICAL_INPUTS],
)
def test_canonical_request_rejects(fields, expected_part):
    with pytest.raises(ValidationError) as info:
        canonical_request(fields)
    assert info.value.field == "request"
    assert "JSON object" in info.value.message
    assert expected_part in info.value.message


def test_canonical_request_does_not_modify_input():
    fields = {"b": 1, "signature": "x"}
    canonical_request(fields)
    assert fields == {"b": 1, "signature": "x"}


REQUEST = {
    "agent_id": "3f1c2d9e-0000-4000-8000-000000000001",
    "action": "db:read",
    "resource": "orders",
    "timestamp": 1767225600,
    "nonce": "pX0yq3Jc9s0aB1c2D3e4Fg",
    "context": {"risk": "low", "amount": 12.5},
}


def test_sign_request_round_trip():
    signature_text = sign_request(SEED, REQUEST)
    signature = decode_signature(signature_text)
    assert signature is not None
    assert verify_signature(PUBLIC, canonical_request(REQUEST), signature)


def test_sign_request_ignores_field_order_and_signature():
    reordered = dict(reversed(list(REQUEST.items())))
    reordered["signature"] = "old value"
    assert sign_request(SEED, reordered) == sign_request(SEED, REQUEST)


def test_sign_request_output_is_standard_base64():
    signature_text = sign_request(PRIVATE, REQUEST)
    assert len(signature_text) == 88
    assert base64.b64decode(signature_text, validate=True) == decode_signature(signature_text)


def test_signed_request_fails_after_change():
    signature = decode_signature(sign_request(PRIVATE_PKCS8_PEM, REQUEST))
    changed = {**REQUEST, "resource": "payments"}
    assert verify_signature(PUBLIC, canonical_request(changed), signature) is False


def test_sign_equals_cryptography_sign():
    assert sign(SEED, MESSAGE) == SIGNATURE


# --- key rotation ---------------------------------------------------------------------------------


CURRENT_KEY = b"c" * 32
PREVIOUS_KEY = b"p" * 32
ROTATED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
DEADLINE = ROTATED_AT + DEFAULT_KEY_GRACE_PERIOD
ONE_MICROSECOND = timedelta(microseconds=1)

ROTATION_CASES = [
    ("just after rotation", PREVIOUS_KEY, DEADLINE, ROTATED_AT, (CURRENT_KEY, PREVIOUS_KEY)),
    (
        "one microsecond before deadline",
        PREVIOUS_KEY,
        DEADLINE,
        DEADLINE - ONE_MICROSECOND,
        (CURRENT_KEY, PREVIOUS_KEY),
    ),
    ("exactly at deadline", PREVIOUS_KEY, DEADLINE, DEADLINE, (CURRENT_KEY,)),
    ("one microsecond after deadline", PREVIOUS_KEY, DEADLINE, DEADLINE + ONE_MICROSECOND, (CURRENT_KEY,)),
    (
        "deadline instant in another zone",
        PREVIOUS_KEY,
        DEADLINE,
        DEADLINE.astimezone(timezone(timedelta(hours=2))),
        (CURRENT_KEY,),
    ),
    ("no previous key", None, DEADLINE, ROTATED_AT, (CURRENT_KEY,)),
    ("previous key without deadline", PREVIOUS_KEY, None, ROTATED_AT, (CURRENT_KEY,)),
    ("previous equals current", CURRENT_KEY, DEADLINE, ROTATED_AT, (CURRENT_KEY,)),
]


@pytest.mark.parametrize(
    ("previous", "valid_until", "now", "expected"),
    [case[1:] for case in ROTATION_CASES],
    ids=[case[0] for case in ROTATION_CASES],
)
def test_select_verification_keys(previous, valid_until, now, expected):
    assert select_verification_keys(CURRENT_KEY, previous, valid_until, now) == expected


def test_select_verification_keys_rejects_naive_now():
    with pytest.raises(ValueError, match="timezone-aware"):
        select_verification_keys(CURRENT_KEY, PREVIOUS_KEY, DEADLINE, datetime(2026, 1, 1, 12, 0))


def test_select_verification_keys_rejects_naive_deadline():
    with pytest.raises(ValueError, match="previous_valid_until"):
        select_verification_keys(CURRENT_KEY, PREVIOUS_KEY, datetime(2026, 1, 2), ROTATED_AT)


def test_previous_key_valid_until():
    assert DEFAULT_KEY_GRACE_PERIOD == timedelta(hours=24)
    assert previous_key_valid_until(ROTATED_AT) == ROTATED_AT + timedelta(hours=24)
    assert previous_key_valid_until(ROTATED_AT, timedelta(hours=1)) == ROTATED_AT + timedelta(hours=1)
    assert previous_key_valid_until(ROTATED_AT, timedelta(0)) == ROTATED_AT


def test_zero_grace_period_retires_previous_key_at_once():
    deadline = previous_key_valid_until(ROTATED_AT, timedelta(0))
    assert select_verification_keys(CURRENT_KEY, PREVIOUS_KEY, deadline, ROTATED_AT) == (CURRENT_KEY,)


def test_previous_key_valid_until_rejects_negative_grace():
    with pytest.raises(ValidationError) as info:
        previous_key_valid_until(ROTATED_AT, timedelta(seconds=-1))
    assert info.value.field == "grace_period"
    assert "zero or more" in info.value.message


def test_previous_key_valid_until_rejects_naive():
    with pytest.raises(ValueError, match="rotated_at"):
        previous_key_valid_until(datetime(2026, 1, 1))


# --- private key vault ----------------------------------------------------------------------------


KEK = generate_key_encryption_key()
ASSOCIATED = b"agent:3f1c2d9e|key:ed25519:abc"


def vault_settings(value: str | None) -> Settings:
    return dataclasses.replace(Settings(), key_encryption_key=value)


@pytest.fixture
def vault() -> PrivateKeyVault:
    return PrivateKeyVault.from_settings(vault_settings(KEK))


def test_generated_kek_is_32_bytes_urlsafe():
    value = generate_key_encryption_key()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    assert len(base64.urlsafe_b64decode(value + "=")) == 32
    assert value != generate_key_encryption_key()


def test_vault_round_trip(vault):
    pair = generate_keypair()
    stored = vault.encrypt(pair.private_key, ASSOCIATED)
    assert pair.private_key not in stored
    seed = vault.decrypt(stored, ASSOCIATED)
    assert seed == pair.private_key
    assert verify_signature(pair.public_key, MESSAGE, sign(seed, MESSAGE))


def test_vault_uses_fresh_nonce(vault):
    assert vault.encrypt(SEED, ASSOCIATED) != vault.encrypt(SEED, ASSOCIATED)


def test_vault_from_load_settings():
    settings_from_env = load_settings({KEY_ENCRYPTION_KEY_ENV: KEK})
    vault = PrivateKeyVault.from_settings(settings_from_env)
    assert vault.decrypt(vault.encrypt(SEED, b""), b"") == SEED


def test_vault_accepts_standard_padded_kek():
    raw = base64.urlsafe_b64decode(KEK + "=")
    vault = PrivateKeyVault.from_settings(vault_settings(base64.b64encode(raw).decode()))
    other = PrivateKeyVault.from_settings(vault_settings(KEK))
    assert other.decrypt(vault.encrypt(SEED, ASSOCIATED), ASSOCIATED) == SEED


def _tamper(stored: bytes, index: int) -> bytes:
    changed = bytearray(stored)
    changed[index] ^= 0x01
    return bytes(changed)


def test_vault_rejects_other_associated_data(vault):
    stored = vault.encrypt(SEED, ASSOCIATED)
    with pytest.raises(PrivateKeyDecryptionError, match="failed authentication"):
        vault.decrypt(stored, b"agent:other")


def test_vault_rejects_other_kek(vault):
    stored = vault.encrypt(SEED, ASSOCIATED)
    other = PrivateKeyVault.from_settings(vault_settings(generate_key_encryption_key()))
    with pytest.raises(PrivateKeyDecryptionError, match="AIM_KEY_ENCRYPTION_KEY"):
        other.decrypt(stored, ASSOCIATED)


@pytest.mark.parametrize(
    "index", [1, 12, 13, 44, 60], ids=["nonce", "nonce end", "ciphertext", "ciphertext end", "tag"]
)
def test_vault_rejects_tampered_bytes(vault, index):
    stored = vault.encrypt(SEED, ASSOCIATED)
    with pytest.raises(PrivateKeyDecryptionError, match="failed authentication"):
        vault.decrypt(_tamper(stored, index), ASSOCIATED)


def test_vault_rejects_unknown_version(vault):
    stored = vault.encrypt(SEED, ASSOCIATED)
    with pytest.raises(PrivateKeyDecryptionError, match="format version 2"):
        vault.decrypt(b"\x02" + stored[1:], ASSOCIATED)


def test_vault_stored_length(vault):
    # version byte + 12-byte nonce + 32-byte seed + 16-byte tag
    assert len(vault.encrypt(SEED, ASSOCIATED)) == 61


@pytest.mark.parametrize("length", [0, 1, 13, 60])
def test_vault_rejects_truncated(vault, length):
    stored = vault.encrypt(SEED, ASSOCIATED)
    with pytest.raises(PrivateKeyDecryptionError, match="wrong length"):
        vault.decrypt(stored[:length], ASSOCIATED)


def test_vault_rejects_extended(vault):
    stored = vault.encrypt(SEED, ASSOCIATED)
    with pytest.raises(PrivateKeyDecryptionError, match="wrong length"):
        vault.decrypt(stored + b"\x00", ASSOCIATED)


def test_vault_encrypt_rejects_non_seed(vault):
    with pytest.raises(ValueError, match="32-byte"):
        vault.encrypt(SEED[:31], ASSOCIATED)


def test_vault_repr_hides_key(vault):
    assert KEK not in repr(vault)
    assert "hidden" in repr(vault)


BAD_KEKS = [
    ("missing", None, ["is not set"]),
    ("16 bytes", b64url_unpadded(b"k" * 16), ["decodes to 16 bytes"]),
    ("33 bytes", b64(b"k" * 33), ["decodes to 33 bytes"]),
    ("hex of 32 bytes", (b"k" * 32).hex(), ["decodes to 48 bytes"]),
    ("not base64", "correct horse battery staple", ["not valid base64", "whitespace"]),
    ("non-canonical", with_last_char_bits_set(KEK), ["not valid base64", "non-canonical"]),
]


@pytest.mark.parametrize(
    ("value", "expected_parts"),
    [case[1:] for case in BAD_KEKS],
    ids=[case[0] for case in BAD_KEKS],
)
def test_vault_from_settings_rejects(value, expected_parts):
    with pytest.raises(ConfigError) as info:
        PrivateKeyVault.from_settings(vault_settings(value))
    message = str(info.value)
    assert "AIM_KEY_ENCRYPTION_KEY" in message
    assert "exactly 32 random bytes" in message
    assert "generate_key_encryption_key" in message
    assert "\n" not in message
    if value:
        assert value not in message
    for part in expected_parts:
        assert part in message


# --- nonces ---------------------------------------------------------------------------------------


def test_new_nonce_format():
    nonce = new_nonce()
    assert len(nonce) == 22
    assert re.fullmatch(r"[A-Za-z0-9_-]+", nonce)
    assert len(base64.urlsafe_b64decode(nonce + "==")) == 16
    assert validate_nonce(nonce) == nonce


def test_new_nonce_unique():
    nonces = {new_nonce() for _ in range(10_000)}
    assert len(nonces) == 10_000


ACCEPTED_NONCES = {
    "minimum length": "a" * NONCE_MIN_LENGTH,
    "maximum length": "Z" * NONCE_MAX_LENGTH,
    "uuid": str(uuid.uuid4()),
    "hex": uuid.uuid4().hex,
    "base64url": "pX0yq3Jc9s0aB1c2D3e4F_-g",
}


@pytest.mark.parametrize("value", ACCEPTED_NONCES.values(), ids=ACCEPTED_NONCES.keys())
def test_validate_nonce_accepts(value):
    assert validate_nonce(value) == value


REJECTED_NONCES = [
    ("too short", "a" * (NONCE_MIN_LENGTH - 1), "got 15 characters"),
    ("too long", "a" * (NONCE_MAX_LENGTH + 1), "got 129 characters"),
    ("empty", "", "got 0 characters"),
    ("plus sign", "a" * 20 + "+", "'+' at position 20"),
    ("padding", "a" * 20 + "==", "'=' at position 20"),
    ("space", "a" * 10 + " " + "a" * 10, "' ' at position 10"),
    ("non-ASCII", "é" * 20, "'é' at position 0"),
    ("integer", 12345678901234567890, "type int"),
    ("none", None, "type NoneType"),
]


@pytest.mark.parametrize(
    ("value", "expected_part"),
    [case[1:] for case in REJECTED_NONCES],
    ids=[case[0] for case in REJECTED_NONCES],
)
def test_validate_nonce_rejects(value, expected_part):
    with pytest.raises(ValidationError) as info:
        validate_nonce(value)
    assert info.value.field == "nonce"
    assert "16 to 128 characters" in info.value.message
    assert expected_part in info.value.message


def test_validate_nonce_uses_field_name():
    with pytest.raises(ValidationError) as info:
        validate_nonce("short", field="request.nonce")
    assert info.value.field == "request.nonce"
