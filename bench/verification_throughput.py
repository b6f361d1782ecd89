"""Verification-service throughput against its lower bound: a bare verify plus one INSERT.

Both loops run in one process on one connection pool, one request at a time:
- bound: `Ed25519PublicKey.verify` on a prepared signature, then one INSERT into verification_events;
- service: `aim.services.verification.verify` on a freshly signed request (canonical JSON, the seven
  checks, nonce in Redis, event + audit row + last-seen update in one transaction).

Target: the service reaches at least 60 % of the bound's requests per second.

    python3 bench/verification_throughput.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric import ed25519

from aim import identity
from aim.runtime import get_runtime
from aim.services import agents, organizations, verification
from aim.services.actor import Actor

ADMIN = Actor("user", "bench", role="admin")


def _signed(agent_id: uuid.UUID, private_key) -> dict:
    fields = {
        "agent_id": str(agent_id),
        "action": "db:read",
        "resource": "customers/42",
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "nonce": identity.new_nonce(),
    }
    fields["signature"] = identity.sign_request(private_key, fields)
    return fields


def run_bound(runtime, organization_id, agent_id, private_key, requests: int) -> float:
    """Requests per second of one cryptography verify plus one INSERT, each in its own transaction."""
    message = identity.canonical_request({"agent_id": str(agent_id), "action": "db:read", "nonce": "x" * 22})
    signature = private_key.sign(message)
    public_key = private_key.public_key()
    db = runtime.db
    started = time.perf_counter()
    for _ in range(requests):
        public_key.verify(signature, message)
        with db.transaction() as conn:
            db.execute(
                "bench.bound_insert",
                """INSERT INTO verification_events (organization_id, agent_id, action, resource, risk_class,
                                                    decision, reason, nonce)
                   VALUES (%s, %s, 'db:read', 'customers/42', 'low', 'allowed', 'ok', %s)""",
                (organization_id, agent_id, identity.new_nonce()),
                conn=conn,
            )
    return requests / (time.perf_counter() - started)


def run_service(runtime, organization_id, agent_id, private_key, requests: int) -> tuple[float, dict[str, int]]:
    reasons: dict[str, int] = {}
    # Signing is the agent's work, so requests are signed before the clock starts.
    signed = [_signed(agent_id, private_key) for _ in range(requests)]
    started = time.perf_counter()
    for request in signed:
        decision = verification.verify(
            runtime.db, runtime.redis, runtime.settings.redis_prefix, organization_id, agent_id, request,
        )
        reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
    return requests / (time.perf_counter() - started), reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per loop (default 3,000)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    runtime = get_runtime()
    organization = organizations.get_or_create(runtime.db, f"bench-verify-{uuid.uuid4().hex[:8]}")
    registered = agents.register_agent(runtime.db, organization["id"], ADMIN, name="bench-agent",
                                       capabilities=["db:*"])
    agent_id = registered.agent["id"]
    private_key = identity.load_private_key(registered.private_key_pem)
    assert isinstance(private_key, ed25519.Ed25519PrivateKey)

    # Warm the pools, the caches and the partition check before timing.
    run_service(runtime, organization["id"], agent_id, private_key, 50)
    run_bound(runtime, organization["id"], agent_id, private_key, 50)

    bound = run_bound(runtime, organization["id"], agent_id, private_key, args.requests)
    service, reasons = run_service(runtime, organization["id"], agent_id, private_key, args.requests)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"bound (verify + 1 INSERT)   {bound:10,.0f} requests/s")
    print(f"verification service        {service:10,.0f} requests/s   decisions: {reasons}")
    print(f"service / bound             {service / bound:10.0%}   (target >= 60 %)")


if __name__ == "__main__":
    main()
