"""The `aim simulate` command: set up a simulated organization, backfill history, send live traffic.

`aim.cli` mounts `simulate` as the command. `app`, a Typer app with `simulate` as its callback,
runs it on its own, as the tests do.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from aim.errors import AIMError
from aim.simulate import backfill as backfill_module
from aim.simulate import periodic, timeline
from aim.simulate.live import ActionExecutor, LiveStats, PeriodicTask, run_actions
from aim.simulate.population import Population, prepare_population
from aim.simulate.scenario import TrafficPlanner
from aim.simulate.target import HttpTarget, LocalTarget

logger = logging.getLogger(__name__)

app = typer.Typer(add_completion=False)
console = Console()
T = TypeVar("T")

SUMMARY_INTERVAL_S = 5.0


def _fail_cleanly(func: Callable[[], T]) -> T:
    try:
        return func()
    except AIMError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


@app.callback(invoke_without_command=True)
def simulate(
    org: str = typer.Option("demo", "--org", help="Organization to simulate (created if missing)."),
    agents: int = typer.Option(50, "--agents", min=1, max=100_000, help="Number of simulated agents."),
    mcp_registry: Optional[Path] = typer.Option(
        None, "--mcp-registry", exists=True, dir_okay=False, readable=True,
        help="MCP Registry export file to import servers from; without it a built-in set of example servers is used.",
    ),
    bad_share: float = typer.Option(
        0.1, "--bad-share", min=0.0, max=1.0,
        help="Share of actions that misbehave, from 0 to 1: tampered signatures, replays, stale timestamps, "
             "missing capabilities, inactive agents and drifted MCP servers.",
    ),
    rate: float = typer.Option(20.0, "--rate", min=0.001, max=10_000.0, help="Live actions per second."),
    duration: Optional[float] = typer.Option(
        None, "--duration", min=0.0,
        help="Seconds of live traffic; 0 runs until Ctrl-C. "
             "Default: until Ctrl-C, or no live traffic after --backfill.",
    ),
    backfill: int = typer.Option(
        0, "--backfill", min=0, max=timeline.MAX_DAYS, help="Days of past history to write first (0: none)."
    ),
    audit_rows: Optional[int] = typer.Option(
        None, "--audit-rows", min=1, max=backfill_module.MAX_AUDIT_ROWS,
        help="Backfill volume in actions, one audit row each. Default: 1,000,000 per 30 days of --backfill.",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed of the traffic model; the same seed repeats the same plan. Default: random."
    ),
    workers: int = typer.Option(4, "--workers", min=1, max=256, help="Concurrent live requests."),
    via_api: Optional[str] = typer.Option(
        None, "--via-api",
        help="Base URL of a running AIM API (such as http://127.0.0.1:8080); live traffic goes through it over "
             "HTTP with an API key the simulator creates, so request latency is measured by the API.",
    ),
) -> None:
    """Drive AIM's real code paths with simulated agents, so the dashboard shows real activity.

    Agents of several types get real Ed25519 keys, kept in <data dir>/simulator/<org>.json (mode
    0600), so later runs reuse them. Live mode signs requests and sends them through verification
    and MCP attestation; --backfill writes days of past history through COPY first.
    """
    from aim.runtime import get_runtime

    runtime = _fail_cleanly(get_runtime)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    console.print(f"organization {org!r}, {agents} agents, bad share {bad_share:g}, seed {seed}")

    if backfill:
        _fail_cleanly(lambda: _backfill(runtime, org, agents, mcp_registry, bad_share, backfill, audit_rows, seed))
        if duration is None:
            return
    population = _fail_cleanly(lambda: _setup(runtime, org, agents, mcp_registry, seed))
    _live(runtime, population, bad_share=bad_share, rate=rate, duration=duration or 0.0, seed=seed, workers=workers,
          via_api=via_api)


def _setup(runtime, org: str, agents: int, mcp_registry: Path | None, seed: int, **options) -> Population:
    with _progress() as progress:
        task = progress.add_task("agents", total=agents)
        population = prepare_population(
            runtime, organization=org, agent_count=agents, seed=seed, mcp_registry=mcp_registry,
            progress=lambda done, total: progress.update(task, completed=done, total=total), **options,
        )
    console.print(
        f"setup: {len(population.agents)} agents ({population.created} created, {population.reused} reused, "
        f"{population.rekeyed} given new keys), {len(population.inactive)} suspended or revoked, "
        f"{len(population.servers)} MCP servers; keys in {population.keystore_path}"
    )
    for name in population.skipped:
        console.print(f"  left out {name}: revoked and its key is not in the key store")
    return population


def _backfill(runtime, org: str, agents: int, mcp_registry: Path | None, bad_share: float, days: int,
              audit_rows: int | None, seed: int) -> None:
    from aim.trust.gather import database_now

    now = database_now(runtime.db)
    registered_at = timeline.registration_times(timeline.window_start(now, days), now, seed)
    population = _setup(
        runtime, org, agents, mcp_registry, seed, registered_at=registered_at, apply_status=False,
        attest_baselines=False,
    )
    volume = audit_rows if audit_rows is not None else backfill_module.default_audit_rows(days)
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def report_progress(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done, total=total)

        report = backfill_module.run_backfill(
            runtime, population, days=days, audit_rows=volume, bad_share=bad_share, seed=seed,
            progress=report_progress,
        )
    denied = ", ".join(f"{reason} {count}" for reason, count in sorted(report.denied.items(), key=lambda i: -i[1]))
    console.print(
        f"backfill {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC in {report.seconds:.1f} s: "
        f"{report.audit_rows:,} audit rows ({report.audit_rows_per_second:,.0f}/s), "
        f"{report.verification_events:,} verification events (denied: {denied or 'none'}), "
        f"{report.attestations:,} attestations, {report.alerts_raised:,} alerts, "
        f"{report.trust_history_rows:,} trust history rows, {report.status_changes} status changes, "
        f"{report.samples_checked} sampled signatures checked"
    )
    if report.snapshots_skipped:
        console.print(f"  {report.snapshots_skipped} daily trust snapshots were already stored and kept")


def _traffic_target(runtime, population: Population, via_api: str | None):
    """Return a target for the in-process services, or for the API at `via_api` with a new analyst API key."""
    if via_api is None:
        return LocalTarget(runtime, population.organization_id)
    from urllib.parse import urlsplit

    from aim.services import api_keys
    from aim.services.actor import system

    parts = urlsplit(via_api)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        typer.echo(f"error: --via-api {via_api!r} is invalid; expected a URL such as http://127.0.0.1:8080", err=True)
        raise typer.Exit(2)
    created = _fail_cleanly(lambda: api_keys.create_api_key(
        runtime.db, population.organization_id, system("simulator"), name="simulator live traffic", role="analyst",
    ))
    console.print(f"sending live traffic through the API at {via_api}")
    return HttpTarget(via_api, created.secret)


def _live(runtime, population: Population, *, bad_share: float, rate: float, duration: float, seed: int,
          workers: int, via_api: str | None = None) -> None:
    if not population.active:
        typer.echo("error: no verified agents with keys; nothing can act", err=True)
        raise typer.Exit(2)
    planner = _fail_cleanly(lambda: TrafficPlanner(
        population.active, population.inactive, population.servers, bad_share=bad_share,
        rng=random.Random(f"{seed}:live"),
    ))
    executor = ActionExecutor(_traffic_target(runtime, population, via_api))
    stats = LiveStats()
    tasks = periodic.local_tasks(runtime, population.organization_id)
    tasks.append(PeriodicTask("summary", SUMMARY_INTERVAL_S, lambda: console.print(
        f"{datetime.now():%H:%M:%S} {stats.summary()}", highlight=False
    )))
    console.print(
        f"live traffic at {rate:g} actions/s {'until Ctrl-C' if not duration else f'for {duration:g} s'}; "
        f"trust recalculated every {periodic.TRUST_INTERVAL_S:g} s"
    )
    stop = threading.Event()
    _fail_cleanly(lambda: run_actions(
        planner, executor.execute, rate=rate, duration=duration, workers=workers, periodic=tasks, stop=stop,
        stats=stats,
    ))
    console.print("live traffic stopped")
