"""CPU time of the server under test, from /proc, so a run on a shared machine still yields a cost per request.

Latencies and rates depend on what else runs on the machine, but the CPU seconds that the API
processes and their PostgreSQL backends spend per request depend far less on it. Linux only: on
other systems the meter reports nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds of `pid`, or 0 when it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """Return `pid` and its descendants (uvicorn's supervisor and its worker processes)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(_children(current))
    return tree


def database_backends(database: str) -> list[int]:
    """Return the PostgreSQL backend processes connected to `database` (their title names it)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            found.append(int(entry.name))
    return found


@dataclass
class CpuSample:
    api_s: float
    postgres_s: float


class CpuMeter:
    """CPU seconds of the API process tree (when its pid is known) and of one database's backends.

    A backend that starts during the measurement counts with all its CPU time. A process that
    exits before `stop()` counts nothing, because its time can no longer be read.
    """

    def __init__(self, api_pid: int | None, database: str) -> None:
        self.api_pid = api_pid
        self.database = database
        self._api_pids: list[int] = []
        self._start: dict[int, float] = {}

    def start(self) -> None:
        self._api_pids = process_tree(self.api_pid) if self.api_pid else []
        self._start = {pid: _cpu_seconds(pid) for pid in [*self._api_pids, *database_backends(self.database)]}

    def stop(self) -> CpuSample:
        api = sum(max(0.0, _cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in self._api_pids)
        backends = set(database_backends(self.database)) | (set(self._start) - set(self._api_pids))
        postgres = sum(max(0.0, _cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in backends)
        return CpuSample(api, postgres)
