"""The performance-and-scale suite: ``python scripts/benchmark.py suite=perf``.

Four sections, each stage measured in a fresh process (``suite.isolate``) with medians of
``suite.repeats`` runs:

1. ``prep``: data -> features -> windows on one file (the 36-symbol hourly file), against the
   pandas reference of :mod:`~market_regimes.benchmarks.reference` on a slice of it;
2. ``training``: windows/s of the Lightning training step against a bare PyTorch loop;
3. ``scale``: a synthetic market of many assets and years through every stage, at three sizes
   so that the growth of each stage when assets or years double can be read off;
4. ``inference``: ``infer_latest.py`` as a process and the in-process ``infer`` call;
5. ``walk_forward``: the walk-forward job on the real-data experiment, end to end, per fold.

Results go to ``report.json`` and ``PERFORMANCE.md`` in the run directory, and the markdown to
``suite.doc_path`` when set (the committed ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from market_regimes.benchmarks.measure import cpu_times, machine, median_of, repeat_stage, run_stage, steal_share
from market_regimes.benchmarks.output import command_line, publish, repo_root, write_report  # noqa: F401 (repo_root re-exported)
from market_regimes.benchmarks.report import render, targets
from market_regimes.errors import ConfigError

log = logging.getLogger(__name__)
_PKG = "market_regimes.benchmarks"
# as config/trainer/gpu.yaml: one GPU, bf16 mixed precision
GPU_TRAINER = {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed", "deterministic": False}
# scale stages whose parts grow differently (the clusterer is fitted on a fixed-size subsample)
PARTS = (("data", "simulate_s"), ("data", "panel_s"), ("train", "train_epoch_s"), ("cluster", "fit_s"),
         ("cluster", "predict_s"))


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def run_perf(cfg) -> Path:
    """Run every section of the suite, write the report, return the markdown path."""
    suite = cfg.suite
    # Runtime settings for this process (before torch loads) and every stage process; the
    # report lists them. See config/suite/perf.yaml for why.
    os.environ.update({k: str(v) for k, v in _plain(suite.get("env")).items()})
    run_dir = Path(cfg.paths.run_dir)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    report = {"suite": _plain(suite), "machine": machine(), "command": command_line(suite.command)}
    cpu0 = cpu_times()
    sections = {"prep": prep_section, "training": training_section, "scale": scale_section,
                "inference": inference_section, "walk_forward": walk_forward_section}
    chosen = suite.get("sections")
    chosen = list(sections) if chosen is None else list(chosen)
    report["provenance"] = merge_sections(report, suite.get("merge_from"), skip=chosen)
    for name in chosen:
        log.info("perf: section %s", name)
        c = cpu_times()
        report[name] = sections[name](cfg, work / name)
        report["provenance"][name] = {"run": _in_repo(run_dir), "date": report["machine"]["date"],
                                      "commit": report["machine"]["commit"],
                                      "load_average": report["machine"]["load_average"],
                                      "env": _plain(suite.get("env")), "steal_share": steal_share(c)}
        _write(run_dir, report)  # partial results survive a failure later on
    report["machine"]["load_average_end"] = machine()["load_average"]
    report["machine"]["steal_share"] = steal_share(cpu0)
    report["targets"] = targets(report)
    md = _write(run_dir, report)
    shutil.rmtree(work, ignore_errors=True)
    publish(md, suite.get("doc_path"))
    publish(run_dir / "report.json", suite.get("json_path"))
    return md


SECTIONS = ("prep", "training", "scale", "inference", "walk_forward")


def merge_sections(report: dict, runs, skip=()) -> dict:
    """Copy into ``report`` the sections of earlier runs (``suite.merge_from``: run directories or
    report JSON files such as the committed ``docs/performance.json``, later ones winning) that
    this run does not measure itself; return where each came from.

    This re-measures one section (after a change that concerns it) without repeating the hour
    of the others; the report says which run, commit and machine load every section comes from.
    """
    provenance = {}
    for run in [runs] if isinstance(runs, str) else list(runs or []):
        path = Path(run) if Path(run).is_file() else Path(run) / "report.json"
        if not path.exists():
            raise ConfigError(f"suite.merge_from: {path} does not exist")
        earlier = json.loads(path.read_text())
        for name in SECTIONS:
            if name in earlier and name not in skip:
                report[name] = earlier[name]
                m = earlier["machine"]
                origin = (earlier.get("provenance") or {}).get(name) or {}
                if origin.get("date") and origin.get("date") != m["date"]:
                    # merged into that report from a run before it: keep the section's own origin
                    provenance[name] = origin
                    continue
                provenance[name] = {"run": str(run), "date": m["date"], "commit": m["commit"],
                                    "load_average": m["load_average"],
                                    "env": (earlier.get("suite") or {}).get("env") or {},
                                    "steal_share": origin.get("steal_share")}
    return provenance


def _in_repo(path: Path) -> str:
    """``path`` relative to the repository when inside it (the committed report names no machine's paths)."""
    try:
        return str(Path(path).resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def _write(run_dir: Path, report: dict) -> Path:
    return write_report(run_dir, report, "PERFORMANCE.md", render)


def _stage(name: str, kwargs: dict, suite, repeats: int | None = None) -> dict:
    reps = suite.repeats if repeats is None else repeats
    out = repeat_stage(f"{_PKG}.{name}", kwargs, reps, bool(suite.isolate))
    log.info("%s: %.2f s, peak RSS %.0f MB (median of %d)", name, out["stage_s"], out["peak_rss_mb"], reps)
    return out


def prep_section(cfg, work: Path) -> dict:
    suite, sp = cfg.suite, cfg.suite.prep
    work.mkdir(parents=True, exist_ok=True)
    data, features = _plain(sp.data), _plain(cfg.features)
    window = {**_plain(cfg.window), **_plain(sp.get("window"))}
    panel = str(work / "panel.npz")
    out = {"data": data, "window": window}
    out["load"] = _stage("prep:load_stage", {"data": data, "panel_path": panel}, suite)
    out["features_windows"] = _stage("prep:features_windows_stage",
                                     {"panel_path": panel, "features": features, "window": window}, suite)
    out["prepare"] = _stage("prep:prepare_stage", {"data": data, "features": features, "window": window}, suite)
    slice_bars = sp.get("reference_slice_bars")
    out["reference"] = _stage("prep:reference_stage", {"panel_path": panel, "features": features, "window": window,
                                                       "slice_bars": None if slice_bars is None else int(slice_bars)},
                              suite, sp.get("reference_repeats"))
    fw, ref, load = out["features_windows"], out["reference"], out["load"]
    out["derived"] = {
        "stage_own_mb": fw["peak_rss_mb"] - fw["rss_inputs_mb"],
        "own_over_scaled_panel": (fw["peak_rss_mb"] - fw["rss_inputs_mb"]) / fw["scaled_panel_mb"],
        "process_over_scaled_panel": fw["peak_rss_mb"] / fw["scaled_panel_mb"],
        "speedup_measured": ref["reference_s"] / ref["project_s"],
    }
    if not ref.get("whole_panel"):
        # The reference's costs grow with bars (per-asset pandas work on every row, one correlation
        # matrix per bar) and with windows (one get_loc and copy each): scale each part by its count.
        bars = load["n_bars"] / ref["slice_bars"]
        ref_full = (ref["reference_features_s"] * bars
                    + ref["reference_windows_s"] * fw["n_windows"] / max(ref["n_windows"], 1))
        out["derived"].update(reference_full_estimate_s=ref_full,
                              speedup_full_estimate=ref_full / fw["features_windows_s"])
    return out


def training_section(cfg, work: Path) -> dict:
    import torch

    suite, st = cfg.suite, cfg.suite.training
    base = {"data": _plain(st.data), "features": _plain(cfg.features), "window": _plain(cfg.window),
            "model": _plain(cfg.model), "batch_size": int(st.batch_size), "steps": int(st.steps),
            "warmup": int(st.warmup)}
    out = {"trainer": _plain(cfg.trainer), "batch_size": base["batch_size"], "steps": base["steps"],
           "warmup": base["warmup"]}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            out["cuda"] = None  # no GPU on this machine
            continue
        trainer = _plain(cfg.trainer) if device == "cpu" else {**_plain(cfg.trainer), **GPU_TRAINER}
        loops = ("bare", "lightning", "datamodule")
        runs = {loop: [] for loop in loops}
        for _ in range(max(int(suite.repeats), 1)):  # interleaved, so a change in machine load hits all loops
            for loop in loops:
                runs[loop].append(run_stage(f"{_PKG}.throughput:train_loop_stage", {**base, "loop": loop, "device": device,
                                                                                     "trainer": trainer}, bool(suite.isolate)))
        rows = {loop: {**median_of(r), "runs": r} for loop, r in runs.items()}
        rows["overhead"] = rows["bare"]["windows_per_s"] / rows["lightning"]["windows_per_s"] - 1.0
        log.info("training %s: %s windows/s, Lightning overhead %+.1f %%", device,
                 {loop: round(rows[loop]["windows_per_s"]) for loop in loops}, 100 * rows["overhead"])
        out[device] = rows
        sizes = st.get("encode_pass_sizes")
        if sizes:
            enc = {k: base[k] for k in ("data", "features", "window", "model")}
            out[f"encode_{device}"] = run_stage(f"{_PKG}.throughput:encode_stage",
                                                {**enc, "device": device, "pass_sizes": [int(b) for b in sizes]},
                                                bool(suite.isolate))
    return out


def scale_section(cfg, work: Path) -> dict:
    suite, sc = cfg.suite, cfg.suite.scale
    features, window = _plain(cfg.features), _plain(cfg.window)
    cluster = {**_plain(cfg.cluster), **_plain(sc.get("cluster"))}
    cluster["params"] = {**_plain(cfg.cluster.get("params")), **_plain((sc.get("cluster") or {}).get("params"))}
    reps = int(sc.get("repeats", 1))
    short = int(sc.get("short_repeats", reps))  # data, features, windows, train: short, noisy stages
    warm = sc.get("warm_memory_mb")  # memory written and freed before each stage (measure.warm_memory)
    model, trainer = _plain(cfg.model), _plain(cfg.trainer)
    plan = [  # (stage, its arguments for a work dir and a size, runs)
        ("data", lambda w, a, b: {"work_dir": w, "n_assets": a, "n_bars": b}, short),
        ("features", lambda w, a, b: {"work_dir": w, "features": features}, short),
        ("windows", lambda w, a, b: {"work_dir": w, "window": window}, short),
        ("train", lambda w, a, b: {"work_dir": w, "model": model, "trainer": trainer, "batch_size": int(sc.batch_size),
                                   "windows_per_epoch": int(sc.windows_per_epoch)}, short),
        ("encode", lambda w, a, b: {"work_dir": w}, reps),
        ("cluster", lambda w, a, b: {"work_dir": w, "cluster": cluster, "fit_rows": int(sc.fit_rows)}, reps),
    ]
    shape = [(int(a), int(b)) for a, b in sc.sizes]
    dirs = [str(work / f"{a}x{b}") for a, b in shape]
    stages: list[dict] = [{} for _ in shape]
    for name, kwargs, runs in plan:
        # a stage's runs go round the sizes (1, 2, 3, 1, 2, 3, ..) so that a slow spell of a shared
        # machine falls on every size alike, not on the runs of one: the growth compares like with like
        results: list[list[dict]] = [[] for _ in shape]
        for _ in range(max(runs, 1)):
            for i, (w, (a, b)) in enumerate(zip(dirs, shape)):
                results[i].append(run_stage(f"{_PKG}.scale:{name}_stage", kwargs(w, a, b), bool(suite.isolate),
                                            warm_mb=warm))
        for i, r in enumerate(results):
            stages[i][name] = {**median_of(r), "runs": r}
            log.info("scale:%s at %d x %d: %.2f s, peak RSS %.0f MB (median of %d)", name, *shape[i],
                     stages[i][name]["stage_s"], stages[i][name]["peak_rss_mb"], len(r))
    for w in dirs:
        shutil.rmtree(w, ignore_errors=True)
    sizes = [{"n_assets": a, "n_bars": b, "stages": st, "total_s": sum(x["wall_s"] for x in st.values()),
              "peak_rss_mb": max(x["peak_rss_mb"] for x in st.values())} for (a, b), st in zip(shape, stages)]
    heap = None
    if sc.get("heap_probe"):
        # encode_windows must not leave heap behind per window (glibc's default allocator settings;
        # doubling the windows shows whether the growth is bounded or linear)
        n_a, n_b = int(sc.heap_probe[0]), int(sc.heap_probe[1])
        probe = {"n_bars": n_b, "window": window, "features": features, "model": _plain(cfg.model)}
        heap = {"half": run_stage(f"{_PKG}.scale:heap_probe_stage", {**probe, "n_assets": n_a // 2}),
                "full": run_stage(f"{_PKG}.scale:heap_probe_stage", {**probe, "n_assets": n_a})}
    main = sizes[0]
    growth = {}
    for other in sizes[1:]:
        if other["n_bars"] == main["n_bars"] and other["n_assets"] * 2 == main["n_assets"]:
            label = "assets x2"
        elif other["n_assets"] == main["n_assets"] and other["n_bars"] * 2 == main["n_bars"]:
            label = "years x2"
        else:
            continue
        growth[label] = {name: main["stages"][name]["wall_s"] / max(other["stages"][name]["wall_s"], 1e-9)
                         for name in main["stages"]}
        growth[label]["total"] = main["total_s"] / other["total_s"]
        for stage, part in PARTS:  # the parts that do not all grow with the data, apart
            growth[label][f"{stage}: {part}"] = (main["stages"][stage][part]
                                                 / max(other["stages"][stage][part], 1e-9))
    return {"sizes": sizes, "growth": growth, "fit_rows": int(sc.fit_rows), "cluster": cluster,
            "windows_per_epoch": int(sc.windows_per_epoch), "heap": heap, "runs": {"short": short, "long": reps, "interleaved": True},
            "warm_memory_mb": warm}


def inference_section(cfg, work: Path) -> dict:
    from market_regimes.benchmarks.latency import process_times

    suite, si = cfg.suite, cfg.suite.inference
    work.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    # a setup step, not a measurement; its own process, since it composes its own Hydra config
    bundle = run_stage(f"{_PKG}.latency:bundle_stage", {"work_dir": str(work), "config_dir": str(root / "config"),
                                                        "overrides": list(si.overrides)}, isolate=True)
    out = {"overrides": list(si.overrides), "asset": si.asset, "bundle_train_s": bundle["train_s"]}
    out["process"] = process_times(root / "scripts" / "infer_latest.py", bundle["bundle"], si.asset,
                                   int(si.process_repeats))
    out["call"] = _stage("latency:call_stage", {"bundle": bundle["bundle"], "asset": si.asset,
                                                "repeats": int(si.repeats)}, suite)
    return out


def walk_forward_section(cfg, work: Path) -> dict:
    sw = cfg.suite.walk_forward
    work.mkdir(parents=True, exist_ok=True)
    out = {"overrides": list(sw.overrides)}
    # always its own process: the job composes its own Hydra config
    out["run"] = repeat_stage(f"{_PKG}.latency:walk_forward_stage",
                              {"work_dir": str(work), "config_dir": str(repo_root() / "config"),
                               "overrides": list(sw.overrides)}, int(sw.get("repeats", 1)), isolate=True)
    log.info("walk-forward: %.1f min, peak RSS %.0f MB", out["run"]["walk_forward_s"] / 60, out["run"]["peak_rss_mb"])
    return out
