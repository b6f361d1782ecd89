"""The API under test of a load-test command: the options that choose it, and the block that runs it.

Without --url, a command prepares its own fixture (bench.load.fixtures) and starts the API on it
(bench.load.server). With --url and --fixture, it uses a server that already runs on that
fixture's database.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.load import fixtures
from bench.load.fixtures import LoadFixture
from bench.load.report import machine_summary
from bench.load.server import ApiServer, check_local_url, describe_server, running_api

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def wrk_installed() -> bool:
    """Return True when wrk is on the PATH. Otherwise print how to install it and return False."""
    if shutil.which("wrk") is not None:
        return True
    print("error: wrk is not installed; install it with `apt-get install wrk`", file=sys.stderr)
    return False


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """Add --url, --fixture, --workers and --port, and the options of the fixture the command prepares."""
    parser.add_argument("--url", help="API under test, such as http://127.0.0.1:8080 (default: start one)")
    parser.add_argument("--fixture", type=Path, help="fixture.json of the database that --url serves")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the started API (default 2)")
    parser.add_argument("--port", type=int, default=8081, help="port of the started API (default 8081)")
    fixtures.add_fixture_options(parser)


def check_target_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error when the options of `add_target_options` do not go together."""
    if args.url and not args.fixture:
        parser.error("--url needs --fixture, the fixture.json of the database that server uses")


@contextmanager
def api_under_test(args: argparse.Namespace) -> Iterator[tuple[ApiServer, LoadFixture]]:
    """Yield the server and fixture chosen by `args`, after printing the machine and the server command.

    A fixture prepared here is dropped at the end unless --keep-database is given, and a server
    started here is stopped.
    """
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="aim-load-"))
    fixture = LoadFixture.read(args.fixture) if args.fixture else fixtures.prepare_from_args(args, work_dir)
    print(machine_summary())
    try:
        if args.url:
            check_local_url(args.url)
            yield ApiServer(args.url, None), fixture
        else:
            print(f"API: {describe_server(args.port, args.workers)}")
            with running_api(fixture, port=args.port, workers=args.workers) as server:
                yield server, fixture
    finally:
        if not args.fixture:
            fixture.close()
