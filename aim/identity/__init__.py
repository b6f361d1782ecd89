"""Agent cryptographic identity: Ed25519 keys, canonical requests, signatures, rotation and nonces.

Pure functions with no database access. The verifier builds on `parse_public_key` (registration),
`canonical_request`, `decode_signature` and `verify_signature` (each request), and
`select_verification_keys` (key rotation). Clients and the simulator use `generate_keypair`,
`sign_request` and `new_nonce`.
"""

from aim.identity.canonical import SIGNATURE_FIELD, canonical_request
from aim.identity.encoding import Base64Error, decode_base64, encode_base64, encode_base64url
from aim.identity.keys import (
    EXPECTED_PUBLIC_KEY_FORMS,
    KEY_ID_PREFIX,
    PUBLIC_KEY_LENGTH,
    KeyPair,
    compute_key_id,
    generate_keypair,
    is_valid_public_key,
    load_private_key,
    load_verification_key,
    parse_public_key,
    public_key_pem,
)
from aim.identity.nonces import NONCE_MAX_LENGTH, NONCE_MIN_LENGTH, new_nonce, validate_nonce
from aim.identity.privatekey_store import (
    KEY_ENCRYPTION_KEY_ENV,
    PrivateKeyDecryptionError,
    PrivateKeyVault,
    generate_key_encryption_key,
)
from aim.identity.rotation import DEFAULT_KEY_GRACE_PERIOD, previous_key_valid_until, select_verification_keys
from aim.identity.signing import (
    ED25519_GROUP_ORDER,
    SIGNATURE_LENGTH,
    decode_signature,
    has_canonical_scalar,
    sign,
    sign_request,
    verify_signature,
)

__all__ = [
    "Base64Error",
    "DEFAULT_KEY_GRACE_PERIOD",
    "ED25519_GROUP_ORDER",
    "EXPECTED_PUBLIC_KEY_FORMS",
    "KEY_ENCRYPTION_KEY_ENV",
    "KEY_ID_PREFIX",
    "KeyPair",
    "NONCE_MAX_LENGTH",
    "NONCE_MIN_LENGTH",
    "PUBLIC_KEY_LENGTH",
    "PrivateKeyDecryptionError",
    "PrivateKeyVault",
    "SIGNATURE_FIELD",
    "SIGNATURE_LENGTH",
    "canonical_request",
    "compute_key_id",
    "decode_base64",
    "decode_signature",
    "encode_base64",
    "encode_base64url",
    "generate_key_encryption_key",
    "generate_keypair",
    "has_canonical_scalar",
    "is_valid_public_key",
    "load_private_key",
    "load_verification_key",
    "new_nonce",
    "parse_public_key",
    "previous_key_valid_until",
    "public_key_pem",
    "select_verification_keys",
    "sign",
    "sign_request",
    "validate_nonce",
    "verify_signature",
]
