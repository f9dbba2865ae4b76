"""Small helpers shared by the benchmarks: timing, medians, peak memory, result tables, sandbox setup.

Peak memory is measured in a fresh subprocess per variant (see :func:`peak_memory`): Python-side peak
from ``tracemalloc``, Arrow-side peak from ``pyarrow.default_memory_pool().max_memory()`` less what the
pool held before the step (a fresh pool per process), and the peak resident set size of the step:
``VmHWM`` from /proc/self/status after resetting it (``echo 5 > /proc/self/clear_refs``) just before the
step, minus the RSS at that moment. (``ru_maxrss`` is useless here: a child started by fork+exec inherits
its parent's high-water mark.)
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# -- timing ----------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` took, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(
    variants: dict[str, Callable[[], Any]],
    repeat: int,
    setup: Callable[[str, int], None] | None = None,
) -> dict[str, list[float]]:
    """Time every variant ``repeat`` times, alternating A, B, A, B... (noise hits both alike).

    ``setup(name, i)`` runs untimed before each call (e.g. a fresh output directory).
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeat):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            if setup is not None:
                setup(name, i)
            seconds, _ = timed(variants[name])
            times[name].append(seconds)
    return times


# -- peak memory -----------------------------------------------------------------------------------------


def current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux /proc)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """High-water mark of the resident set size (VmHWM), in bytes."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@contextmanager
def measure_peak() -> Iterator[dict[str, int]]:
    """Peak memory of the block; only meaningful in a process that runs nothing else (a subprocess)."""
    import tracemalloc

    import pyarrow as pa

    out: dict[str, int] = {}
    pool = pa.default_memory_pool()
    arrow_before = pool.bytes_allocated()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # reset VmHWM to the current RSS
    rss_before = current_rss()
    tracemalloc.start()
    try:
        yield out
    finally:
        _, python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["python_peak"] = python_peak
        # The pool's high-water mark since the process started, less what was live before the block
        # (the input table): exact as long as loading the input peaked no higher than the block.
        out["arrow_peak"] = max((pool.max_memory() or 0) - arrow_before, 0)
        out["rss_growth"] = max(peak_rss() - rss_before, 0)


def peak_memory(module: str, *args: str, timeout: float = 300) -> dict[str, int]:
    """Run ``python -m MODULE --memory ARGS...`` in a fresh process; it prints one JSON dict last."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--memory", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=quiet_env(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} --memory {args} failed:\n{result.stderr[-3000:]}")
    parsed: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


# -- environment -----------------------------------------------------------------------------------------


def quiet_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: a throw-away AIRFLOW_HOME unless one is set, quiet logging.

    Bytecode caching is switched on, into a bench-owned folder (PYTHONPYCACHEPREFIX), whatever
    PYTHONDONTWRITEBYTECODE says: a deployed Airflow has .pyc files, and compiling every module from
    source on each start would triple the import times measured.
    """
    env = dict(os.environ)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    env.setdefault("AIRFLOW_HOME", str(tmp / "shortint-bench-airflow"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "shortint-bench-pycache")
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def quiet_logs() -> None:
    """Keep per-symbol INFO lines of the operator, hook and lake out of the benchmark tables."""
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("airflow", "airflow.task", "airflow_provider_shortint", "airflow.task.operators"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    except Exception:  # structlog absent or already frozen: logs are only noise, not an error
        pass


def register_connection(conn_id: str, url: str, **extra: Any) -> str:
    """An Airflow connection through AIRFLOW_CONN_<ID> (the form tests/conftest.py uses)."""
    conn = {"conn_type": "shortint", "host": url, "extra": {"backoff_base": 0.05, **extra}}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return conn_id


# -- result tables ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a result table: a measured figure, what it is compared against, and the goal."""

    metric: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    ok: bool | None = None  # None: informational

    @property
    def status(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


@dataclass
class Report:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    @property
    def passed(self) -> bool:
        return all(row.ok is not False for row in self.rows)

    def render(self) -> str:
        header = ("metric", "measured", "baseline", "ratio", "goal", "")
        cells = [header] + [(r.metric, r.measured, r.baseline, r.ratio, r.goal, r.status) for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = [f"== {self.name}: {self.title} ({self.seconds:.0f} s)"]
        for row in cells:
            lines.append(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )
        lines.extend(f"   {note}" for note in self.notes)
        return "\n".join(lines)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms" if seconds < 0.1 else f"{seconds * 1000:,.0f} ms"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


# -- the operator's work path ----------------------------------------------------------------------------


def run_operator(
    conn_id: str, lake_path: str, symbols: list[str], mode: str, page_size: int = 90
) -> dict[str, Any]:
    """``ShortInterestToParquetOperator.execute`` on a local lake, outside a DAG run; its summary dict.

    The hook is the one ``conn_id``'s type registers (REST or OpenD), opened and closed by the operator.
    ``hook_requests`` is the summary's ``requests`` (the hook's own count), which benchmarks compare
    with the server's count.
    """
    import contextvars

    from airflow.sdk.bases.operator import ExecutorSafeguard

    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    operator = ShortInterestToParquetOperator(
        task_id="bench",
        symbols=symbols,
        lake_path=lake_path,
        mode=mode,
        page_size=page_size,
        shortint_conn_id=conn_id,
        outlets=[],  # no asset events outside a DAG run
    )
    # As Airflow's task runner does: mark the operator as the one running, so `execute` does not log
    # "cannot be called outside of the Task Runner!" into the result tables; the copy keeps it local.
    ctx = contextvars.copy_context()
    ctx.run(ExecutorSafeguard.tracker.set, operator)
    summary: dict[str, Any] = ctx.run(operator.execute, context={})
    summary["hook_requests"] = summary["requests"]
    return summary
