"""Run every benchmark module's ``main()`` in turn.

A benchmark module is any ``benchmarks/<name>.py`` (other than this one, ``common`` and
``__init__``) that defines ``main``. Each runs in its own Python process, with its defaults,
so one benchmark's Ray cluster, caches and peak memory do not leak into the next; a failure is
reported and the others still run. Each module prints its own tables and appends its own JSON
line under ``benchmarks/results/``; this script ends with a summary of exit codes and times.

Run: ``python -m benchmarks.run_all [--only tile_streaming,...] [--skip ...] [--list]``.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, print_table

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "common", "run_all"}


def benchmark_modules() -> list[str]:
    """Names of the benchmark modules (files in ``benchmarks/`` defining ``main``), sorted."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem in NOT_BENCHMARKS or path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            names.append(path.stem)
    return names


def run_module(name: str) -> tuple[int, float]:
    """Run ``benchmarks.<name>.main()`` in a fresh interpreter; its exit code and seconds."""
    code = f"from benchmarks.{name} import main; main()"
    print(f"\n=== {name} " + "=" * max(0, 90 - len(name)), flush=True)
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    return completed.returncode, time.perf_counter() - start


def _names(value: str) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()}


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 if every benchmark succeeded, else 1.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated modules to run")
    parser.add_argument("--skip", default="", help="comma-separated modules to leave out")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    modules = benchmark_modules()
    if args.list:
        print("\n".join(modules))
        return 0
    only, skip = _names(args.only), _names(args.skip)
    unknown = (only | skip) - set(modules)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {modules}")
    selected = [m for m in modules if (not only or m in only) and m not in skip]
    rows = []
    for name in selected:
        code, seconds = run_module(name)
        rows.append({"benchmark": name, "exit": code, "seconds": round(seconds, 1)})
    print_table(rows, title="Benchmarks run")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
