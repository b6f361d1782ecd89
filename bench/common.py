"""Shared pieces of the audit benchmarks: connecting to a benchmark database, audit rows, percentiles.

Benchmarks never write into the AIM database itself. They use their own database on the same
PostgreSQL server, the one AIM_DATABASE_URL names or the embedded server under the data directory,
and apply the AIM migrations to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import sql

from aim.config import Settings, load_settings
from aim.db import migrate
from aim.db.pool import Database
from aim.runtime import configure_logging, resolve_database_url

ACTIONS = (
    "agent.create", "agent.update", "agent.verify", "agent.suspend", "agent.key_rotate", "capability.grant",
    "capability.revoke", "mcp_server.attest", "alert.acknowledge", "alert.resolve", "user.login", "api_key.create",
)
ACTOR_TYPES = ("user", "agent", "agent", "agent", "api_key", "system")
RESULTS = ("success",) * 8 + ("failure", "denied")


def add_connection_options(parser: argparse.ArgumentParser, default_database: str) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="data directory of the embedded PostgreSQL when AIM_DATABASE_URL is unset "
             "(default: AIM_DATA_DIR or the per-user AIM data directory)",
    )
    parser.add_argument(
        "--database", default=default_database,
        help=f"benchmark database on that server, created and migrated if missing (default: {default_database})",
    )


def _settings(data_dir: Path | None) -> Settings:
    env = dict(os.environ)
    if data_dir is not None:
        # Absolute, because the embedded Redis URL and socket paths break on relative ones.
        env["AIM_DATA_DIR"] = str(data_dir.resolve())
    return load_settings(env)


def database_url(server_url: str, name: str) -> str:
    """Return `server_url` pointing at database `name`, for host and socket URLs alike."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def create_database(server_url: str, name: str) -> bool:
    """Create database `name` unless it exists. Return whether it was created."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclasses.dataclass
class BenchDatabase:
    """An open pool on a benchmark database and the instance secret that signs its cursors."""

    db: Database
    url: str
    server_url: str
    secret_key: bytes

    def close(self) -> None:
        self.db.close()


def open_database(data_dir: Path | None, database: str) -> BenchDatabase:
    """Open benchmark database `database` with AIM's settings, pool and migrations.

    The server is the one AIM would use: AIM_DATABASE_URL, or the embedded PostgreSQL under the
    data directory, started if needed. Redis is not needed and not started.
    """
    settings = _settings(data_dir)
    configure_logging(settings)
    server_url = resolve_database_url(settings)
    create_database(server_url, database)
    url = database_url(server_url, database)
    migrate.upgrade(url)
    db = Database(dataclasses.replace(settings, database_url=url), url)
    db.open()
    secret = settings.secret_key or db.fetch_value(
        "instance.secret_key", "SELECT value FROM instance_settings WHERE key = 'secret_key'"
    )
    return BenchDatabase(db, url, server_url, str(secret).encode())


def machine_description(conn: psycopg.Connection) -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = conn.execute("SHOW server_version").fetchone()
    server = next(iter(version.values())) if isinstance(version, dict) else version[0]
    return (f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, PostgreSQL {server}, "
            f"speed {python_loop_ns():.0f} ns per Python loop step")


def python_loop_ns(steps: int = 2_000_000) -> float:
    """Return the best of three timings of a plain Python loop, in nanoseconds per step.

    Machines of the same description have differed about threefold in speed, so each benchmark
    prints this figure to show which runs can be compared.
    """
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for step in range(steps):
            total += step
        best = min(best, time.perf_counter() - started)
    return best * 1e9 / steps


def server_cpu_seconds(conn: psycopg.Connection) -> float | None:
    """Return the CPU time used so far by the PostgreSQL server of `conn` and its processes, or None.

    It sums user and system time from /proc for the postmaster, its exited children (such as
    parallel workers, once reaped) and its live children, so it covers every backend and background
    process of the server, including other clients' work. Returns None when the server's data
    directory or processes cannot be read, as for a server on another machine.
    """
    row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    data_directory = Path(next(iter(row.values())) if isinstance(row, dict) else row[0])
    try:
        postmaster = int((data_directory / "postmaster.pid").read_text().split()[0])
        ticks = 0
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                # Fields after the command name: state, ppid, ..., utime (12th), stime, cutime, cstime.
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat_file.parent.name)
            if pid == postmaster:
                ticks += sum(int(value) for value in fields[11:15])
            elif int(fields[1]) == postmaster:
                ticks += int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def audit_rows(organization_id: uuid.UUID, count: int, start: datetime, end: datetime) -> Iterator[tuple]:
    """Yield `count` audit rows as tuples, spread evenly from `start` to `end` in time order.

    Values cycle through a fixed set of actors, actions and resources, so the list indexes grow as
    they would with real traffic: 200 actors, 12 actions, 1,000 resources.
    """
    actors = [f"agent-{index:04d}" for index in range(200)]
    resources = [str(uuid.UUID(int=index + 1)) for index in range(1000)]
    addresses = [f"10.{index // 250}.{index % 250}.{index % 7 + 1}" for index in range(500)]
    step = (end - start) / max(count, 1)
    for index in range(count):
        yield (
            organization_id,
            start + step * index,
            ACTOR_TYPES[index % len(ACTOR_TYPES)],
            actors[index * 7 % len(actors)],
            ACTIONS[index * 5 % len(ACTIONS)],
            "agent",
            resources[index * 13 % len(resources)],
            RESULTS[index % len(RESULTS)],
            addresses[index % len(addresses)],
            "aim-client/0.1",
            f"req-{index:010d}",
            {"seq": index},
        )


def percentiles_ms(samples_s: list[float]) -> tuple[float, float]:
    """Return (p50, p95) of `samples_s` in milliseconds, by numpy's linear interpolation."""
    p50, p95 = np.percentile(np.asarray(samples_s) * 1000.0, [50, 95])
    return float(p50), float(p95)
