"""The `aim` command."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from aim.config import load_settings
from aim.errors import AIMError

logger = logging.getLogger(__name__)

app = typer.Typer(help="AIM: Agent Identity Management.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Schema and storage maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
trust_app = typer.Typer(help="Trust scores.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")
mcp_app = typer.Typer(help="MCP servers.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")


def _mount_subcommands() -> None:
    # Imported here so `aim --help` stays fast and a missing optional front does not break the CLI.
    from aim.api import commands as api_commands
    from aim.simulate.commands import simulate

    # A command rather than a sub-app, so its usage line shows no COMMAND that does not exist.
    app.command("simulate")(simulate)
    api_commands.register(app)


_mount_subcommands()

console = Console()
T = TypeVar("T")

# Tables whose row counts `aim status` reports. Large ones use the planner's estimate.
STATUS_TABLES = (
    "organizations", "users", "agents", "mcp_servers", "mcp_attestations", "verification_events",
    "trust_score_history", "alerts", "audit_logs", "api_keys", "metric_rollups",
)
EXACT_COUNT_LIMIT = 100_000


def _runtime():
    from aim.runtime import get_runtime

    return get_runtime()


def _fail_cleanly(func: Callable[[], T]) -> T:
    try:
        return func()
    except AIMError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (safe to run from several processes at once)."""
    from aim.db import migrate
    from aim.runtime import configure_logging, resolve_database_url

    def run() -> list[int]:
        settings = load_settings()
        configure_logging(settings)
        return migrate.upgrade(resolve_database_url(settings))

    applied = _fail_cleanly(run)
    if applied:
        console.print(f"applied migrations: {', '.join(f'{v:04d}' for v in applied)}")
    else:
        console.print("schema is up to date")


@db_app.command("retention")
def db_retention(
    keep_months: int = typer.Option(..., "--keep-months", min=1, help="Months of audit log to keep, counting the current month."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the partitions that would be dropped, and drop none."),
) -> None:
    """Drop audit-log partitions older than --keep-months whole months."""
    from aim.db.partitions import apply_retention

    runtime = _fail_cleanly(_runtime)
    dropped = _fail_cleanly(lambda: apply_retention(runtime.db, keep_months, dry_run=dry_run))
    verb = "would drop" if dry_run else "dropped"
    if dropped:
        console.print(f"{verb} {len(dropped)} partition(s): {', '.join(dropped)}")
    else:
        console.print("no audit partitions are older than the retention window")


def _row_counts(db) -> dict[str, tuple[int, bool]]:
    """Return {table: (rows, is_estimate)}."""
    estimates = {
        row["name"]: int(row["rows"])
        for row in db.fetch_all(
            "status.estimates",
            """
            SELECT c.relname AS name,
                   CASE WHEN c.relkind = 'p' THEN
                        (SELECT coalesce(sum(greatest(p.reltuples, 0)), 0) FROM pg_inherits i
                         JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = c.oid)
                   ELSE greatest(c.reltuples, 0) END AS rows
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relname = ANY(%s)
            """,
            (list(STATUS_TABLES),),
        )
    }
    counts: dict[str, tuple[int, bool]] = {}
    for table in STATUS_TABLES:
        estimate = estimates.get(table, 0)
        if estimate < EXACT_COUNT_LIMIT:
            exact = db.fetch_value("status.count", f"SELECT count(*) FROM {table}")
            counts[table] = (int(exact), False)
        else:
            counts[table] = (estimate, True)
    return counts


@app.command("status")
def status() -> None:
    """Print the backends, schema version, row counts and pool statistics."""
    from aim.db import migrate

    runtime = _fail_cleanly(_runtime)
    backends = Table(title="Backends", show_header=False)
    backends.add_column("backend", no_wrap=True)
    # Fold long values (socket paths, URLs) onto several lines rather than cutting them with "…".
    backends.add_column("value", overflow="fold")
    for name, where in runtime.backend_description().items():
        backends.add_row(name, where)
    try:
        info = runtime.redis.info("server")
        backends.add_row("redis version", str(info.get("redis_version")))
    except Exception as exc:  # noqa: BLE001 - status reports Redis trouble instead of failing
        backends.add_row("redis", f"[red]unreachable: {exc}[/red]")
    with runtime.db.connection() as conn:
        version = migrate.current_version(conn)
        server_version = conn.execute("SHOW server_version").fetchone()["server_version"]
    backends.add_row("postgresql version", server_version)
    backends.add_row("schema version", f"{version:04d}" if version is not None else "none")
    console.print(backends)

    rows = Table(title="Rows")
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    for table, (count, is_estimate) in _row_counts(runtime.db).items():
        rows.add_row(table, f"about {count:,}" if is_estimate else f"{count:,}")
    console.print(rows)

    pools = Table(title="Connection pools")
    pools.add_column("pool")
    pools.add_column("statistic")
    pools.add_column("value", justify="right")
    for pool, stats in runtime.db.stats().items():
        for key, value in sorted(stats.items()):
            pools.add_row(pool, key, str(value))
    console.print(pools)


@trust_app.command("recalc")
def trust_recalc(
    org: str = typer.Option(None, "--org", help="Organization name; default: every organization."),
) -> None:
    """Recalculate trust scores now and write a history row for each change."""
    from aim import trust
    from aim.services import cache_hooks, organizations
    from aim.services.actor import system

    runtime = _fail_cleanly(_runtime)
    actor = system("cli").label

    def run() -> int:
        if org is None:
            return trust.recalculate_all(runtime.db, reason="manual recalculation", actor=actor)
        organization = organizations.get_by_name(runtime.db, org)
        return trust.recalculate_organization(runtime.db, organization["id"], reason="manual recalculation", actor=actor)

    try:
        changed = _fail_cleanly(run)
    finally:
        cache_hooks.scores_recalculated()
    console.print(f"trust recalculated: {changed} score(s) changed")


@mcp_app.command("import")
def mcp_import(
    file: str = typer.Option(None, "--file", help="Registry export file: a JSON list of servers or {\"servers\": [...]}."),
    url: str = typer.Option(None, "--url", help="Base URL of an MCP Registry; its /v0/servers API is paged."),
    org: str = typer.Option("default", "--org", help="Organization that receives the servers (created if missing)."),
) -> None:
    """Import MCP servers from the official MCP Registry format. Running it twice changes nothing."""
    from rich.progress import Progress

    from aim.services import mcp_servers, organizations
    from aim.services.actor import system

    if (file is None) == (url is None):
        typer.echo("error: give exactly one of --file FILE or --url URL", err=True)
        raise typer.Exit(2)
    runtime = _fail_cleanly(_runtime)
    # The entries are read first, so a missing or malformed file creates no organization.
    entries = _fail_cleanly(
        lambda: mcp_servers.load_registry_file(file) if file else list(mcp_servers.fetch_registry_pages(url))
    )
    organization = _fail_cleanly(lambda: organizations.get_or_create(runtime.db, org))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("importing MCP servers", total=len(entries))

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = _fail_cleanly(
            lambda: mcp_servers.import_registry(runtime.db, organization["id"], system("cli"), entries, progress=report)
        )
    console.print(
        f"imported into {org}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged, {len(result.skipped)} skipped"
    )
    for _index, reason in result.skipped[:20]:
        console.print(f"  skipped: {reason}", highlight=False)


@app.command("up")
def up(
    demo: bool = typer.Option(False, "--demo", help="Backfill 30 days of history, then run live simulated traffic."),
    mcp_registry: Path = typer.Option(
        None, "--mcp-registry", exists=True, dir_okay=False, readable=True,
        help="MCP Registry export file for --demo, such as aim/data/mcp-registry-seed-2025-05-16.json; without it "
             "a small built-in set of servers is used.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the API and the dashboard listen on."),
    api_port: int = typer.Option(8080, "--api-port", min=1, max=65535, help="API port."),
    dashboard_port: int = typer.Option(8501, "--dashboard-port", min=1, max=65535, help="Dashboard port."),
    agents: int = typer.Option(1000, "--agents", min=1, max=100_000, help="Simulated agents for --demo."),
    audit_rows: int = typer.Option(1_000_000, "--audit-rows", min=1, help="Backfilled audit rows for --demo."),
    rate: float = typer.Option(5.0, "--rate", min=0.1, max=1000.0, help="Live demo actions per second."),
) -> None:
    """Run the whole product: migrations, the API and the dashboard, sharing one PostgreSQL and Redis."""
    from aim import up as up_module
    from aim.services.dashboard_queries_shell import any_user_exists

    # Checked first, so a taken port fails at once instead of after the servers and migrations start.
    _fail_cleanly(lambda: up_module.check_ports(host, api_port, dashboard_port))
    runtime = _fail_cleanly(_runtime)
    env = up_module.child_environment(runtime.db.url, runtime.redis_url)
    if demo:
        _fail_cleanly(lambda: up_module.ensure_demo_accounts(runtime))
    supervisor = up_module.Supervisor(env)
    api_url = f"http://{host}:{api_port}"
    dashboard_url = f"http://{host}:{dashboard_port}"

    def shutdown(signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        supervisor.start(up_module.api_child(host, api_port))
        supervisor.start(up_module.dashboard_child(host, dashboard_port))
        if not up_module.wait_until_ready(f"{api_url}/healthz"):
            typer.echo(f"error: the API did not answer on {api_url}/healthz", err=True)
            raise typer.Exit(1)
        up_module.wait_until_ready(f"{dashboard_url}/_stcore/health")
        console.print(f"API:       {api_url}/docs")
        console.print(f"Dashboard: {dashboard_url}")
        if demo:
            # soft_wrap keeps the line whole in logs and narrow terminals, so the password is not split off.
            console.print(f"Sign in as admin@demo.aim (also analyst@, manager@, viewer@) with password "
                          f"{up_module.DEMO_PASSWORD}", soft_wrap=True)
            registry = ["--mcp-registry", str(mcp_registry.resolve())] if mcp_registry else []
            if up_module.demo_history_exists(runtime):
                # A second backfill would add another 30 days of events on top of the first.
                console.print(f"The {up_module.DEMO_ORGANIZATION!r} organization already has history, so the "
                              f"backfill is skipped. `aim simulate --org {up_module.DEMO_ORGANIZATION} --backfill 30` "
                              "adds more.", highlight=False, soft_wrap=True)
            else:
                backfill = supervisor.start(up_module.Child("backfill", up_module.simulate_args(
                    "--agents", str(agents), "--backfill", "30", "--audit-rows", str(audit_rows), "--seed", "1",
                    *registry)))
                while backfill.alive():
                    time.sleep(0.5)
            supervisor.start(up_module.Child("live traffic", up_module.simulate_args(
                "--agents", str(agents), "--rate", str(rate), "--duration", "0", "--via-api", api_url, *registry)))
        elif not any_user_exists(runtime.db):
            console.print("Open the dashboard to create the first admin account.")
        console.print("Press Ctrl-C to stop.")
        code = supervisor.watch({"api", "dashboard"})
        raise typer.Exit(code)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        supervisor.stop_all()
        # `aim stop` rejects mixed set-ups, so the hint appears only when both servers are embedded.
        if runtime.settings.embedded_database and runtime.settings.embedded_redis:
            console.print("The embedded PostgreSQL and Redis keep running for other AIM processes, "
                          "and `aim stop` stops them.", highlight=False)


@app.command("stop")
def stop(
    data_dir: Path = typer.Option(
        None, "--data-dir", file_okay=False,
        help="Data directory of the embedded servers; default: AIM_DATA_DIR or the per-user data directory.",
    ),
) -> None:
    """Stop the embedded PostgreSQL and Redis that AIM started under the data directory."""
    from aim import embedded

    settings = _fail_cleanly(load_settings)
    external = [
        name for name, url in (("AIM_DATABASE_URL", settings.database_url), ("AIM_REDIS_URL", settings.redis_url))
        if url is not None
    ]
    if external:
        verb = "is" if len(external) == 1 else "are"
        typer.echo(
            f"error: {' and '.join(external)} {verb} set, so AIM uses external servers, which `aim stop` "
            "never stops. Unset AIM_DATABASE_URL and AIM_REDIS_URL to stop the embedded servers.",
            err=True,
        )
        raise typer.Exit(2)
    directory = (data_dir.expanduser().resolve() if data_dir is not None else settings.data_dir)
    postgres_stopped = _fail_cleanly(lambda: embedded.stop_postgres(directory))
    if postgres_stopped:
        typer.echo(f"stopped embedded PostgreSQL in {directory / 'postgres'}")
    redis_stopped = _fail_cleanly(lambda: embedded.stop_redis(directory))
    if redis_stopped:
        typer.echo(f"stopped embedded Redis at {embedded.redis_socket_path(directory)}")
    if not postgres_stopped and not redis_stopped:
        typer.echo(f"no embedded PostgreSQL or Redis is running under {directory}")


def main() -> None:
    try:
        app()
    except AIMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
