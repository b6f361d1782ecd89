"""CPU time of the server under test, from /proc, so a run on a shared machine still yields a cost per request.

Latencies and rates depend on what else runs on the machine, but the CPU seconds that the API
processes and their PostgreSQL backends spend per request depend far less on it. Linux only: on
other systems the meter reports nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CPU_PRESSURE = PROC / "pressure" / "cpu"


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


def _machine_ticks() -> tuple[int, int] | None:
    """Return (busy, total) clock ticks of all CPUs since boot from /proc/stat, or None off Linux."""
    try:
        fields = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: idle and iowait are the time not busy.
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _cpu_waiting_us() -> int | None:
    """Return the microseconds in which at least one task waited for a CPU (PSI "some total"), or None."""
    try:
        first = CPU_PRESSURE.read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first.rsplit("total=", 1)[1])


@dataclass
class CpuSample:
    """CPU seconds of the API and PostgreSQL, and how busy the whole machine was meanwhile.

    `busy_cores` is the average number of busy CPUs. `waiting_share` is the share of the time in
    which at least one runnable task waited for a CPU (Linux pressure stall information). Either is
    None where the kernel does not report it.
    """

    api_s: float
    postgres_s: float
    busy_cores: float | None = None
    waiting_share: float | None = None

    def machine_line(self) -> str:
        """Describe the machine's load during the sample in one line, or return "" when unknown."""
        parts = []
        if self.busy_cores is not None:
            parts.append(f"{self.busy_cores:.2f} of {os.cpu_count()} CPUs busy")
        if self.waiting_share is not None:
            parts.append(f"a task waited for a CPU {self.waiting_share:.0%} of the time")
        return f"machine meanwhile: {', '.join(parts)} (/proc/stat, /proc/pressure/cpu)" if parts else ""


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
        self._machine: tuple[int, int] | None = None
        self._waiting: tuple[int, float] | None = None

    def start(self) -> None:
        self._api_pids = process_tree(self.api_pid) if self.api_pid else []
        self._start = {pid: _cpu_seconds(pid) for pid in [*self._api_pids, *database_backends(self.database)]}
        self._machine = _machine_ticks()
        waiting = _cpu_waiting_us()
        self._waiting = (waiting, time.monotonic()) if waiting is not None else None

    def stop(self) -> CpuSample:
        api = sum(max(0.0, _cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in self._api_pids)
        backends = set(database_backends(self.database)) | (set(self._start) - set(self._api_pids))
        postgres = sum(max(0.0, _cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in backends)
        return CpuSample(api, postgres, self._busy_cores(), self._waiting_share())

    def _busy_cores(self) -> float | None:
        now = _machine_ticks()
        if now is None or self._machine is None or now[1] <= self._machine[1]:
            return None
        busy, total = now[0] - self._machine[0], now[1] - self._machine[1]
        return (os.cpu_count() or 1) * busy / total

    def _waiting_share(self) -> float | None:
        now = _cpu_waiting_us()
        if now is None or self._waiting is None:
            return None
        elapsed_s = time.monotonic() - self._waiting[1]
        return (now - self._waiting[0]) / 1e6 / elapsed_s if elapsed_s > 0 else None
