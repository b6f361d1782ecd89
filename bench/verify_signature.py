"""Measure aim.identity.verify_signature calls per second on one core against bare `cryptography` calls.

Run: python3 bench/verify_signature.py [--seconds 1.0] [--repeat 5] [--cpu 0]

Each row is the best of `--repeat` timed runs of about `--seconds` each, taken in rounds that time
every row once, so the figure is the rate with the least interference from other processes. The
message is a 227-byte canonical request with the fields of a verification request. Rows:

- bare: `Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)` with the key loaded on every call.
- bare, key object cached: `key.verify(sig, msg)` on a key object built once.
- verify_signature, warm: the same key every call, so the key check comes from the LRU cache.
- verify_signature, cold: a new key on every call from a pool larger than the cache, so every
  call pays libsodium's point check and the key load.
- bare, key object cached, bad signature: the cached key object on a bit-flipped signature.
- verify_signature, bad signature: the same bit-flipped signature, a full verify that then fails.
- verify_signature, malformed: a 63-byte signature, rejected before any curve arithmetic.
"""

from __future__ import annotations

import argparse
import os
import platform
import timeit
from collections.abc import Callable

from cryptography import __version__ as cryptography_version
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aim.identity import canonical_request, generate_keypair, load_verification_key, sign, verify_signature

REQUEST = {
    "agent_id": "3f1c2d9e-7b4a-4c1e-9a51-0d6f3c2b1a90",
    "action": "db:read",
    "resource": "postgres://orders/customers",
    "timestamp": 1767225600,
    "nonce": "pX0yq3Jc9s0aB1c2D3e4Fg",
    "context": {"risk_class": "medium", "reason": "nightly report"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="target duration of one timed run, in seconds")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row; the best one is reported")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin the process to (Linux only)")
    parser.add_argument(
        "--cold-keys",
        type=int,
        default=10_000,
        help="distinct keys cycled in the cold row; must exceed the 8192-entry key cache",
    )
    return parser.parse_args()


def best_rates(functions: list[Callable[[], object]], seconds: float, repeat: int) -> list[float]:
    """Return the best calls/s of each function over `repeat` rounds.

    Each round times every function once, in turn, so that a burst of load from other processes
    lowers one round of every row instead of every round of one row.
    """
    timers = [timeit.Timer(function) for function in functions]
    numbers = []
    for timer in timers:
        number, elapsed = timer.autorange()
        numbers.append(max(1, int(number * seconds / elapsed)))
    best = [float("inf")] * len(timers)
    for _ in range(repeat):
        for index, (timer, number) in enumerate(zip(timers, numbers)):
            best[index] = min(best[index], timer.timeit(number) / number)
    return [1.0 / seconds_per_call for seconds_per_call in best]


def main() -> None:
    args = parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    pair = generate_keypair()
    message = canonical_request(REQUEST)
    signature = sign(pair.private_key, message)
    bad_signature = signature[:10] + bytes([signature[10] ^ 0x01]) + signature[11:]
    cached_key = Ed25519PublicKey.from_public_bytes(pair.public_key)

    cold_pairs = []
    for _ in range(args.cold_keys):
        cold = generate_keypair()
        cold_pairs.append((cold.public_key, sign(cold.private_key, message)))
    cold_index = 0

    def bare() -> None:
        Ed25519PublicKey.from_public_bytes(pair.public_key).verify(signature, message)

    def bare_cached() -> None:
        cached_key.verify(signature, message)

    def bare_cached_bad() -> None:
        try:
            cached_key.verify(bad_signature, message)
        except InvalidSignature:
            return
        raise AssertionError("bad signature accepted")

    def aim_warm() -> None:
        if not verify_signature(pair.public_key, message, signature):
            raise AssertionError("valid signature rejected")

    def aim_cold() -> None:
        nonlocal cold_index
        public_key, cold_signature = cold_pairs[cold_index]
        cold_index = (cold_index + 1) % len(cold_pairs)
        if not verify_signature(public_key, message, cold_signature):
            raise AssertionError("valid signature rejected")

    def aim_bad() -> None:
        if verify_signature(pair.public_key, message, bad_signature):
            raise AssertionError("bad signature accepted")

    def aim_malformed() -> None:
        verify_signature(pair.public_key, message, signature[:63])

    # Sanity check: the bare call really verifies, and a bad signature really fails there too.
    bare()
    try:
        cached_key.verify(bad_signature, message)
    except InvalidSignature:
        pass
    else:
        raise AssertionError("bare verify accepted a bad signature")
    load_verification_key.cache_clear()

    rows = [
        ("bare: from_public_bytes(pk).verify", bare),
        ("bare, key object cached: key.verify", bare_cached),
        ("bare, key object cached, bad signature", bare_cached_bad),
        ("verify_signature, warm key cache", aim_warm),
        ("verify_signature, cold (new key each call)", aim_cold),
        ("verify_signature, bad signature", aim_bad),
        ("verify_signature, malformed (63 bytes)", aim_malformed),
    ]
    print(
        f"python {platform.python_version()}, cryptography {cryptography_version}, "
        f"{openssl_backend.openssl_version_text()}, pinned to CPU {args.cpu}, message {len(message)} bytes"
    )
    print(f"best of {args.repeat} runs of about {args.seconds} s each")
    print(f"{'case':<46} {'calls/s':>12} {'us/call':>9} {'vs bare':>8}")
    rates = best_rates([function for _, function in rows], args.seconds, args.repeat)
    baseline = rates[0]
    for (name, _), rate in zip(rows, rates):
        print(f"{name:<46} {rate:>12,.0f} {1e6 / rate:>9.1f} {rate / baseline:>7.2f}x")


if __name__ == "__main__":
    main()
