"""Throughput and latency targets of the API, measured with wrk at a constant request rate.

Two phases, each against the same server:

1. GET /api/v1/agents alone, as fast as the connections allow (closed model), for the sustained
   requests per second and its error rate.
2. The mix at 1,000 requests per second (open model): one wrk process per endpoint, all at once,
   each sending its share of the rate on a fixed schedule (paced.lua). Each process has its own
   latency histogram, so the p50, p95 and p99 are per endpoint. GET /audit-logs follows next_cursor,
   POST /agents/{id}/verify sends Ed25519-signed requests made with the AIM client's signing code
   just before the phase, each with its own nonce.

Both phases also print the CPU time that the API processes and the database's PostgreSQL
backends spent per request (bench.load.cpu), which depends far less than latency on what else runs
on the machine. The mix's figure includes the periodic jobs that its verifications trigger.

Without --url, the script creates its own database and data (bench.load.fixtures) and starts
`aim api --host 127.0.0.1 --workers N` with AIM_RATE_LIMIT_PER_MINUTE=0 (bench.load.server). With
--url, it uses that server, which must run on the database of --fixture.

With --churn, a third phase sends registrations that drop the cached agent list and overview
while both are read (targets.CHURN_RATES).

Example: python -m bench.load.wrk_run --workers 2 --duration 60

It prints one table per phase and exits with 1 when a target is missed. The targets are each
endpoint's p95, under 1 % failed requests in the mix and at least 97 % of the target rate, and
for GET /agents alone at least 2,000 requests per second with under 0.1 % failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench.load import targets
from bench.load.cpu import CpuMeter
from bench.load.fixtures import LoadFixture
from bench.load.report import machine_summary, print_table, print_verdict
from bench.load.server import ApiServer
from bench.load.session import LOG_FORMAT, add_target_options, api_under_test, check_target_options, wrk_installed

logger = logging.getLogger(__name__)

LUA_SCRIPT = Path(__file__).with_name("paced.lua")
RESULT_MARKER = "AIM_RESULT "
# A paced run may fall this far below its target rate before the run counts as failed.
MIN_RATE_FRACTION = 0.97
# Connections per paced process: enough that a response may take this long before sends fall
# behind schedule.
CONNECTION_HEADROOM_S = 0.1
MAX_PACED_CONNECTIONS = 128
ENDPOINT_CPU_DURATION_S = 8
# Signed requests carry a timestamp that the server accepts within 300 s of its clock, and they are
# all made before the phase starts.
MAX_VERIFY_SPAN_S = 240


@dataclass(frozen=True)
class WrkResult:
    """Counts and latency percentiles of one wrk process."""

    name: str
    target_rate: float
    requests: int
    duration_s: float
    failed: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    late: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    error_sample: str | None
    # Responses completed in each second of the run, from paced.lua.
    completed_1s: tuple[int, ...] = ()

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 1.0


def _mode(endpoint: targets.Endpoint) -> str:
    return {
        "GET /agents": "get:/api/v1/agents",
        "GET /mcp-servers": "get:/api/v1/mcp-servers",
        "GET /dashboard/stats": "get:/api/v1/dashboard/stats",
        "GET /audit-logs": "audit",
        "POST /agents": "post-agents",
        "POST /mcp-servers": "post-mcp",
        "POST /agents/{id}/verify": "verify",
    }[endpoint.name]


def write_verify_requests(fixture: LoadFixture, count: int, path: Path, timestamps: Sequence[str] | None = None) -> None:
    """Write `count` signed verification requests, one "agent_id<TAB>json" line each, round-robin over the agents.

    Each request's timestamp is the time of signing, or the matching entry of `timestamps` (RFC 3339).
    """
    started = time.perf_counter()
    with path.open("w") as handle:
        for index in range(count):
            agent = fixture.agents[index % len(fixture.agents)]
            body = agent.signed_request(timestamp=timestamps[index] if timestamps else None)
            handle.write(f"{agent.agent_id}\t{json.dumps(body, separators=(',', ':'))}\n")
    logger.info("signed %d verification requests in %.1f s", count, time.perf_counter() - started)


def _wrk_command(url: str, mode: str, rate: float | str, duration_s: int, connections: int, threads: int, tag: str,
                 extra: list[str]) -> list[str]:
    """Return the wrk command of one paced.lua process; `rate` is requests per second or "schedule:PATH"."""
    rate_arg = rate if isinstance(rate, str) else f"{rate:g}"
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s", "--latency",
            "-s", str(LUA_SCRIPT), url, "--", mode, rate_arg, tag, *extra]


def _start_wrk(command: list[str], fixture: LoadFixture, threads: int) -> subprocess.Popen:
    env = dict(os.environ, AIM_LOAD_API_KEY=fixture.api_key, AIM_LOAD_PUBLIC_KEY=fixture.public_key,
               AIM_LOAD_THREADS=str(threads))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _parse(name: str, target_rate: float, process: subprocess.Popen, timeout_s: float) -> WrkResult:
    stdout, stderr = process.communicate(timeout=timeout_s)
    line = next((text for text in stdout.splitlines() if text.startswith(RESULT_MARKER)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk for {name} failed with status {process.returncode}: {stderr.strip() or stdout[-500:]}")
    data = json.loads(line[len(RESULT_MARKER):])
    errors = data["errors"]
    # errors.status counts responses with status 400 or above; the rest are socket errors and timeouts.
    failed = errors["status"] + errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    latency = data["latency_us"]
    return WrkResult(
        name=name, target_rate=target_rate, requests=data["requests"], duration_s=data["duration_us"] / 1e6,
        failed=failed, p50_ms=latency["p50"] / 1000, p95_ms=latency["p95"] / 1000, p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000, late=data["late"], statuses=data["statuses"],
        socket_errors={name: count for name, count in errors.items() if name != "status" and count},
        error_sample=data["error_sample"], completed_1s=tuple(data.get("completed_1s", ())),
    )


def run_mix(url: str, fixture: LoadFixture, total_rate: float, duration_s: int, tag: str) -> list[WrkResult]:
    """Send the request mix at `total_rate` for `duration_s`, one paced wrk process per endpoint."""
    rates = [(endpoint, targets.rate_share(endpoint, total_rate)) for endpoint in targets.ENDPOINTS]
    return run_paced(url, fixture, rates, duration_s, tag)


def run_churn(url: str, fixture: LoadFixture, duration_s: int, tag: str) -> list[WrkResult]:
    """Send the churn scenario (targets.CHURN_RATES) for `duration_s`, one paced wrk process per endpoint."""
    rates = [(targets.ENDPOINTS_BY_NAME[name], rate) for name, rate in targets.CHURN_RATES.items()]
    return run_paced(url, fixture, rates, duration_s, tag)


def run_paced(url: str, fixture: LoadFixture, rates: list[tuple[targets.Endpoint, float]], duration_s: int,
              tag: str) -> list[WrkResult]:
    """Send each endpoint at its rate for `duration_s`, all at once, one paced wrk process per endpoint."""
    verify_file = fixture.work_dir / f"verify-{tag}.tsv"
    verify_rate = sum(rate for endpoint, rate in rates if endpoint.name == "POST /agents/{id}/verify")
    if verify_rate:
        write_verify_requests(fixture, math.ceil(verify_rate * duration_s * 1.2) + 1000, verify_file)

    processes = []
    for endpoint, rate in rates:
        connections = max(4, min(MAX_PACED_CONNECTIONS, math.ceil(rate * CONNECTION_HEADROOM_S)))
        extra = [str(verify_file)] if endpoint.name == "POST /agents/{id}/verify" else []
        command = _wrk_command(url, _mode(endpoint), rate, duration_s, connections, 1, tag, extra)
        processes.append((endpoint, rate, _start_wrk(command, fixture, 1)))
    results = [_parse(endpoint.name, rate, process, duration_s + 60) for endpoint, rate, process in processes]
    verify_file.unlink(missing_ok=True)
    return results


def run_max(url: str, fixture: LoadFixture, duration_s: int, connections: int, threads: int) -> WrkResult:
    """Send GET /api/v1/agents as fast as `connections` allow for `duration_s`."""
    command = _wrk_command(url, "get:/api/v1/agents", 0, duration_s, connections, threads, "max", [])
    return _parse("GET /agents (max)", 0.0, _start_wrk(command, fixture, threads), duration_s + 60)


def run_endpoint_cpu(server: ApiServer, fixture: LoadFixture, rate: float, duration_s: int, tag: str) -> list[list[str]]:
    """Send each endpoint of the mix alone at `rate` for `duration_s` and return table rows of its CPU
    time per request (API processes and PostgreSQL backends) with its latency."""
    rows = []
    meter = CpuMeter(server.pid, fixture.database)
    for endpoint in targets.ENDPOINTS:
        extra = []
        if endpoint.name == "POST /agents/{id}/verify":
            verify_file = fixture.work_dir / f"verify-{tag}-cpu.tsv"
            write_verify_requests(fixture, math.ceil(rate * duration_s * 1.2) + 100, verify_file)
            extra = [str(verify_file)]
        connections = max(4, min(MAX_PACED_CONNECTIONS, math.ceil(rate * CONNECTION_HEADROOM_S)))
        command = _wrk_command(server.url, _mode(endpoint), rate, duration_s, connections, 1, f"{tag}c", extra)
        meter.start()
        result = _parse(endpoint.name, rate, _start_wrk(command, fixture, 1), duration_s + 60)
        sample = meter.stop()
        for path in extra:
            Path(path).unlink(missing_ok=True)
        per_request = 1000 / max(result.requests, 1)
        api = f"{sample.api_s * per_request:.3f}" if meter.api_pid else "not measured"
        rows.append([endpoint.name, f"{result.rate:.0f}", api, f"{sample.postgres_s * per_request:.3f}",
                     f"{result.p50_ms:.2f}", f"{result.p95_ms:.2f}", f"{result.error_rate:.2%}"])
    return rows


def judge_mix(results: list[WrkResult], total_rate: float, label: str = "mix") -> list[str]:
    """Return the failed thresholds of the mix, or of the paced phase named `label`, as sentences.

    The list is empty when every threshold passed.
    """
    failures = []
    for result in results:
        target = targets.ENDPOINTS_BY_NAME[result.name]
        if result.p95_ms > target.p95_ms:
            failures.append(f"{result.name}: p95 {result.p95_ms:.1f} ms is over the target {target.p95_ms:g} ms")
    requests = sum(result.requests for result in results)
    failed = sum(result.failed for result in results)
    if not requests or failed / requests > targets.MAX_ERROR_RATE:
        failures.append(f"{label}: {failed} of {requests} requests failed; expected under {targets.MAX_ERROR_RATE:.0%}")
    achieved = sum(result.rate for result in results)
    if achieved < MIN_RATE_FRACTION * total_rate:
        failures.append(f"{label}: {achieved:.0f} req/s achieved; expected at least {MIN_RATE_FRACTION:.0%} of "
                        f"{total_rate:g} req/s")
    return failures


def judge_max(result: WrkResult) -> list[str]:
    failures = []
    if result.rate < targets.GET_AGENTS_MIN_RPS:
        failures.append(f"GET /agents sustained {result.rate:.0f} req/s; expected at least {targets.GET_AGENTS_MIN_RPS:g}")
    if result.error_rate >= targets.GET_AGENTS_MAX_ERROR_RATE:
        failures.append(f"GET /agents error rate {result.error_rate:.3%}; expected under "
                        f"{targets.GET_AGENTS_MAX_ERROR_RATE:.1%}")
    return failures


def _print_mix(results: list[WrkResult], total_rate: float, duration_s: int, title: str = "Mix") -> None:
    rows = []
    for result in results:
        target = targets.ENDPOINTS_BY_NAME[result.name]
        rows.append([result.name, f"{target.p95_ms:g}", f"{result.target_rate:.0f}", f"{result.rate:.0f}",
                     f"{result.p50_ms:.2f}", f"{result.p95_ms:.2f}", f"{result.p99_ms:.2f}", f"{result.max_ms:.1f}",
                     f"{result.error_rate:.2%}", str(result.late), "ok" if result.p95_ms <= target.p95_ms else "FAIL"])
    requests = sum(result.requests for result in results)
    failed = sum(result.failed for result in results)
    rows.append(["all", "", f"{total_rate:.0f}", f"{sum(result.rate for result in results):.0f}", "", "", "", "",
                 f"{failed / requests if requests else 1:.2%}", str(sum(result.late for result in results)), ""])
    print(f"\n{title} at {total_rate:g} req/s for {duration_s} s (open model, wrk + paced.lua):")
    print_table(["endpoint", "target p95 ms", "rate req/s", "achieved req/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                 "errors", "late sends", "result"], rows)
    for result in results:
        unusual = {code: count for code, count in result.statuses.items() if not code.startswith("2")}
        if unusual:
            print(f"  {result.name}: statuses {unusual}; first error: {result.error_sample}")
        if result.socket_errors:
            print(f"  {result.name}: socket errors {result.socket_errors}")


def _print_max(result: WrkResult, connections: int, threads: int, duration_s: int) -> None:
    print(f"\nGET /api/v1/agents, closed model, {connections} connections, {threads} wrk threads, {duration_s} s:")
    print_table(["endpoint", "req/s", "target req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "result"],
                [[result.name, f"{result.rate:.0f}", f"{targets.GET_AGENTS_MIN_RPS:g}", f"{result.p50_ms:.2f}",
                  f"{result.p95_ms:.2f}", f"{result.p99_ms:.2f}", f"{result.error_rate:.3%}",
                  "ok" if not judge_max(result) else "FAIL"]])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_options(parser)
    parser.add_argument("--rate", type=float, default=targets.TARGET_RATE,
                        help=f"total requests per second of the mix (default {targets.TARGET_RATE:g})")
    parser.add_argument("--duration", type=int, default=60, help="seconds of the mix phase (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of unmeasured load before each phase (default 10)")
    parser.add_argument("--max-duration", type=int, default=30, help="seconds of the GET /agents max phase (default 30)")
    parser.add_argument("--max-connections", type=int, default=64, help="connections of the max phase (default 64)")
    parser.add_argument("--max-threads", type=int, default=2, help="wrk threads of the max phase (default 2)")
    parser.add_argument("--skip-mix", action="store_true", help="run only the GET /agents max phase")
    parser.add_argument("--skip-max", action="store_true", help="run only the mix phase")
    parser.add_argument("--churn", action="store_true",
                        help="also run the churn phase after the mix: registrations dropping the cached list and "
                             "overview while they are read (rates in bench/load/targets.py)")
    parser.add_argument("--cpu-per-endpoint", type=float, default=0, metavar="RATE",
                        help="first send each endpoint alone at RATE req/s for 8 s and print its CPU time per "
                             "request (default 0: skip this phase)")
    args = parser.parse_args(argv)
    if args.duration + args.warmup > MAX_VERIFY_SPAN_S:
        parser.error(f"--duration plus --warmup is {args.duration + args.warmup} s; expected at most "
                     f"{MAX_VERIFY_SPAN_S} s, because signed requests expire 300 s after they are made")
    check_target_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if not wrk_installed():
        return 2
    with api_under_test(args) as (server, fixture):
        failures = _run_phases(server, fixture, args)
    return print_verdict(failures)


def _print_cpu(meter: CpuMeter, requests: int) -> None:
    sample = meter.stop()
    if not requests:
        return
    api = f"API {1000 * sample.api_s / requests:.3f} ms" if meter.api_pid else "API not measured (--url)"
    print(f"CPU per request: {api}, PostgreSQL {1000 * sample.postgres_s / requests:.3f} ms "
          f"({requests} requests; /proc, user plus system time)")
    if sample.machine_line():
        print(sample.machine_line())


def _run_phases(server: ApiServer, fixture: LoadFixture, args: argparse.Namespace) -> list[str]:
    failures: list[str] = []
    tag = uuid.uuid4().hex[:8]
    meter = CpuMeter(server.pid, fixture.database)
    if args.cpu_per_endpoint:
        rows = run_endpoint_cpu(server, fixture, args.cpu_per_endpoint, ENDPOINT_CPU_DURATION_S, tag)
        print(f"\nEach endpoint alone at {args.cpu_per_endpoint:g} req/s for {ENDPOINT_CPU_DURATION_S} s "
              f"(load average before: {machine_summary(load_only=True)}):")
        print_table(["endpoint", "achieved req/s", "API CPU ms/request", "PostgreSQL CPU ms/request", "p50 ms",
                     "p95 ms", "errors"], rows)
    # The read-only phase runs first, because the mix leaves work behind for the periodic jobs (the
    # trust queue of verified agents), which would count against GET /agents.
    if not args.skip_max:
        if args.warmup:
            logger.info("warming up GET /agents for %d s", args.warmup)
            run_max(server.url, fixture, args.warmup, args.max_connections, args.max_threads)
        print(f"\nload before the max phase: {machine_summary(load_only=True)}")
        meter.start()
        result = run_max(server.url, fixture, args.max_duration, args.max_connections, args.max_threads)
        _print_max(result, args.max_connections, args.max_threads, args.max_duration)
        _print_cpu(meter, result.requests)
        failures += judge_max(result)
    if not args.skip_mix:
        if args.warmup:
            logger.info("warming up for %d s at %g req/s", args.warmup, args.rate)
            run_mix(server.url, fixture, args.rate, args.warmup, f"{tag}w")
        print(f"\nload before the mix: {machine_summary(load_only=True)}")
        meter.start()
        results = run_mix(server.url, fixture, args.rate, args.duration, tag)
        _print_mix(results, args.rate, args.duration)
        _print_cpu(meter, sum(result.requests for result in results))
        failures += judge_mix(results, args.rate)
    if args.churn:
        churn_rate = sum(targets.CHURN_RATES.values())
        print(f"\nload before the churn phase: {machine_summary(load_only=True)}")
        meter.start()
        results = run_churn(server.url, fixture, args.duration, f"{tag}churn")
        _print_mix(results, churn_rate, args.duration, title="Churn")
        _print_cpu(meter, sum(result.requests for result in results))
        failures += judge_mix(results, churn_rate, label="churn")
    return failures


if __name__ == "__main__":
    sys.exit(main())
