"""Measuring a stage: wall time and peak resident memory, in a fresh process or in this one.

``run_stage("module:function", kwargs)`` runs the function in a new Python process (so a stage
never inherits the memory peak, caches or imports of another), and returns its result dict
with ``peak_rss_mb`` (the child's VmHWM) and ``process_s`` (the child's whole life, start and
imports included). With ``isolate=False`` the function runs here, with the peak reset first
(``/proc/self/clear_refs``), which is faster but shares imports and allocator state.

``warm_mb`` writes that much fresh memory and frees it just before the stage's clock starts
(:func:`warm_memory`; after its imports, and the peak is reset after it, so it counts in neither
the time nor the peak RSS).

A stage function takes JSON-able keyword arguments and returns a JSON-able dict. It may call
:func:`mark` to record the resident memory at a point (e.g. once its inputs are loaded), so a
report can tell the stage's own memory from that of its inputs.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MARKS: dict[str, float] = {}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    """Current resident memory of this process, MiB."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start (or the last :func:`reset_peak`), MiB."""
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset the peak to the current resident memory (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_times() -> tuple[float, float]:
    """(steal, total) CPU ticks of the whole machine so far (``/proc/stat``; zeros elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [float(x) for x in f.readline().split()[1:9]]  # user .. steal (guest is inside user)
    except (OSError, ValueError):
        return 0.0, 0.0
    return ticks[7] if len(ticks) > 7 else 0.0, sum(ticks)


def steal_share(since: tuple[float, float]) -> float | None:
    """Share of the machine's CPU time taken by the hypervisor for other guests since ``since``
    (a :func:`cpu_times` reading): on a shared virtual machine, time the benchmark could not run."""
    steal, total = cpu_times()
    d_total = total - since[1]
    return (steal - since[0]) / d_total if d_total > 0 else None


def mark(name: str) -> None:
    """Record the current resident memory under ``name`` (reported as ``rss_<name>_mb``)."""
    _MARKS[name] = rss_mb()


def warm_memory(mb: float, chunk_mb: int = 256) -> dict:
    """Write ``mb`` MiB of fresh memory in chunks of at most ``chunk_mb``, then free it all; return
    the first-touch rates (GB/s, GB = 2**30 bytes) of the slowest and of the median chunk.

    On a virtual machine whose host backs guest memory lazily, memory the guest has not used for a
    while costs several times more on its first touch (on this project's 2-core machine 0.7-0.9
    GB/s, against 4-5 GB/s for memory written and freed just before): without warming, two sizes
    of one stage compare how much cold memory each reached as much as their code.
    """
    import numpy as np

    chunks, rates = [], []
    for size in [chunk_mb] * int(mb // chunk_mb) + ([mb % chunk_mb] if mb % chunk_mb else []):
        t0 = time.perf_counter()
        a = np.empty(int(size * 2**17))  # float64: 2**17 per MiB
        a.fill(1.0)
        rates.append(size / 1024 / max(time.perf_counter() - t0, 1e-9))
        chunks.append(a)
    del chunks
    return {"warm_mb": float(mb), "warm_gbps_slowest": min(rates), "warm_gbps_median": statistics.median(rates)}


def _call(target: str, kwargs: dict, warm_mb: float | None = None) -> dict:
    module, func = target.split(":")
    fn = getattr(importlib.import_module(module), func)
    warm = {}
    if warm_mb and reset_peak():  # only where the peak can be reset after it
        warm = warm_memory(warm_mb)
        reset_peak()
    _MARKS.clear()
    cpu0 = cpu_times()
    t0 = time.perf_counter()
    result = dict(fn(**kwargs) or {})
    result.update(warm)
    result["stage_s"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_average_1m"] = os.getloadavg()[0]  # other work on the machine while this ran
    result["steal_share"] = steal_share(cpu0)
    result.update({f"rss_{k}_mb": v for k, v in _MARKS.items()})
    return result


def run_stage(target: str, kwargs: dict | None = None, isolate: bool = True, timeout: float | None = None,
              env: dict | None = None, warm_mb: float | None = None) -> dict:
    """Run ``module:function(**kwargs)`` and return its dict plus timing and memory (see module doc).

    ``env`` adds to the child's environment (a None value removes the variable); it has no
    effect with ``isolate=False``. ``warm_mb``: memory to warm before the clock starts
    (:func:`warm_memory`; its rates are added to the result)."""
    kwargs = kwargs or {}
    if not isolate:
        reset_peak()
        return _call(target, kwargs, warm_mb)
    with tempfile.TemporaryDirectory(prefix="mr-stage-") as tmp:
        args, out = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args.write_text(json.dumps({"target": target, "kwargs": kwargs, "warm_mb": warm_mb}))
        t0 = time.perf_counter()
        child_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
        proc = subprocess.run([sys.executable, "-m", "market_regimes.benchmarks.measure", str(args), str(out)],
                              capture_output=True, text=True, timeout=timeout, env=child_env)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            raise RuntimeError(f"stage {target} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        result = json.loads(out.read_text())
    result["process_s"] = elapsed
    return result


def repeat_stage(target: str, kwargs: dict | None = None, repeats: int = 3, isolate: bool = True,
                 timeout: float | None = None, env: dict | None = None) -> dict:
    """``repeats`` runs of a stage; numbers are medians, with every run kept under ``runs``."""
    runs = [run_stage(target, kwargs, isolate, timeout, env) for _ in range(max(int(repeats), 1))]
    return {**median_of(runs), "runs": runs}


def median_of(runs: list[dict]) -> dict:
    """Median of every numeric key present in all runs; other keys from the first run."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and all(
                isinstance(v, (int, float)) for v in values):
            out[key] = statistics.median(values)
    out["repeats"] = len(runs)
    return out


def machine() -> dict:
    """Where the numbers come from: CPU model and cores, memory, versions, load, date."""
    import numpy
    import pandas
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    return {
        "cpu_model": model, "cpu_cores": len(os.sched_getaffinity(0)), "memory_gb": round(mem / 2**20, 1),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
        "pandas": pandas.__version__, "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_commit() -> str | None:
    """The commit the running code comes from, with ``+dirty`` when tracked files differ from it
    (benchmark results record it; reports list the commits behind their numbers)."""
    commit = _git_commit()
    if commit is None:
        return None
    try:
        diff = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                              text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return commit + ("+dirty" if diff.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return commit


def _child(args_path: str, out_path: str) -> None:
    # run through the package module, not this ``__main__`` copy, so stages share its marks
    from market_regimes.benchmarks import measure

    spec = json.loads(Path(args_path).read_text())
    result = measure._call(spec["target"], spec["kwargs"], spec.get("warm_mb"))
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
