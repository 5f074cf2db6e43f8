"""Small helpers shared by the benchmarks: timing, peak memory, machine facts and reporting.

Example:
    >>> times = repeat_timed(lambda: sum(range(1000)), repeat=3)
    >>> len(times)
    3
    >>> print_table([{"reader": "a", "tiles/s": 12.5}], title="demo")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Where results (JSON lines) and cached inputs go; git-ignored.
RESULTS_DIR = ROOT / "benchmarks" / "results"


def results_dir(*parts: str) -> Path:
    """A folder under :data:`RESULTS_DIR` (created if missing).

    Args:
        *parts: Sub-folder names.

    Returns:
        The folder.
    """
    path = RESULTS_DIR.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once.

    Args:
        fn: What to time.

    Returns:
        ``(seconds, result)`` (wall clock, :func:`time.perf_counter`).
    """
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat_timed(fn: Callable[[], Any], repeat: int = 3, warmup: int = 0) -> list[float]:
    """Wall-clock seconds of ``repeat`` runs of ``fn`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(repeat)]


def median(values: Iterable[float]) -> float:
    """The median (NaN for no values)."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


class RssSampler:
    """Samples the resident memory of this process and its descendants in a thread.

    Descendants include a local Ray started by this process (raylet and workers). Shared pages
    (the object store) count once per process mapping them, so the total is an upper bound.

    Args:
        interval: Seconds between samples.

    Example:
        >>> with RssSampler() as rss:
        ...     data = bytearray(50 * 2**20)
        >>> rss.peak_mib >= rss.start_mib
        True
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.start_mib = 0.0
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def current_mib() -> float:
        """Resident MiB of this process plus its descendants, now."""
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited meanwhile
                continue
        return total / 2**20

    @property
    def growth_mib(self) -> float:
        """Peak minus the level when sampling started."""
        return max(0.0, self.peak_mib - self.start_mib)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mib = max(self.peak_mib, self.current_mib())

    def __enter__(self) -> RssSampler:
        self.start_mib = self.peak_mib = self.current_mib()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mib = max(self.peak_mib, self.current_mib())


def machine_info() -> dict[str, Any]:
    """Facts about this machine that a result depends on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    memory_gib = None
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    """The checked-out commit (with ``+dirty`` if the tree has changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return "-" if value is None else str(value)


def print_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, title: str = ""
) -> None:
    """Print rows as an aligned text table (numbers right-aligned).

    Args:
        rows: One dict per row.
        columns: Column order (default: the keys of the first row).
        title: A line printed above the table.
    """
    if not rows:
        return
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(col), int | float) or row.get(col) is None for row in rows)
        for col in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    if title:
        print(f"\n{title}")
    print(line(columns))
    print(line(["-" * w for w in widths]))
    for r in cells:
        print(line(r))


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Append one JSON line for a benchmark run to ``benchmarks/results/<name>.jsonl``.

    The line holds ``payload`` plus the benchmark name, UTC time, git commit and machine facts.

    Args:
        name: Benchmark name (the file stem).
        payload: JSON-serialisable results.

    Returns:
        The file written.
    """
    record = {
        "benchmark": name,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine_info(),
        **payload,
    }
    path = results_dir() / f"{name}.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    print(f"\nresult appended to {path.relative_to(ROOT)}")
    return path


def nvidia_smi_sample() -> list[tuple[float, float]] | None:
    """``(utilisation %, memory MiB)`` of every GPU now (``nvidia-smi``); None if absent."""
    try:
        text = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split(",") for line in text.strip().splitlines() if line.strip()]
    return [(float(util), float(mem)) for util, mem in rows]


class ProcessTreeSampler:
    """Peak memory of a process and all its descendants (e.g. a child running a local Ray).

    Sums, over the tree, the proportional set size (PSS: shared pages split between the
    processes mapping them, so shared memory counts once) and the resident set size (RSS: an
    upper bound). Peaks are kept per :attr:`phase`, so a caller can separate start-up from the
    work itself. With ``gpu=True`` it also records ``nvidia-smi`` utilisation and memory.

    Args:
        root_pid: The tree's root (None: this process).
        interval: Seconds between samples.
        gpu: Also sample the GPUs.

    Example:
        >>> with ProcessTreeSampler(interval=0.05) as tree:
        ...     tree.phase = "work"
        ...     data = bytearray(20 * 2**20)
        >>> tree.peak("pss_mib", "work") > 0
        True
    """

    def __init__(self, root_pid: int | None = None, interval: float = 0.25, gpu: bool = False):
        import psutil

        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.gpu = gpu
        self.phase = "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self.gpu_samples: dict[str, list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample now and update the current phase's peaks."""
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the root exited
            return
        pss = rss = 0
        alive = 0
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except psutil.Error:  # exited meanwhile, or not ours to read
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            alive += 1
        phase = self.phase
        peak = self.peaks.setdefault(phase, {})
        for key, value in (("pss_mib", pss / 2**20), ("rss_mib", rss / 2**20), ("procs", alive)):
            peak[key] = max(peak.get(key, 0.0), float(value))
        if self.gpu:
            gpus = nvidia_smi_sample()
            if gpus:
                util = sum(u for u, _ in gpus) / len(gpus)
                self.gpu_samples.setdefault(phase, []).append((util, sum(m for _, m in gpus)))

    def peak(self, key: str, phase: str | None = None) -> float:
        """Peak of ``key`` (``pss_mib``, ``rss_mib``, ``procs``) in a phase (None: all phases)."""
        values = [p[key] for name, p in self.peaks.items() if phase in (None, name) and key in p]
        return max(values) if values else float("nan")

    def gpu_summary(self, phase: str) -> dict[str, float] | None:
        """Mean utilisation (%) and peak memory (MiB) of the GPUs in a phase, if sampled."""
        samples = self.gpu_samples.get(phase)
        if not samples:
            return None
        return {
            "util_mean_pct": statistics.fmean(u for u, _ in samples),
            "util_max_pct": max(u for u, _ in samples),
            "memory_peak_mib": max(m for _, m in samples),
            "samples": float(len(samples)),
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcessTreeSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
