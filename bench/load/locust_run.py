"""The staged API load test with Locust: ramps to 100 and 200 users, checks the p95 targets and errors.

Without --url, it creates its own database and data (bench.load.fixtures) and starts
`aim api --host 127.0.0.1 --workers N` with AIM_RATE_LIMIT_PER_MINUTE=0 (bench.load.server). It
then runs Locust headless with bench/load/locustfile.py: the default profile takes 16 min, --quick
the same stages in 2 min. At 200 users the offered load is 1,000 requests per second.

Example: python -m bench.load.locust_run --quick --workers 2

It prints p50, p95 and p99 per endpoint against each target, the failure rate and the requests per
second, over the whole run and at the 200-user hold. It exits with 1 when a p95 is over its target
or more than 1 % of the requests failed.

Locust runs its users in one Python process on the same machine as the API, so on 2 cores it takes
CPU from the server under test. Its response times include that queueing; bench.load.wrk_run
measures the same targets with wrk, which needs far less CPU per request.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

from bench.load import fixtures, targets
from bench.load.cpu import CpuMeter
from bench.load.report import machine_summary, print_table, print_verdict
from bench.load.session import LOG_FORMAT, add_target_options, api_under_test, check_target_options
from bench.load.stages import USER_RATE, stages

logger = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
# Locust may run this much longer than its stages (start-up, stopping users) before it is stopped.
RUN_GRACE_S = 120


def run_locust(url: str, fixture_path: Path, profile: str, csv_prefix: Path) -> int:
    """Run Locust headless against `url` until the shape ends; return its exit status."""
    total_s = sum(seconds for seconds, _ in stages(profile))
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--csv", str(csv_prefix), "--csv-full-history", "--only-summary", "--loglevel", "WARNING",
               "--stop-timeout", "5"]
    env = dict(os.environ, AIM_LOAD_FIXTURE=str(fixture_path), AIM_LOAD_PROFILE=profile)
    # The repository root on the path, so the locustfile can import the bench package.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    logger.info("running Locust (%s profile, %.0f s): %s", profile, total_s, " ".join(command))
    completed = subprocess.run(command, env=env, timeout=total_s + RUN_GRACE_S, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    (csv_prefix.parent / "locust.log").write_text(completed.stdout)
    return completed.returncode


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # Locust writes "N/A" for an endpoint without requests
        return float("nan")


def read_stats(csv_prefix: Path) -> dict[str, dict[str, str]]:
    """Return Locust's summary rows by name (the endpoint names and "Aggregated")."""
    with open(f"{csv_prefix}_stats.csv", newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def hold_rate(csv_prefix: Path) -> float:
    """Return the mean requests per second while the most users ran (the 200-user hold)."""
    with open(f"{csv_prefix}_stats_history.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    if not rows:
        return float("nan")
    peak = max(int(row["User Count"]) for row in rows)
    rates = [_float(row["Requests/s"]) for row in rows if int(row["User Count"]) == peak]
    return sum(rates) / len(rates) if rates else float("nan")


def judge(stats: dict[str, dict[str, str]]) -> list[str]:
    """Return the failed thresholds as sentences; empty when every one passed."""
    failures = []
    for endpoint in targets.ENDPOINTS:
        row = stats.get(endpoint.name)
        if row is None or int(row["Request Count"]) == 0:
            failures.append(f"{endpoint.name}: no requests were sent")
            continue
        p95 = _float(row["95%"])
        if not p95 <= endpoint.p95_ms:
            failures.append(f"{endpoint.name}: p95 {p95:g} ms is over the target {endpoint.p95_ms:g} ms")
    total = stats.get("Aggregated")
    requests = int(total["Request Count"]) if total else 0
    failed = int(total["Failure Count"]) if total else 0
    if not requests or failed / requests > targets.MAX_ERROR_RATE:
        failures.append(f"{failed} of {requests} requests failed; expected under {targets.MAX_ERROR_RATE:.0%}")
    return failures


def print_report(stats: dict[str, dict[str, str]], csv_prefix: Path, profile: str) -> None:
    rows = []
    for endpoint in targets.ENDPOINTS:
        row = stats.get(endpoint.name)
        if row is None:
            rows.append([endpoint.name, f"{endpoint.p95_ms:g}", "0", "", "", "", "", "", "FAIL"])
            continue
        requests, failed = int(row["Request Count"]), int(row["Failure Count"])
        p95 = _float(row["95%"])
        rows.append([endpoint.name, f"{endpoint.p95_ms:g}", str(requests), f"{_float(row['Requests/s']):.0f}",
                     row["50%"], row["95%"], row["99%"], f"{failed / requests if requests else 1:.2%}",
                     "ok" if p95 <= endpoint.p95_ms else "FAIL"])
    total = stats["Aggregated"]
    requests, failed = int(total["Request Count"]), int(total["Failure Count"])
    rows.append(["all", "", str(requests), f"{_float(total['Requests/s']):.0f}", total["50%"], total["95%"],
                 total["99%"], f"{failed / requests if requests else 1:.2%}", ""])
    print(f"\nLocust, {profile} profile ({sum(seconds for seconds, _ in stages(profile)):.0f} s), "
          f"each user {USER_RATE:g} req/s; times in ms:")
    print_table(["endpoint", "target p95", "requests", "req/s (run)", "p50", "p95", "p99", "errors", "result"], rows)
    print(f"requests per second at the peak user count: {hold_rate(csv_prefix):.0f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="run the stages scaled to about 2 min instead of 16")
    add_target_options(parser)
    args = parser.parse_args(argv)
    check_target_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    profile = "quick" if args.quick else "default"
    with api_under_test(args) as (server, fixture):
        csv_prefix = fixture.work_dir / f"locust-{profile}"
        meter = CpuMeter(server.pid, fixture.database)
        meter.start()
        status = run_locust(server.url, args.fixture or fixture.work_dir / fixtures.FIXTURE_FILE, profile, csv_prefix)
        cpu = meter.stop()

    print(f"load after the run: {machine_summary(load_only=True)}")
    if not Path(f"{csv_prefix}_stats.csv").exists():
        print(f"error: Locust wrote no statistics (exit status {status}); see {csv_prefix.parent / 'locust.log'}",
              file=sys.stderr)
        return 2

    stats = read_stats(csv_prefix)
    print_report(stats, csv_prefix, profile)
    requests = int(stats["Aggregated"]["Request Count"])
    if requests:
        api = f"API {1000 * cpu.api_s / requests:.3f} ms" if meter.api_pid else "API not measured (--url)"
        print(f"CPU per request: {api}, PostgreSQL {1000 * cpu.postgres_s / requests:.3f} ms (/proc, user plus system)")
    if cpu.machine_line():
        print(cpu.machine_line())
    failures = judge(stats)
    return print_verdict(failures)


if __name__ == "__main__":
    sys.exit(main())
