"""Job-level timings: a bundle trained by the train job, then ``infer_latest.py`` and ``infer``;
the walk-forward job end to end."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def bundle_stage(work_dir: str, config_dir: str, overrides: list[str]) -> dict:
    """Train a bundle with ``config/train.yaml`` plus ``overrides`` (no plots, no logger)."""
    from hydra import compose, initialize_config_dir

    from market_regimes.training import run_training

    work = Path(work_dir)
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.artifacts_dir={work}", f"paths.run_dir={work}/run",
                                          "bundle.update_latest=false", "bundle.name=perf", "plots=false",
                                          "logger=none", "trainer.enable_progress_bar=false"])
    t0 = time.perf_counter()
    result = run_training(cfg)
    return {"bundle": str(result.bundle_path), "train_s": time.perf_counter() - t0,
            "symbols": list(cfg.data.symbols) if cfg.data.get("symbols") else None}


def call_stage(bundle: str, asset: str, repeats: int = 7) -> dict:
    """In-process ``infer(bundle, market, asset)`` (tail features + labels), median of ``repeats``
    calls after two warm-up calls; also its two parts and the full-history feature recompute."""
    from market_regimes.bundle import load_bundle
    from market_regimes.inference import history_bars, infer, load_bundle_market, scaled_windows

    t0 = time.perf_counter()
    b = load_bundle(bundle, encoder_only=True)
    market = load_bundle_market(b)
    setup_s = time.perf_counter() - t0

    def median_ms(fn) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    for _ in range(2):
        infer(b, market, asset)
    windows = scaled_windows(b, market)
    return {
        "setup_s": setup_s, "n_bars": len(market.panel.index), "tail_bars": history_bars(b),
        "call_ms": median_ms(lambda: infer(b, market, asset)),
        "tail_features_ms": median_ms(lambda: scaled_windows(b, market)),
        "labelling_ms": median_ms(lambda: infer(b, market, asset, windows=windows)),
        "full_history_features_ms": median_ms(lambda: scaled_windows(b, market, full=True)),
    }


def process_times(script: Path, bundle: str, asset: str, repeats: int) -> dict:
    """Wall time of the whole ``infer_latest.py --json`` process, ``repeats`` runs."""
    times, inner = [], []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(script), "--asset", asset, "--artifacts", bundle, "--json"],
                             capture_output=True, text=True, timeout=300, cwd=script.parent.parent)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise RuntimeError(f"infer_latest.py failed: {out.stderr.strip().splitlines()[-1:]}")
        inner.append(json.loads(out.stdout)["inference_ms"])
    return {"process_s": statistics.median(times), "process_runs_s": times,
            "card_inference_ms": statistics.median(inner)}


def walk_forward_stage(work_dir: str, config_dir: str, overrides: list[str]) -> dict:
    """The walk-forward job (``config/walk_forward.yaml`` plus ``overrides``), timed end to end:
    data, features, every fold's refit and labelling, drift, report and ``regimes.csv``."""
    from hydra import compose, initialize_config_dir

    from market_regimes.walk_forward import run_walk_forward

    work = Path(work_dir)
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("walk_forward", overrides=[*overrides, f"paths.artifacts_dir={work}",
                                                 f"paths.run_dir={work}/run", "plots=false", "logger=none",
                                                 "trainer.enable_progress_bar=false"])
    t0 = time.perf_counter()
    result = run_walk_forward(cfg)
    wall = time.perf_counter() - t0
    report = json.loads((result.run_dir / "report.json").read_text())
    folds = report["folds"]
    return {"walk_forward_s": wall, "n_folds": len(folds), "fold_s": [f["seconds"] for f in folds],
            "n_regimes": [f["n_regimes"] for f in folds], "train_start": folds[0]["train_start"],
            "first_train_end": folds[0]["train_end"], "test_end": folds[-1]["test_end"]}
