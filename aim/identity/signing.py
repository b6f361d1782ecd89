"""Ed25519 signatures over canonical requests.

`sign_request` is for the client and the simulator. `decode_signature` and `verify_signature` are for
the verifier, and neither raises: a malformed signature is a denial, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature

from aim.identity.canonical import canonical_request
from aim.identity.encoding import decode_base64, encode_base64
from aim.identity.keys import load_private_key, load_verification_key

logger = logging.getLogger(__name__)

SIGNATURE_LENGTH = 64
# L, the order of the Ed25519 prime-order subgroup (RFC 8032, section 5.1).
ED25519_GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493

# Longer text cannot be base64 of 64 bytes (88 characters when padded), so it is rejected before
# any decoding work.
_MAX_SIGNATURE_TEXT_LENGTH = 88


def sign(private_key: object, message: bytes) -> bytes:
    """Sign `message` and return the 64-byte signature.

    `private_key` takes any form that `load_private_key` accepts, and a bad one raises ValidationError.
    """
    return load_private_key(private_key).sign(message)


def sign_request(private_key: object, fields: Mapping[str, object]) -> str:
    """Sign the canonical form of `fields` and return the signature as standard padded base64.

    Raise ValidationError for a bad private key or fields that RFC 8785 cannot represent.
    """
    return encode_base64(sign(private_key, canonical_request(fields)))


def decode_signature(text: object) -> bytes | None:
    """Return the 64 signature bytes encoded in `text`, or None when `text` is anything else.

    `text` must be strict base64 (standard or URL-safe, padding optional, canonical trailing bits)
    of exactly 64 bytes, as `str` or ASCII `bytes`. Never raises.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or len(text) > _MAX_SIGNATURE_TEXT_LENGTH:
        return None
    try:
        signature = decode_base64(text)
    except ValueError:  # Base64Error, and anything else the decoder might raise
        return None
    if len(signature) != SIGNATURE_LENGTH:
        return None
    return signature


def has_canonical_scalar(signature: bytes) -> bool:
    """Return whether the scalar S of a 64-byte signature (bytes 32 to 63, little-endian) is below L.

    RFC 8032 requires S < L. A signature with S replaced by S + L satisfies the verification
    equation too, so without this check one signature could be turned into another valid one.
    """
    return int.from_bytes(signature[32:], "little") < ED25519_GROUP_ORDER


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Return True only when `signature` is a valid Ed25519 signature of `message` by `public_key`.

    Return False, never raising, for arguments that are not `bytes` and for a public key that
    fails `is_valid_public_key`. Return False too for a signature that is not 64 bytes or whose
    scalar S is not below the group order L. The S check runs here rather than relying on the
    OpenSSL build, so malleated signatures (S + L) fail with every OpenSSL version.
    """
    if not (isinstance(public_key, bytes) and isinstance(message, bytes) and isinstance(signature, bytes)):
        return False
    if len(signature) != SIGNATURE_LENGTH:
        return False
    if not has_canonical_scalar(signature):
        return False

    try:
        key = load_verification_key(public_key)
        if key is None:
            return False
        key.verify(signature, message)
    except InvalidSignature:
        return False
    except Exception:
        # Not expected from any input: the checks above leave only InvalidSignature. Logged so that
        # a library change shows up, but still a denial.
        logger.warning("Ed25519 verify raised unexpectedly; treating the signature as invalid", exc_info=True)
        return False
    return True
