"""The staged API load test with wrk: the Locust scenario's ramps and holds, sent on a planned schedule.

The profile is the one of bench.load.locust_run (bench/load/stages.py): ramp to 100 users over
2 min, hold 5 min, ramp to 200 users over 2 min, hold 5 min, ramp down over 2 min. Each user offers
5 requests per second, so the two hold stages offer 500 and 1,000. --quick runs the same stages
scaled to 2 min.

Each endpoint of the mix gets one wrk process (paced.lua) with its share of the load. That process
sends its requests at planned times (stages.send_offsets), an open model like the mix of
bench.load.wrk_run, with the offered rate following the stages. Each process keeps one latency
histogram over the whole run, so the p50, p95 and p99 are per endpoint over every stage, as
Locust reports them. wrk needs far less CPU per request than Locust, so the figures contain less
of the load generator's own queueing.

Signed verification requests are made before the run, one per planned send, each with its own
nonce and with its planned send time as its timestamp, counted from when signing began. The server
accepts a timestamp within 300 s of its clock, and signing takes far less than that.

Example: python -m bench.load.wrk_staged --quick --workers 2

It prints p50, p95 and p99 per endpoint against each target, the requests per second of each stage,
and the CPU time per request. It exits with 1 when a p95 is over its target, 1 % or more of the
requests failed, or fewer than 97 % of the planned requests completed.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.load import stages, targets
from bench.load.cpu import CpuMeter
from bench.load.fixtures import LoadFixture
from bench.load.report import machine_summary, print_table, print_verdict
from bench.load.server import ApiServer
from bench.load.session import LOG_FORMAT, add_target_options, api_under_test, check_target_options, wrk_installed
from bench.load.wrk_run import (
    CONNECTION_HEADROOM_S, MAX_PACED_CONNECTIONS, MIN_RATE_FRACTION, WrkResult, _mode, _parse, _start_wrk,
    _wrk_command, write_verify_requests,
)

logger = logging.getLogger(__name__)

# wrk runs this much longer than the stages, so the responses to the last sends are counted.
RUN_SLACK_S = 5
# Minimum connections per endpoint: with one, a slow response would delay the next send.
MIN_CONNECTIONS = 2


def _share(endpoint: targets.Endpoint) -> float:
    return targets.rate_share(endpoint, 1.0)


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def write_schedule(offsets: list[float], path: Path) -> None:
    """Write planned send times, in seconds, as paced.lua reads them: one offset in ms per line."""
    path.write_text("".join(f"{offset * 1000:.1f}\n" for offset in offsets))


@dataclass
class StagedPlan:
    """The wrk command of each endpoint, its planned request count and the files the commands read."""

    commands: list[tuple[targets.Endpoint, list[str]]]
    planned: dict[str, int]
    files: list[Path]
    run_s: int


def plan_staged(url: str, fixture: LoadFixture, profile: str, tag: str) -> StagedPlan:
    """Write the schedules and signed requests of `profile` and return the wrk commands that send them."""
    signing_started = time.time()
    peak_users = max(users for _, users in stages.stages(profile))
    run_s = math.ceil(stages.duration(profile)) + RUN_SLACK_S
    commands, planned, files = [], {}, []
    for index, endpoint in enumerate(targets.ENDPOINTS):
        offsets = stages.send_offsets(profile, _share(endpoint)).tolist()
        planned[endpoint.name] = len(offsets)
        schedule = fixture.work_dir / f"schedule-{tag}-{index}.txt"
        write_schedule(offsets, schedule)
        files.append(schedule)
        extra = []
        if endpoint.name == "POST /agents/{id}/verify":
            signed = fixture.work_dir / f"verify-{tag}-staged.tsv"
            # Each request's timestamp is its planned send time, counted from when signing began.
            write_verify_requests(fixture, len(offsets), signed,
                                  [_timestamp(signing_started + offset) for offset in offsets])
            files.append(signed)
            extra = [str(signed)]
        peak_rate = _share(endpoint) * stages.USER_RATE * peak_users
        connections = max(MIN_CONNECTIONS, min(MAX_PACED_CONNECTIONS, math.ceil(peak_rate * CONNECTION_HEADROOM_S)))
        commands.append((endpoint, _wrk_command(url, _mode(endpoint), f"schedule:{schedule}", run_s, connections, 1,
                                                tag, extra)))
    return StagedPlan(commands, planned, files, run_s)


def run_staged(plan: StagedPlan, fixture: LoadFixture) -> list[WrkResult]:
    """Start every endpoint's wrk process at once and return their results when the stages are over."""
    processes = [(endpoint, _start_wrk(command, fixture, 1)) for endpoint, command in plan.commands]
    try:
        return [_parse(endpoint.name, 0.0, process, plan.run_s + 60) for endpoint, process in processes]
    finally:
        for path in plan.files:
            path.unlink(missing_ok=True)


def stage_rates(results: list[WrkResult], profile: str) -> list[list[str]]:
    """Return one table row per stage: its span, users, planned and achieved mean requests per second.

    Completions are counted per second of each wrk process's run, so a second that spans two
    stages counts towards the one it starts in.
    """
    completed: dict[int, int] = {}
    for result in results:
        for index, count in enumerate(result.completed_1s):
            completed[index] = completed.get(index, 0) + count
    rows, start, previous_users = [], 0.0, 0
    for seconds, users in stages.stages(profile):
        end = start + seconds
        seconds_in_stage = [index for index in completed if start <= index < end]
        achieved = sum(completed[index] for index in seconds_in_stage) / len(seconds_in_stage) if seconds_in_stage else 0.0
        planned = stages.USER_RATE * (previous_users + users) / 2
        shape = "hold" if users == previous_users else "ramp"
        rows.append([f"{start:.0f}-{end:.0f} s", f"{shape} {previous_users}->{users}" if shape == "ramp"
                     else f"hold {users}", f"{planned:.0f}", f"{achieved:.0f}"])
        start, previous_users = end, users
    return rows


def judge(results: list[WrkResult], planned: dict[str, int]) -> list[str]:
    """Return the failed thresholds as sentences; empty when every one passed."""
    failures = []
    for result in results:
        target = targets.ENDPOINTS_BY_NAME[result.name]
        if result.p95_ms > target.p95_ms:
            failures.append(f"{result.name}: p95 {result.p95_ms:.1f} ms is over the target {target.p95_ms:g} ms")
    requests = sum(result.requests for result in results)
    failed = sum(result.failed for result in results)
    if not requests or failed / requests >= targets.MAX_ERROR_RATE:
        failures.append(f"{failed} of {requests} requests failed; expected under {targets.MAX_ERROR_RATE:.0%}")
    expected = sum(planned.values())
    if requests < MIN_RATE_FRACTION * expected:
        failures.append(f"{requests} of {expected} planned requests completed; expected at least "
                        f"{MIN_RATE_FRACTION:.0%}")
    return failures


def print_report(results: list[WrkResult], planned: dict[str, int], profile: str) -> None:
    run_s = stages.duration(profile)
    rows = []
    for result in results:
        target = targets.ENDPOINTS_BY_NAME[result.name]
        rows.append([result.name, f"{target.p95_ms:g}", str(planned[result.name]), str(result.requests),
                     f"{result.requests / run_s:.0f}", f"{result.p50_ms:.2f}", f"{result.p95_ms:.2f}",
                     f"{result.p99_ms:.2f}", f"{result.max_ms:.1f}", f"{result.error_rate:.2%}", str(result.late),
                     "ok" if result.p95_ms <= target.p95_ms else "FAIL"])
    requests = sum(result.requests for result in results)
    failed = sum(result.failed for result in results)
    rows.append(["all", "", str(sum(planned.values())), str(requests), f"{requests / run_s:.0f}", "", "", "", "",
                 f"{failed / requests if requests else 1:.2%}", str(sum(result.late for result in results)), ""])
    print(f"\nwrk, {profile} profile ({run_s:.0f} s), each user {stages.USER_RATE:g} req/s, open model:")
    print_table(["endpoint", "target p95 ms", "planned", "requests", "req/s (run)", "p50 ms", "p95 ms", "p99 ms",
                 "max ms", "errors", "late sends", "result"], rows)
    for result in results:
        unusual = {code: count for code, count in result.statuses.items() if not code.startswith("2")}
        if unusual:
            print(f"  {result.name}: statuses {unusual}; first error: {result.error_sample}")
        if result.socket_errors:
            print(f"  {result.name}: socket errors {result.socket_errors}")
    print("\nRequests per second by stage (mean over the stage):")
    print_table(["time", "stage", "planned req/s", "achieved req/s"], stage_rates(results, profile))


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
    if not wrk_installed():
        return 2
    profile = "quick" if args.quick else "default"
    with api_under_test(args) as (server, fixture):
        results, planned, cpu_line = _run(server, fixture, profile, uuid.uuid4().hex[:8])

    print(f"load after the run: {machine_summary(load_only=True)}")
    print_report(results, planned, profile)
    print(cpu_line)
    failures = judge(results, planned)
    return print_verdict(failures)


def _run(server: ApiServer, fixture: LoadFixture, profile: str, tag: str) -> tuple[list[WrkResult], dict[str, int], str]:
    """Run the stages against `server` and return the results, the planned counts and the CPU lines."""
    plan = plan_staged(server.url, fixture, profile, tag)
    meter = CpuMeter(server.pid, fixture.database)
    meter.start()
    results = run_staged(plan, fixture)
    sample = meter.stop()
    requests = max(sum(result.requests for result in results), 1)
    api = f"API {1000 * sample.api_s / requests:.3f} ms" if meter.api_pid else "API not measured (--url)"
    lines = [f"CPU per request: {api}, PostgreSQL {1000 * sample.postgres_s / requests:.3f} ms "
             "(/proc, user plus system time)"]
    if sample.machine_line():
        lines.append(sample.machine_line())
    return results, plan.planned, "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
