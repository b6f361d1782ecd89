"""Ed25519 key pairs, key ids and strict public-key parsing.

A public key is stored and passed around as its 32 raw bytes (RFC 8032 encoding). A private key is
its 32-byte seed. Its PKCS#8 PEM form exists only for the one-time download and for clients.

The key id is `"ed25519:"` followed by the first 16 characters of the unpadded URL-safe base64 of
SHA-256 over the 32 raw public-key bytes, so 96 bits of the digest. It is stable for a key, needs
no database, and distinguishes the keys of one agent across rotations.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from nacl.bindings import crypto_core_ed25519_is_valid_point

from aim.errors import ValidationError
from aim.identity.encoding import Base64Error, decode_base64, encode_base64, encode_base64url

logger = logging.getLogger(__name__)

PUBLIC_KEY_LENGTH = 32
SEED_LENGTH = 32
KEY_ID_PREFIX = "ed25519:"
KEY_ID_DIGEST_CHARS = 16

# An Ed25519 SubjectPublicKeyInfo PEM is 113 characters and a 4096-bit RSA one about 800. The cap
# keeps an oversized value from reaching the PEM and base64 decoders.
MAX_PUBLIC_KEY_TEXT_LENGTH = 4096

EXPECTED_PUBLIC_KEY_FORMS = (
    "expected base64 (standard or URL-safe, padding optional) of exactly 32 bytes, "
    "or a PEM SubjectPublicKeyInfo Ed25519 key"
)
EXPECTED_PRIVATE_KEY_FORMS = (
    "expected an Ed25519 private key: its 32-byte seed as raw bytes or base64, "
    "or a PKCS#8 PEM 'PRIVATE KEY' block without a password"
)

_PEM_LABEL = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_HEX_64 = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True)
class KeyPair:
    """A freshly generated Ed25519 key pair. `repr()` leaves out the private key."""

    private_key: bytes = field(repr=False)  # the 32-byte RFC 8032 seed
    public_key: bytes
    key_id: str

    def private_key_pem(self) -> str:
        """Return the private key as an unencrypted PKCS#8 PEM block, for the one-time download."""
        key = ed25519.Ed25519PrivateKey.from_private_bytes(self.private_key)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    def public_key_base64(self) -> str:
        return encode_base64(self.public_key)

    def public_key_pem(self) -> str:
        return public_key_pem(self.public_key)


def generate_keypair() -> KeyPair:
    """Generate an Ed25519 key pair from the operating system's CSPRNG (through OpenSSL)."""
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(private_key=seed, public_key=public, key_id=compute_key_id(public))


def compute_key_id(public_key: bytes) -> str:
    """Return the key id of 32 raw public-key bytes. Raise ValueError for any other length."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LENGTH:
        raise ValueError(f"compute_key_id expects {PUBLIC_KEY_LENGTH} raw public-key bytes")
    digest = hashlib.sha256(public_key).digest()
    return KEY_ID_PREFIX + encode_base64url(digest)[:KEY_ID_DIGEST_CHARS]


def public_key_pem(public_key: bytes) -> str:
    """Return 32 raw public-key bytes as a SubjectPublicKeyInfo PEM block."""
    key = ed25519.Ed25519PublicKey.from_public_bytes(public_key)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def is_valid_public_key(public_key: object) -> bool:
    """Return whether `public_key` is 32 bytes encoding a usable Ed25519 point.

    libsodium's check rejects encodings with y >= p, points off the curve, points of small order
    and points outside the prime-order subgroup. OpenSSL's Ed25519 verify accepts a small-order
    key such as the identity point, and with it a signature that verifies for every message.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LENGTH:
        return False
    return bool(crypto_core_ed25519_is_valid_point(public_key))


@functools.lru_cache(maxsize=8192)
def load_verification_key(public_key: bytes) -> ed25519.Ed25519PublicKey | None:
    """Return the `cryptography` key object for 32 raw bytes, or None when the key is not usable.

    The result is cached per key because the point check costs about half as much as one verify
    (about 35 us against 65 us, measured with bench/verify_signature.py).
    The caller must pass `bytes`, because the cache hashes its argument.
    """
    if not is_valid_public_key(public_key):
        return None
    return ed25519.Ed25519PublicKey.from_public_bytes(public_key)


def parse_public_key(value: object, field: str = "public_key") -> bytes:
    """Parse a public key sent by a user or an agent and return its 32 raw bytes.

    Accepted forms are base64 in the standard or the URL-safe alphabet, padded or not, of exactly
    32 bytes, and one PEM SubjectPublicKeyInfo block of an Ed25519 key. `bytes` are read as the
    ASCII text of one of those forms, not as raw key bytes. The key must pass
    `is_valid_public_key`. Anything else raises `ValidationError(field, ...)` whose message states
    the accepted forms and what was found, such as the decoded length.
    """
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError as exc:
            _reject(field, f"bytes with a non-ASCII byte 0x{value[exc.start]:02x} at position {exc.start}")
    elif isinstance(value, str):
        text = value
    else:
        _reject(field, f"a value of type {type(value).__name__}")

    if len(text) > MAX_PUBLIC_KEY_TEXT_LENGTH:
        _reject(field, f"{len(text)} characters, more than the {MAX_PUBLIC_KEY_TEXT_LENGTH} accepted")
    if not text.isascii():
        position, char = next((i, c) for i, c in enumerate(text) if not c.isascii())
        _reject(field, f"the non-ASCII character U+{ord(char):04X} at position {position}")
    # Checked before the format is chosen, so that a pasted private key is named as such wherever it
    # sits in the value.
    if "PRIVATE KEY" in text:
        logger.warning("rejected a PEM private key sent as %s; the key itself is not logged", field)
        _reject(
            field,
            "a PEM private key. Send only the public key, and never send a private key to anyone. "
            "Treat this private key as exposed and replace it",
        )

    if text.strip().startswith("-----BEGIN"):
        raw = _parse_pem(text, field)
    else:
        raw = _parse_base64(text, field)

    if not is_valid_public_key(raw):
        _reject(
            field,
            "32 bytes that are not a usable Ed25519 public key: the point is off the curve, "
            "not canonically encoded, or of small order",
        )
    return raw


def _parse_base64(text: str, field: str) -> bytes:
    try:
        raw = decode_base64(text)
    except Base64Error as exc:
        _reject(field, str(exc))
    if len(raw) == PUBLIC_KEY_LENGTH:
        return raw

    problem = f"{len(raw)} bytes"
    if _HEX_64.fullmatch(text):
        problem += " (the value looks like 64 hex digits, which are not accepted; encode the 32 bytes as base64)"
    elif len(raw) == 2 * PUBLIC_KEY_LENGTH:
        problem += (
            " (the length of a libsodium secret key, which contains the private seed; "
            "send only the 32-byte public key)"
        )
    _reject(field, problem)


def _parse_pem(text: str, field: str) -> bytes:
    labels = _PEM_LABEL.findall(text)
    if len(labels) != 1:
        _reject(field, f"{len(labels)} PEM BEGIN lines where exactly one 'PUBLIC KEY' block is accepted")
    if labels[0] != "PUBLIC KEY":
        _reject(field, f"a PEM block labelled {labels[0]!r}; only 'PUBLIC KEY' (SubjectPublicKeyInfo) is accepted")

    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm) as exc:
        logger.debug("PEM public key did not parse: %s", exc)
        _reject(field, "a PEM 'PUBLIC KEY' block that does not parse as SubjectPublicKeyInfo")
    if not isinstance(key, ed25519.Ed25519PublicKey):
        _reject(field, f"a PEM {_describe_key_type(key)} public key, not an Ed25519 one")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _describe_key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA ({key.key_size}-bit)"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC ({key.curve.name})"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, x25519.X25519PublicKey):
        return "X25519"
    if isinstance(key, x448.X448PublicKey):
        return "X448"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    return type(key).__name__


def _reject(field: str, problem: str) -> NoReturn:
    raise ValidationError(field, f"{EXPECTED_PUBLIC_KEY_FORMS}; got {problem}")


def load_private_key(value: object, field: str = "private_key") -> ed25519.Ed25519PrivateKey:
    """Return an `Ed25519PrivateKey` from a key object, a 32-byte seed (raw or base64) or PKCS#8 PEM.

    Text may carry surrounding whitespace, as read from a file or an environment variable. Raise
    `ValidationError(field, ...)` for anything else. The message never contains the value.
    """
    if isinstance(value, ed25519.Ed25519PrivateKey):
        return value
    if isinstance(value, bytes) and len(value) == SEED_LENGTH:
        return ed25519.Ed25519PrivateKey.from_private_bytes(value)

    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise ValidationError(field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got {len(value)} bytes") from None
    elif isinstance(value, str):
        text = value
    else:
        raise ValidationError(field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got a value of type {type(value).__name__}")

    if text.strip().startswith("-----BEGIN"):
        return _load_private_pem(text, field)
    try:
        seed = decode_base64(text.strip())
    except Base64Error as exc:
        raise ValidationError(field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got {exc}") from None
    if len(seed) != SEED_LENGTH:
        raise ValidationError(field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got base64 of {len(seed)} bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def _load_private_pem(text: str, field: str) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except TypeError:
        # cryptography raises TypeError for an encrypted key loaded without a password.
        raise ValidationError(field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got a password-protected PEM key") from None
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise ValidationError(
            field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got a PEM block that does not parse"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValidationError(field, f"{EXPECTED_PRIVATE_KEY_FORMS}; got a PEM {type(key).__name__}")
    return key
