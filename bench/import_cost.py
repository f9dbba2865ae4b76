"""Import cost: what the provider adds to every DAG parse, beyond ``import airflow.sdk``.

Each variant runs in a fresh interpreter: ``import airflow.sdk`` is timed first (the baseline, which
the DAG processor pays anyway), then the variant is timed in the same process (time.perf_counter):

* ``operator``: ``import airflow_provider_shortint.operators.short_interest``;
* ``dag <file>``: loading each example DAG file in dags/ as the DAG processor does (a module from its
  file location, dags/ on sys.path), including everything it imports and builds.

The daily DAG is also loaded with ``SHORTINT_TABLE_FORMAT=delta`` and ``=iceberg``: a DAG naming a table
format must not import its library. Reported: median over repeats of the extra milliseconds (goal
<= +50 ms), beside the median of the ``airflow.sdk`` import itself; and which heavy modules (pandas,
pyarrow, deltalake, pyiceberg, ...) the variant pulled in (goal: none of those four). The extra time
is measured inside one process because the airflow.sdk import alone varies by hundreds of ms between
processes on this machine. Bytecode is
cached (bench/_util.py quiet_env) and one unmeasured run per variant fills the cache first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._util import REPO, Report, median, quiet_env

HEAVY = ("pandas", "pyarrow", "deltalake", "pyiceberg", "numpy", "duckdb", "requests", "polars")
#: Never imported by a DAG parse: the goal of the "imported?" rows.
PARSE_FREE = ("pandas", "pyarrow", "deltalake", "pyiceberg")
#: The table formats the daily DAG is also parsed with.
TABLE_FORMATS = ("delta", "iceberg")

CHILD = r"""
import importlib.util, json, sys, time
target = sys.argv[1]
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
before = set(sys.modules)
if target == "operator":
    import airflow_provider_shortint.operators.short_interest
else:
    # as the DAG processor loads a DAG file: a module from a file location, its folder on sys.path
    sys.path.insert(0, str(__import__("pathlib").Path(target).parent))
    spec = importlib.util.spec_from_file_location("unusual_prefix_dag_under_test", target)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
t2 = time.perf_counter()
new = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({"sdk": t1 - t0, "extra": t2 - t1, "new_top_level": new}))
"""


# The same Airflow features as the example DAGs (@dag, @task, Param, mapping, a cron schedule), no provider:
# what any DAG of this shape costs; the provider's share of a DAG's figure is the difference.
REFERENCE_DAG = """
import pendulum
from airflow.sdk import Param, dag, task


@dag(schedule="30 22 * * 1-5", start_date=pendulum.datetime(2026, 1, 1), catchup=False,
     params={"symbols": Param("HK.00700", type="string")})
def reference_dag():
    @task
    def split(params=None) -> list[list[str]]:
        return [[params["symbols"]]]

    @task
    def load(chunk: list[str]) -> int:
        return len(chunk)

    load.expand(chunk=split())


reference_dag()
"""


def measure(target: str, env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, target], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"import of {target} failed:\n{result.stderr[-2000:]}")
    parsed: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def run(quick: bool = False) -> Report:
    repeat = 3 if quick else 5
    report = Report("import_cost", "extra import time over `import airflow.sdk` (fresh process each)")
    dags = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
    with tempfile.TemporaryDirectory(prefix="bench-import-") as home:
        reference = Path(home, "reference_dag.py")
        reference.write_text(REFERENCE_DAG)
        env = quiet_env(AIRFLOW_HOME=home, SHORTINT_LAKE_PATH=f"{home}/lake")
        envs = {"operator": env, **{str(p): env for p in dags}, str(reference): env}
        daily = str(REPO / "dags" / "shortint_daily.py")
        for table_format in TABLE_FORMATS:  # the same file, another table format: "<path>|delta"
            lake = "shortint.short_interest" if table_format == "iceberg" else f"{home}/{table_format}"
            envs[f"{daily}|{table_format}"] = {
                **env,
                "SHORTINT_TABLE_FORMAT": table_format,
                "SHORTINT_LAKE_PATH": lake,
            }
        targets = list(envs)
        for target in targets:  # first runs write airflow.cfg and the .pyc cache: not measured
            measure(target.split("|")[0], envs[target])
        runs: dict[str, list[dict[str, object]]] = {target: [] for target in targets}
        for i in range(repeat):
            for target in targets if i % 2 == 0 else reversed(targets):
                runs[target].append(measure(target.split("|")[0], envs[target]))
    sdk_all = [float(r["sdk"]) for rs in runs.values() for r in rs]  # type: ignore[arg-type]
    for target in targets:
        extra = median([float(r["extra"]) for r in runs[target]])  # type: ignore[arg-type]
        sdk = median([float(r["sdk"]) for r in runs[target]])  # type: ignore[arg-type]
        new = set().union(*(set(r["new_top_level"]) for r in runs[target]))  # type: ignore[call-overload]
        heavy = sorted(name for name in HEAVY if name in new)
        path, _, table_format = target.partition("|")
        label = "operator module" if target == "operator" else f"dag {Path(path).name}"
        if table_format:
            label += f", SHORTINT_TABLE_FORMAT={table_format}"
        if target.endswith("reference_dag.py"):
            report.add(
                "reference DAG, no provider (@dag/@task/cron)",
                f"+{extra * 1000:,.0f} ms",
                f"{sdk * 1000:,.0f} ms airflow.sdk",
                f"{extra / sdk:.3f}",
                "(info)",
            )
            continue
        report.add(
            label,
            f"+{extra * 1000:,.0f} ms",
            f"{sdk * 1000:,.0f} ms airflow.sdk",
            f"{extra / sdk:.3f}",
            "<= +50 ms",
            extra <= 0.050,
        )
        lazy = not set(PARSE_FREE) & set(heavy)
        report.add(
            "  pandas/pyarrow/deltalake/pyiceberg imported?",
            "no" if lazy else f"YES: {', '.join(h for h in heavy if h in PARSE_FREE)}",
            f"also new: {', '.join(h for h in heavy if h not in PARSE_FREE) or '-'}",
            "",
            "none",
            lazy,
        )
    report.notes.append(
        f"median of {repeat} fresh processes per row; airflow.sdk alone: median "
        f"{median(sdk_all) * 1000:,.0f} ms, range {min(sdk_all) * 1000:,.0f}..{max(sdk_all) * 1000:,.0f} ms"
        + ("" if dags else "; no example DAGs in dags/ yet")
    )
    return report


if __name__ == "__main__":
    print(run().render())
