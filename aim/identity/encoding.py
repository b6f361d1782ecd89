"""Strict base64 for keys and signatures.

AIM accepts the standard (`+/`) and the URL-safe (`-_`) alphabet, with or without `=` padding, and
nothing looser: no whitespace, no mixed alphabets, and no non-canonical encodings. An encoding is
non-canonical when the unused low bits of its last character are not zero. The stdlib decoder
ignores those bits, so two different strings would decode to the same bytes and a truncated or
altered value could pass unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import re

# One pass over the value in C. The slower per-character scan in `_describe_bad_character` only runs
# to build the error message.
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_STANDARD_ONLY = re.compile(r"[+/]")
_URLSAFE_ONLY = re.compile(r"[-_]")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


class Base64Error(ValueError):
    """A value is not strict base64. The message is a noun phrase that fits after "got"."""


def encode_base64(data: bytes) -> str:
    """Encode `data` as standard base64 with padding, the form AIM sends."""
    return base64.b64encode(data).decode("ascii")


def encode_base64url(data: bytes) -> str:
    """Encode `data` as URL-safe base64 without padding, for values that go into URLs or env files."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode strict base64 in either alphabet, padded or not.

    Raise `Base64Error` for an empty value, a character outside both alphabets (whitespace and
    non-ASCII included), a mix of the two alphabets, misplaced or wrong padding, a length that no
    base64 encoding has, or non-canonical trailing bits.
    """
    if not text:
        raise Base64Error("an empty value")
    if _BASE64_TEXT.fullmatch(text) is None:
        raise Base64Error(_describe_bad_character(text))
    if _STANDARD_ONLY.search(text) and _URLSAFE_ONLY.search(text):
        raise Base64Error("a mix of the standard ('+', '/') and URL-safe ('-', '_') base64 alphabets")

    body = text.rstrip("=")
    padding = len(text) - len(body)
    if len(body) % 4 == 1:
        raise Base64Error(f"{len(body)} base64 characters, a length that no base64 encoding has")
    expected_padding = -len(body) % 4
    if padding and padding != expected_padding:
        raise Base64Error(f"{padding} '=' padding characters where a padded encoding has {expected_padding}")

    standard = body.translate(_URLSAFE_TO_STANDARD)
    try:
        data = binascii.a2b_base64(standard + "=" * expected_padding, strict_mode=True)
    except binascii.Error as exc:  # unreachable after the checks above, but never let it escape
        raise Base64Error(f"base64 that does not decode ({exc})") from None

    # Re-encoding gives the one canonical form of these bytes. Any difference can only sit in the
    # unused low bits of the last character.
    if base64.b64encode(data).decode("ascii").rstrip("=") != standard:
        raise Base64Error(
            f"non-canonical base64 of {len(data)} bytes: the unused low bits of the last character are not "
            "zero, so the value was probably truncated or altered"
        )
    return data


def _describe_bad_character(text: str) -> str:
    for position, char in enumerate(text):
        if char == "=" or (char.isascii() and (char.isalnum() or char in "+/-_")):
            continue
        if char.isspace():
            return (
                f"whitespace (U+{ord(char):04X}) at position {position}; "
                "remove spaces and line breaks from the value"
            )
        if not char.isascii():
            return f"the non-ASCII character U+{ord(char):04X} at position {position}"
        return f"the character {char!r} at position {position}, which is in neither base64 alphabet"

    # Every character is in the alphabet, so the padding is what failed the match.
    position = text.index("=")
    if text[position:].strip("="):
        return f"misplaced '=' padding at position {position}; padding may only end the value"
    return f"{len(text) - position} '=' padding characters where base64 has at most 2"
