"""Plain-text tables and the machine description printed by the load tests."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from bench.common import python_loop_ns


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


def machine_summary(*, load_only: bool = False) -> str:
    """Describe the machine (CPU count and model, OS) and its current load average.

    Other processes may share the machine, so every report states the load it ran under.
    """
    if load_only:
        return load_average()
    return (f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()}, "
            f"Python loop step {python_loop_ns():.1f} ns; {load_average()}")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print `rows` under `header` as left-aligned text columns."""
    widths = [max(len(str(row[index])) for row in [header, *rows]) for index in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def print_verdict(failures: list[str]) -> int:
    """Print each failed threshold and the verdict, and return the exit status: 1 when any failed, else 0."""
    print()
    for failure in failures:
        print(f"FAIL {failure}")
    print("all thresholds passed" if not failures else f"{len(failures)} threshold(s) failed")
    return 1 if failures else 0
