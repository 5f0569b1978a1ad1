"""The regime benchmark: ``python scripts/benchmark.py suite=regimes`` (or one suite, or ``*_quick``).

``suite.suites`` lists what runs, in order:

1. ``two_state``: Hardy two-state daily model, T in ``lengths``, ``seeds`` seeds (``univariate``);
2. ``switching_paths``: regime-switching gBm and Merton paths (``univariate``);
3. ``multi_asset``: the project's synthetic scenarios (``multi_asset``);
4. ``real_oos``: real BTC/ETH/BNB hourly, walk-forward (``real_oos``).

Each suite config names the project's variants (``project.overrides`` shared by all of them,
``project.variants``: name -> extra overrides, composed onto ``config/train.yaml`` or
``config/walk_forward.yaml`` exactly as the command line would; ``project.reselect``: name ->
``{of, cluster}``, the same latents clustered with another clusterer setting) and the anchors
with their parameters. Simulated cases (and the real-data suite's methods) run in ``suite.n_jobs``
worker processes; every finished case (and each method of the real-data suite) is written to
``work/`` at once, and ``suite.resume=<an earlier run dir>`` (or a list of them) reuses what is
found there. The report
(``report.json``, ``BENCHMARKS.md``) goes to the run directory and, when set, to
``suite.doc_path`` / ``suite.json_path``.

Every result of a run (computed or reused) is also archived in ``cases.jsonl.gz`` in the run
directory (one JSON line per case: its path under ``work/`` and its result, plus the results of
the resume sources that the run did not redo), copied to ``suite.archive_path`` when set. A
``suite.resume`` entry may name such an archive instead of a run directory: the committed
archive holds the per-case results behind the committed table, so a run of several hours can be
split over machines and a table re-rendered without recomputing. A reused case must hold every
method the suite config names; one that lacks some (from a run with fewer variants) is recomputed.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from market_regimes.benchmarks.measure import source_commit
from market_regimes.benchmarks.output import command_line, publish, write_report
from market_regimes.benchmarks.regime_report import render, summarize_suite
from market_regimes.errors import ConfigError
from market_regimes.serialize import json_default

log = logging.getLogger(__name__)
SUITE_NAMES = ("two_state", "switching_paths", "multi_asset", "real_oos")


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def versions() -> dict:
    """Versions of the packages that produce the numbers (None where one is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("numpy", "scipy", "pandas", "scikit-learn", "torch", "lightning", "hmmlearn", "jumpmodels"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def seeds(spec) -> list[int]:
    """``{start, count}`` or an explicit list."""
    if isinstance(spec, dict):
        return list(range(int(spec.get("start", 0)), int(spec.get("start", 0)) + int(spec["count"])))
    return [int(s) for s in spec]


def project_configs(scfg: dict, work: Path, config_name: str = "train") -> dict[str, dict]:
    """Variant name -> the composed config as a plain dict."""
    from market_regimes.benchmarks.project_path import project_config

    project = scfg.get("project") or {}
    shared = list(project.get("overrides") or [])
    return {name: _plain(project_config(shared + list(extra or []), work / name, config_name))
            for name, extra in (project.get("variants") or {}).items()}


def _cases(name: str, scfg: dict, work: Path) -> list[dict]:
    configs = project_configs(scfg, work / "project")
    common = {"suite": name, "project": configs, "reselect": (scfg.get("project") or {}).get("reselect") or {},
              "anchors": scfg.get("anchors") or {}}
    if name == "two_state":
        return [{**common, "model": "two_state", "case": f"T={T}", "n_train": int(T), "n_test": int(scfg["n_test"]),
                 "seed": s, "interval": scfg.get("interval", "1d")}
                for s in seeds(scfg["seeds"]) for T in scfg["lengths"]]  # seed-major: a partial run covers every T
    if name == "switching_paths":
        return [{**common, "model": m, "case": m, "path": scfg["path"], "fit_fraction": float(scfg["fit_fraction"]),
                 "seed": s, "interval": scfg.get("interval", "1h")}
                for s in seeds(scfg["seeds"]) for m in scfg["models"]]
    return [{**common, "scenario": sc, "case": sc, "seed": s} for s in seeds(scfg["seeds"]) for sc in scfg["scenarios"]]


def _case_file(root: Path, case: dict) -> Path:
    return root / case["suite"] / f"{case['case']}_seed{case['seed']}.json"


def _run_one(case: dict) -> dict:
    import logging as _logging

    import torch
    from threadpoolctl import threadpool_limits

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        _logging.getLogger(name).setLevel(_logging.WARNING)
    if case["suite"] == "multi_asset":
        from market_regimes.benchmarks.multi_asset import run_case
    else:
        from market_regimes.benchmarks.univariate import run_case
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # one process per core: BLAS/OpenMP threads only spin on small problems
        out = run_case(case)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["commit"] = case.get("commit")
    shutil.rmtree(case["work_dir"], ignore_errors=True)
    return out


ARCHIVE = "cases.jsonl.gz"


def reuse(resume: list, relative: Path) -> dict | None:
    """The first earlier result at ``relative`` under one of the ``resume`` sources: work
    directories, or archives loaded by :func:`read_archive` (dicts)."""
    for root in resume:
        if isinstance(root, dict):
            if relative.as_posix() in root:
                return root[relative.as_posix()]
        elif (root / relative).exists():
            return json.loads((root / relative).read_text())
    return None


def read_archive(path: Path) -> dict[str, dict]:
    """``{path under work/: result}`` of an archive written by :func:`write_archive`."""
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return {row["path"]: row["result"] for row in rows}


def _results(work: Path) -> dict[str, dict]:
    files = [*work.glob("cases/*/*.json"), *work.glob("real_oos/*.json")]
    return {f.relative_to(work).as_posix(): json.loads(f.read_text()) for f in files}


def write_archive(work: Path, dest: Path, earlier: list = ()) -> Path:
    """Every case result under ``work`` (``cases/``, ``real_oos/``) as gzipped JSON lines, sorted
    by path, together with those of the ``earlier`` resume sources that this run did not redo
    (the first source holding a path wins, as in :func:`reuse`): an archive resumed from and
    written to stays the union of every run's results."""
    rows: dict[str, dict] = {}
    for source in reversed(list(earlier)):
        rows.update(source if isinstance(source, dict) else _results(source))
    rows.update(_results(work))
    with gzip.open(dest, "wt") as fh:
        for path in sorted(rows):
            fh.write(json.dumps({"path": path, "result": rows[path]}, default=json_default) + "\n")
    return dest


def resume_sources(earlier) -> list:
    """``suite.resume`` entries: run directories (their ``work/``) or archive files (loaded)."""
    out = []
    for p in [earlier] if isinstance(earlier, str) else list(earlier or []):
        path = Path(p)
        if path.is_file():
            out.append(read_archive(path))
        elif (path / "work").is_dir():
            out.append(path / "work")
        else:
            raise ConfigError(f"suite.resume: {path} is neither a run directory (with work/) nor a {ARCHIVE} archive")
    return out


def run_cases(cases: list[dict], root: Path, n_jobs: int, resume: list[Path]) -> list[dict]:
    """Results of every case, from ``resume`` where it has them, else computed (in parallel)."""
    from joblib import Parallel, delayed

    done, todo = [], []
    commit = source_commit()  # once: every case of this run comes from the same code
    for i, case in enumerate(cases):
        old = reuse(resume, _case_file(Path("cases"), case))
        if old is not None and not _methods(case) <= set(old["methods"]):
            log.info("%s %s seed %s: the earlier result lacks %s; recomputed", case["suite"], case["case"],
                     case["seed"], sorted(_methods(case) - set(old["methods"])))
            old = None
        if old is not None:
            done.append({**old, "reused": True})
            _write_case(root, case, done[-1])
        else:
            todo.append({**case, "commit": commit,
                         "work_dir": str(root.parent / "scratch" / f"{case['suite']}_{i}")})
    log.info("%d cases to run (%d reused)", len(todo), len(done))
    results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(_run_one)(c) for c in todo)
    for k, res in enumerate(results, 1):
        _write_case(root, res, res)
        done.append(res)
        log.info("%s %s seed %s done in %.0f s (%d/%d)", res["suite"], res["case"], res["seed"], res["seconds"],
                 k, len(todo))
    return sorted(done, key=lambda r: (r["case"], r["seed"]))


def _methods(case: dict) -> set[str]:
    """The methods a case's result must hold: every project variant, reselection and anchor."""
    return set(case["project"]) | set(case["reselect"]) | set(case["anchors"])


def _write_case(root: Path, case: dict, result: dict) -> None:
    path = _case_file(root, case)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, default=json_default))


def run_suite_section(name: str, scfg: dict, work: Path, n_jobs: int, resume: list[Path]) -> dict:
    t0 = time.perf_counter()
    if name == "real_oos":
        from market_regimes.benchmarks.real_oos import run_real_oos

        configs = {n: OmegaConf.create(c) for n, c in project_configs(scfg, work / "project", "walk_forward").items()}
        out = run_real_oos(scfg, configs, work / "real_oos", lambda method: reuse(resume, Path("real_oos") / f"{method}.json"),
                           n_jobs)
    else:
        out = {"cases": run_cases(_cases(name, scfg, work), work / "cases", n_jobs, resume)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    results = out.get("cases") or list(out["methods"].values())
    out["n_reused"] = sum(bool(r.get("reused")) for r in results)
    out["n_computed"] = len(results) - out["n_reused"]
    out["compute_seconds"] = round(sum(float(r.get("seconds") or 0.0) for r in results), 1)
    return out


def run_regimes(cfg) -> Path:
    """Run the configured suites, write the report; return the markdown path."""
    from market_regimes.benchmarks.measure import machine

    suite = cfg.suite
    names = list(suite.suites)
    unknown = [n for n in names if n not in SUITE_NAMES]
    if unknown:
        raise ConfigError(f"suite.suites has unknown entries {unknown}; known: {', '.join(SUITE_NAMES)}")
    for package in ("hmmlearn", "jumpmodels"):
        from market_regimes.benchmarks.anchors import require

        require(package)  # fail before hours of work, not after
    run_dir = Path(cfg.paths.run_dir)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    earlier = suite.get("resume") or []
    earlier = [earlier] if isinstance(earlier, str) else list(earlier)
    resume = resume_sources(earlier)
    report = {"command": command_line(suite.command), "machine": machine(), "versions": versions(), "suites": {},
              "resumed_from": [str(p) for p in earlier]}
    t0 = time.perf_counter()
    for name in names:
        scfg = _plain(suite[name])
        log.info("regime benchmark: suite %s", name)
        section = run_suite_section(name, scfg, work, int(suite.get("n_jobs", 1)), resume)
        section["summary"] = summarize_suite(name, scfg, section)
        section["config"] = scfg
        report["suites"][name] = section
        _write(run_dir, report)
        write_archive(work, run_dir / ARCHIVE, resume)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["machine"]["load_average_end"] = machine()["load_average"]
    md = _write(run_dir, report)
    shutil.rmtree(work / "scratch", ignore_errors=True)
    tables = run_dir / "benchmarks.json"  # the tables without the per-case results (those stay in report.json)
    tables.write_text(json.dumps({**{k: v for k, v in report.items() if k != "suites"},
                                  "suites": {n: {k: v for k, v in sec.items() if k != "cases"}
                                             for n, sec in report["suites"].items()}}, indent=1, default=json_default))
    publish(md, suite.get("doc_path"))
    publish(tables, suite.get("json_path"))
    publish(run_dir / ARCHIVE, suite.get("archive_path"))
    return md


def _write(run_dir: Path, report: dict) -> Path:
    return write_report(run_dir, report, "BENCHMARKS.md", render, indent=1)
