"""Warm a dashboard process at server start, so its first browser request does not pay one-off costs.

Without this, the first request after `streamlit run app.py` imported pandas, Plotly, PyArrow and
the data layer, built the runtime (migration check, PostgreSQL pools, Redis) and started the
process cache before the page could render. On the 2-core development machine that first paint took
3.1 to 3.3 s against 1.6 to 1.7 s for the next one (load average 2.5 to 4).

`lifespan` is the st.App lifespan hook that app.py installs. It switches Streamlit out of its
pages-directory mode, runs `warm` on a daemon thread and waits for it, at most WARMUP_WAIT_S, before
the server starts serving requests. So /_stcore/health, which the benchmarks, the browser tests and
a load balancer wait for, reports a process that is ready to paint quickly. When the warm-up takes
longer (a backend that does not respond), the server starts anyway and the thread goes on. A
failure is logged and ignored, because every request still builds whatever it needs itself.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import importlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"
# Imported lazily by Streamlit on the first table or chart, so no page script names them.
LAZY_IMPORTS = (
    "pyarrow", "pandas.io.formats.style", "plotly.graph_objects", "plotly.io", "streamlit.elements.arrow",
    "streamlit.elements.plotly_chart", "streamlit.dataframe_util",
)

# How long server start waits for the warm-up. It took 1 to 4 s on the 2-core development machine
# (load average 3 to 14), so this limit applies only when a backend does not respond.
WARMUP_WAIT_S = 20.0

_started = threading.Event()
_done = threading.Event()


def page_imports(pages_dir: Path = PAGES_DIR) -> list[str]:
    """Return the modules the page scripts import, read from their source without running them.

    `from package import name` yields both `package` and `package.name`, because the name is often a
    submodule (`from aim.ui import charts`). Names that are not modules are skipped when importing.
    """
    modules: dict[str, None] = {}
    for path in sorted(pages_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    modules[alias.name] = None
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules[node.module] = None
                for alias in node.names:
                    modules[f"{node.module}.{alias.name}"] = None
    return list(modules)


def import_modules(names: Iterable[str]) -> int:
    """Import each module in `names` and return how many imported. Missing modules are skipped."""
    imported = 0
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            # `from package import function` names a function, not a module.
            continue
        imported += 1
    return imported


def exercise_renderers() -> None:
    """Build and serialize one small table and chart, which loads what those libraries load on first use."""
    import pandas as pd
    import plotly.graph_objects as go
    from streamlit import dataframe_util

    frame = pd.DataFrame({"bucket": pd.to_datetime([0, 60_000], unit="ms", utc=True), "events": [1, 2]})
    dataframe_util.convert_pandas_df_to_arrow_bytes(frame)
    frame.style.map(lambda _: "")._compute()
    figure = go.Figure(go.Bar(x=frame["bucket"], y=frame["events"]))
    figure.add_trace(go.Scatter(x=frame["bucket"], y=frame["events"]))
    figure.update_layout(height=200)
    figure.to_json()


def open_backends() -> None:
    """Build the runtime and the process cache, and open one PostgreSQL and one Redis connection."""
    from aim.cache import get_cache
    from aim.runtime import get_runtime

    runtime = get_runtime()
    runtime.db.fetch_value("ui.warmup", "SELECT 1")
    runtime.redis.ping()
    get_cache()


def freeze_long_lived_objects() -> None:
    """Move every object alive now (modules, classes, the runtime) out of the garbage collector's scans.

    Streamlit runs gc.collect(2) after every script run (runner.postScriptGC). With pandas, Plotly and
    PyArrow loaded that full collection took 90 to 115 ms of CPU on the 2-core development machine,
    and about 0.01 ms once these objects were frozen. Frozen objects are never freed, which suits
    objects that live as long as the process.
    """
    gc.collect()
    gc.freeze()
    logger.info("froze %d long-lived objects out of garbage collection", gc.get_freeze_count())


def warm() -> None:
    """Import the dashboard's modules and open its backends once per process.

    Logs any Exception instead of raising it.
    """
    if _started.is_set():
        return
    _started.set()
    started = time.perf_counter()
    try:
        imported = import_modules([*page_imports(), *LAZY_IMPORTS])
        exercise_renderers()
        imports_s = time.perf_counter() - started
        open_backends()
        freeze_long_lived_objects()
    except Exception:
        # Each request builds what it needs itself, so a failed warm-up only costs speed.
        logger.exception("dashboard warm-up failed after %.2f s; the first request does the remaining work",
                         time.perf_counter() - started)
    else:
        logger.info("dashboard warm-up finished in %.2f s (%d modules, imports and renderers %.2f s)",
                    time.perf_counter() - started, imported, imports_s)
    finally:
        _done.set()


def start() -> threading.Thread | None:
    """Start `warm` on a daemon thread, once per process. Returns the thread, or None when already started."""
    if _started.is_set():
        return None
    thread = threading.Thread(target=warm, name="aim-dashboard-warmup", daemon=True)
    thread.start()
    return thread


def wait(timeout_s: float | None = None) -> bool:
    """Block until the warm-up has finished; return False on timeout."""
    return _done.wait(timeout_s)


@contextlib.asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """st.App lifespan hook: start the warm-up and wait for it, at most WARMUP_WAIT_S, before serving."""
    from aim.ui.auth import use_navigation_mode

    use_navigation_mode()
    start()
    if not await asyncio.to_thread(wait, WARMUP_WAIT_S):
        logger.warning("dashboard warm-up still running after %.0f s; serving requests anyway", WARMUP_WAIT_S)
    yield
