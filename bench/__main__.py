"""``python -m bench [--quick | --full] [NAME...]``: run the benchmarks and print one table per benchmark.

``--quick`` runs smaller versions (a smoke test); ``--full`` runs the benchmarks that have one at their
full size (``lake_scale``: a whole market, about 8 M rows).
"""

from __future__ import annotations

import importlib
import inspect
import platform
import sys
import time
import traceback
from pathlib import Path

from bench._util import Report

# Every module of this folder whose name does not start with "_" is a benchmark with a ``run(quick)``.
BENCHMARKS = tuple(
    sorted(path.stem for path in Path(__file__).parent.glob("*.py") if not path.stem.startswith("_"))
)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    full = "--full" in argv
    names = [arg for arg in argv if not arg.startswith("-")] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    print(
        f"# python {platform.python_version()} on {platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs{' (quick)' if quick else ''}{' (full)' if full else ''}",
        flush=True,
    )
    outcome: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        begin = time.perf_counter()
        try:
            options = {"quick": quick}
            if full and "full" in inspect.signature(module.run).parameters:
                options["full"] = True
            report: Report = module.run(**options)
        except Exception:
            traceback.print_exc()
            outcome[name] = "ERROR"
            continue
        report.seconds = time.perf_counter() - begin
        outcome[name] = "PASS" if report.passed else "MISS"
        print(report.render(), "\n", flush=True)
    summary = ", ".join(f"{name} {result}" for name, result in outcome.items())
    print(f"# {summary} ({time.perf_counter() - started:.0f} s total)")
    return 1 if "ERROR" in outcome.values() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
