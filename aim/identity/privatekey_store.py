"""Encryption of generated private keys kept for a later download.

AIM stores a generated private key only when a front offers a stored download, and then only
encrypted with AES-256-GCM under the key encryption key (KEK) from AIM_KEY_ENCRYPTION_KEY. A stored
value has the layout `version (1 byte) || nonce (12 bytes) || ciphertext and tag`. The version byte
and the caller's associated data are authenticated, so a value copied to another agent's row, or
decrypted under the wrong KEK, fails instead of returning a key.
"""

from __future__ import annotations

import logging
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aim.config import Settings
from aim.errors import AIMError, ConfigError
from aim.identity.encoding import Base64Error, decode_base64, encode_base64url
from aim.identity.keys import SEED_LENGTH

logger = logging.getLogger(__name__)

KEY_ENCRYPTION_KEY_ENV = "AIM_KEY_ENCRYPTION_KEY"
KEY_ENCRYPTION_KEY_LENGTH = 32

_FORMAT_VERSION = b"\x01"
_NONCE_LENGTH = 12  # the GCM nonce size that needs no extra hashing (NIST SP 800-38D)
_TAG_LENGTH = 16
_EXPECTED_KEK = (
    f"expected base64 (standard or URL-safe, padding optional) of exactly {KEY_ENCRYPTION_KEY_LENGTH} random "
    "bytes; generate one with "
    "`python -c 'from aim.identity import generate_key_encryption_key as g; print(g())'`"
)


class PrivateKeyDecryptionError(AIMError):
    """A stored private key failed authentication: wrong KEK, other associated data, or corrupt bytes."""


def generate_key_encryption_key() -> str:
    """Return a new random value for AIM_KEY_ENCRYPTION_KEY: 32 bytes as unpadded URL-safe base64."""
    return encode_base64url(secrets.token_bytes(KEY_ENCRYPTION_KEY_LENGTH))


class PrivateKeyVault:
    """Encrypts and decrypts 32-byte Ed25519 seeds under one KEK with AES-256-GCM."""

    def __init__(self, key_encryption_key: bytes) -> None:
        if not isinstance(key_encryption_key, bytes) or len(key_encryption_key) != KEY_ENCRYPTION_KEY_LENGTH:
            raise ValueError(f"PrivateKeyVault needs a {KEY_ENCRYPTION_KEY_LENGTH}-byte key encryption key")
        self._aead = AESGCM(key_encryption_key)

    def __repr__(self) -> str:
        return "PrivateKeyVault(<key hidden>)"

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivateKeyVault:
        """Build the vault from `settings.key_encryption_key`.

        Raise `ConfigError` naming AIM_KEY_ENCRYPTION_KEY when it is missing or is not base64 of
        exactly 32 bytes, so a front that needs stored keys stops at start-up. The message never
        contains the value.
        """
        text = settings.key_encryption_key
        if text is None:
            raise ConfigError(f"{KEY_ENCRYPTION_KEY_ENV} is not set; {_EXPECTED_KEK}")
        try:
            key = decode_base64(text)
        except Base64Error as exc:
            raise ConfigError(
                f"{KEY_ENCRYPTION_KEY_ENV} is not valid base64 (found {exc}); {_EXPECTED_KEK}"
            ) from None
        if len(key) != KEY_ENCRYPTION_KEY_LENGTH:
            raise ConfigError(f"{KEY_ENCRYPTION_KEY_ENV} decodes to {len(key)} bytes; {_EXPECTED_KEK}")
        logger.info("private key vault ready (AES-256-GCM, key from %s)", KEY_ENCRYPTION_KEY_ENV)
        return cls(key)

    def encrypt(self, private_key: bytes, associated_data: bytes) -> bytes:
        """Encrypt a 32-byte seed and return the stored form.

        `associated_data` binds the value to its owner, such as the agent id and key id; the same
        bytes must be passed to `decrypt`. Raise ValueError for a seed of another length.
        """
        if not isinstance(private_key, bytes) or len(private_key) != SEED_LENGTH:
            raise ValueError(f"encrypt expects a {SEED_LENGTH}-byte Ed25519 seed")
        # A random 96-bit nonce per value. NIST SP 800-38D bounds random nonces at 2**32 encryptions
        # per key, far beyond the number of generated agent keys.
        nonce = os.urandom(_NONCE_LENGTH)
        ciphertext = self._aead.encrypt(nonce, private_key, _FORMAT_VERSION + associated_data)
        return _FORMAT_VERSION + nonce + ciphertext

    def decrypt(self, stored: bytes, associated_data: bytes) -> bytes:
        """Return the 32-byte seed from a value made by `encrypt` with the same associated data.

        Raise `PrivateKeyDecryptionError` when the value is truncated, has an unknown version, or
        fails authentication.
        """
        if not isinstance(stored, bytes) or len(stored) != 1 + _NONCE_LENGTH + SEED_LENGTH + _TAG_LENGTH:
            raise PrivateKeyDecryptionError(
                "encrypted private key has the wrong length; the stored bytes are corrupt"
            )
        if stored[:1] != _FORMAT_VERSION:
            raise PrivateKeyDecryptionError(
                f"encrypted private key has unknown format version {stored[0]}; expected {_FORMAT_VERSION[0]}"
            )
        nonce = stored[1 : 1 + _NONCE_LENGTH]
        try:
            return self._aead.decrypt(nonce, stored[1 + _NONCE_LENGTH :], _FORMAT_VERSION + associated_data)
        except InvalidTag:
            raise PrivateKeyDecryptionError(
                "encrypted private key failed authentication: AIM_KEY_ENCRYPTION_KEY differs from the key "
                "it was encrypted with, the associated data differs, or the stored bytes are corrupt"
            ) from None
