"""Test data for the API load tests: a database of its own, an organization, an admin API key,
signing agents, the MCP registry and audit rows.

`prepare()` creates a fresh database (`aim_load_<hex>`) on the PostgreSQL server that AIM would
use under the data directory (or AIM_DATABASE_URL) and fills it through the AIM services. It writes
`fixture.json` into the work directory for the load generators (wrk's Lua script, Locust). That
file contains the admin API key and the agents' private keys of this throwaway organization, so
it is created with mode 0600. `LoadFixture.close()` drops the database unless asked to keep it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aim import identity
from aim.cache import close_cache
from aim.config import load_settings
from aim.db import migrate
from aim.db.audit_ingest import ingest_audit_rows
from aim.db.pool import Database
from aim.runtime import Runtime, configure_logging, make_redis, resolve_database_url, resolve_redis_url, set_runtime
from aim.services import agents, api_keys, mcp_registry, organizations
from aim.services.actor import system
from bench.common import audit_rows, create_database, database_url, drop_database

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MCP_REGISTRY = mcp_registry.BUNDLED_REGISTRY_FILE
# Granted to every load-test agent; db:read is a low-risk action, so a trusted agent is allowed.
AGENT_CAPABILITIES = ("db:read", "files:read")
VERIFY_ACTION = "db:read"
FIXTURE_FILE = "fixture.json"


@dataclasses.dataclass(frozen=True)
class SigningAgent:
    """An agent of the load-test organization whose private key the load generator holds."""

    agent_id: str
    key_id: str
    private_key_pem: str

    def signed_request(self, resource: str = "orders", timestamp: str | None = None) -> dict[str, Any]:
        """Build a verification request with a fresh nonce, signed like the AIM client does.

        Its timestamp is now, or `timestamp` (RFC 3339) for a request planned to be sent later.
        """
        from aim.client.common import signed_verification

        return signed_verification(uuid.UUID(self.agent_id), self.key_id, self.private_key_pem, VERIFY_ACTION,
                                   resource, None, timestamp)

    def __repr__(self) -> str:  # keeps the private key out of logs
        return f"SigningAgent({self.agent_id}, {self.key_id})"


@dataclasses.dataclass
class LoadFixture:
    """Everything a load run needs to reach the API under test and to act as the organization's admin."""

    work_dir: Path
    server_url: str
    database: str
    database_url: str
    redis_url: str
    redis_prefix: str
    organization_id: str
    api_key: str
    public_key: str
    agents: list[SigningAgent]
    keep_database: bool = False

    def server_env(self) -> dict[str, str]:
        """Environment variables that point an `aim api` process at this fixture's database and Redis."""
        return {
            "AIM_DATABASE_URL": self.database_url,
            "AIM_REDIS_URL": self.redis_url,
            "AIM_REDIS_PREFIX": self.redis_prefix,
        }

    def write(self) -> Path:
        """Write the fixture to `work_dir/fixture.json` (mode 0600) and return its path."""
        path = self.work_dir / FIXTURE_FILE
        fields = dataclasses.asdict(self)
        fields["work_dir"] = str(self.work_dir)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(fields, handle)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "LoadFixture":
        fields = json.loads(Path(path).read_text())
        fields["work_dir"] = Path(fields["work_dir"])
        fields["agents"] = [SigningAgent(**agent) for agent in fields["agents"]]
        return cls(**fields)

    def close(self) -> None:
        """Drop the fixture database and delete fixture.json, unless `keep_database` is set.

        The file contains the API key and the agents' private keys, and without the database it is of no use.
        """
        if self.keep_database:
            logger.info("kept load-test database %s", self.database)
            return
        drop_database(self.server_url, self.database)
        (self.work_dir / FIXTURE_FILE).unlink(missing_ok=True)
        logger.info("dropped load-test database %s and deleted %s", self.database, self.work_dir / FIXTURE_FILE)


def _open_runtime(url: str, redis_url: str, prefix: str) -> Runtime:
    settings = dataclasses.replace(load_settings(), database_url=url, redis_url=redis_url, redis_prefix=prefix)
    db = Database(settings, url)
    db.open()
    secret = db.fetch_value("instance.secret_key", "SELECT value FROM instance_settings WHERE key = 'secret_key'")
    runtime = Runtime(settings, db, make_redis(redis_url, settings), redis_url, str(secret).encode())
    # The services' cache hooks reach the cache through the process runtime.
    set_runtime(runtime)
    return runtime


def prepare(
    work_dir: Path, *, data_dir: Path | None = None, agent_count: int = 200, audit_row_count: int = 100_000,
    mcp_registry_file: Path = DEFAULT_MCP_REGISTRY, keep_database: bool = False,
) -> LoadFixture:
    """Create the load-test database and fill it; return the fixture, already written to `work_dir`.

    `data_dir` is the AIM data directory of the embedded PostgreSQL and Redis, used when
    AIM_DATABASE_URL and AIM_REDIS_URL are unset.
    """
    env = dict(os.environ)
    if data_dir is not None:
        env["AIM_DATA_DIR"] = str(data_dir.resolve())
    settings = load_settings(env)
    configure_logging(settings)
    work_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    server_url = resolve_database_url(settings)
    redis_url = resolve_redis_url(settings)
    tag = uuid.uuid4().hex[:10]
    database = f"aim_load_{tag}"
    create_database(server_url, database)
    url = database_url(server_url, database)
    migrate.upgrade(url)
    prefix = f"aimload:{tag}:"

    runtime = _open_runtime(url, redis_url, prefix)
    try:
        actor = system("load-test")
        organization = organizations.get_or_create(runtime.db, f"load-test-{tag}")
        organization_id = organization["id"]
        key = api_keys.create_api_key(runtime.db, organization_id, actor, name="load-test admin", role="admin")

        signing_agents = []
        for index in range(agent_count):
            pair = identity.generate_keypair()
            registered = agents.register_agent(
                runtime.db, organization_id, actor, name=f"load-agent-{index:05d}", agent_type="load-test",
                public_key=pair.public_key_base64(), capabilities=AGENT_CAPABILITIES,
            )
            signing_agents.append(SigningAgent(str(registered.agent["id"]), registered.agent["key_id"],
                                               pair.private_key_pem()))

        entries = mcp_registry.load_registry_file(mcp_registry_file)
        report = mcp_registry.import_registry(runtime.db, organization_id, actor, entries)

        now = datetime.now(timezone.utc)
        ingest_audit_rows(runtime.db, audit_rows(organization_id, audit_row_count, now - timedelta(days=30), now))
    finally:
        close_cache()
        set_runtime(None)
        runtime.close()

    fixture = LoadFixture(
        work_dir=work_dir, server_url=server_url, database=database, database_url=url, redis_url=redis_url,
        redis_prefix=prefix, organization_id=str(organization_id), api_key=key.secret,
        public_key=identity.generate_keypair().public_key_base64(), agents=signing_agents,
        keep_database=keep_database,
    )
    fixture.write()
    logger.info("load-test fixture ready in %.1f s: database %s, %d agents, %d MCP servers, %d audit rows",
                time.perf_counter() - started, database, agent_count, report.created, audit_row_count)
    return fixture


def add_fixture_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of `prepare()` to a load-test command line."""
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="directory for fixture.json, signed requests and the server log (default: a new "
                             "temporary directory)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="AIM data directory of the embedded PostgreSQL and Redis when AIM_DATABASE_URL and "
                             "AIM_REDIS_URL are unset (default: AIM_DATA_DIR or the per-user AIM data directory)")
    parser.add_argument("--agents", type=int, default=200, help="agents with signing keys to create (default 200)")
    parser.add_argument("--audit-rows", type=int, default=100_000,
                        help="audit rows to ingest, spread over the last 30 days (default 100000)")
    parser.add_argument("--mcp-registry", type=Path, default=DEFAULT_MCP_REGISTRY,
                        help="MCP Registry export file to import (default: the export bundled with AIM)")
    parser.add_argument("--keep-database", action="store_true",
                        help="keep the load-test database after the run (it is dropped by default)")


def prepare_from_args(args: argparse.Namespace, work_dir: Path) -> LoadFixture:
    """Run `prepare()` with the options that `add_fixture_options` added."""
    if args.agents < 1:
        raise SystemExit(f"error: --agents {args.agents} is invalid; expected at least 1")
    if args.audit_rows < 0:
        raise SystemExit(f"error: --audit-rows {args.audit_rows} is invalid; expected 0 or more")
    return prepare(work_dir, data_dir=args.data_dir, agent_count=args.agents, audit_row_count=args.audit_rows,
                   mcp_registry_file=args.mcp_registry, keep_database=args.keep_database)


def main(argv: list[str] | None = None) -> int:
    """Prepare a fixture and keep its database, for runs against a server started by hand (--url)."""
    parser = argparse.ArgumentParser(description="Create a load-test database and write its fixture.json.")
    add_fixture_options(parser)
    parser.add_argument("--drop", type=Path, metavar="FIXTURE_JSON", help="drop the database of this fixture and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.drop:
        fixture = LoadFixture.read(args.drop)
        fixture.keep_database = False
        fixture.close()
        return 0
    args.keep_database = True
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="aim-load-"))
    fixture = prepare_from_args(args, work_dir)
    env = " ".join(f"{name}={value}" for name, value in fixture.server_env().items())
    print(f"fixture: {work_dir / FIXTURE_FILE}")
    print(f"serve it with: {env} AIM_RATE_LIMIT_PER_MINUTE=0 aim api --host 127.0.0.1 --port 8081 --workers 2 "
          "--timeout-keep-alive 75")
    print(f"drop it with: python -m bench.load.fixtures --drop {work_dir / FIXTURE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
