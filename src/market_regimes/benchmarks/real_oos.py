"""Suite 4 of the regime benchmark: real hourly BTC/ETH/BNB, walk-forward, out of sample.

The project's variants run ``market_regimes.walk_forward.run_walk_forward`` with the suite's
overrides (``experiment=real_btc_eth_bnb walk_forward.first_train_end=2022-12-31
walk_forward.n_folds=4``, plus ``model=features`` for the feature-only path). The anchors (Gaussian
HMM with forward-filter labels, the ``jumpmodels`` jump model with ``predict_online``) work on the
hand-made market return, volatility and breadth over 24 bars, on the same data, features and folds
(the folds of the first variant's walk-forward config, which every variant's report must match), and are scored with the same functions of
``market_regimes.evaluation``; regime ids are carried from fold to fold as the walk-forward
carries them (``walk_forward.carry_ids`` on the bars between the two training ends).

There is no truth here: the numbers are the entropy rate and mean run length of the
out-of-sample labels, label stability (ARI of a fold's model and the previous fold's model on the
fold's test bars), the out-of-sample R^2 of next-``horizon``-bar log volatility forecasts
(regime alone, the naive current-volatility forecast, naive plus regime) and the Brier score of
P(up over ``horizon`` bars | regime) against the training base rate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from market_regimes.benchmarks import anchors as A
from market_regimes.benchmarks.anchor_features import return_vol_breadth

log = logging.getLogger(__name__)


def summary(overall: dict) -> dict:
    """The benchmark's numbers from a walk-forward ``overall`` block."""
    p, vs, ds = overall["process"], overall["volatility_skill"], overall["direction_skill"]
    return {
        "entropy_rate_nats": p["entropy_rate_nats"], "mean_run_length_hours": p["mean_run_length_hours"],
        "switches_per_1000_bars": p["switches_per_1000_bars"], "stability_ari": overall.get("stability_ari_mean"),
        "vol_r2_regime": vs["regime"]["r2"], "vol_r2_naive": vs["naive"]["r2"],
        "vol_r2_naive_plus_regime": vs["naive_plus_regime"]["r2"],
        "vol_r2_gain": (None if vs["naive_plus_regime"]["r2"] is None or vs["naive"]["r2"] is None
                        else vs["naive_plus_regime"]["r2"] - vs["naive"]["r2"]),
        "brier_regime": ds["brier_regime"], "brier_base_rate": ds["brier_base_rate"], "brier_skill": ds["skill"],
        "n_regime_ids": overall.get("n_regime_ids"),
    }


def run_project_walk_forward(cfg) -> dict:
    """One project variant through ``run_walk_forward``; its report."""
    from market_regimes.walk_forward import run_walk_forward

    return run_walk_forward(cfg).report


def _anchor(name: str, params: dict, k: int, seed: int):
    if name == "hmm":
        return A.FilteredHMM(k, params.get("covariance_type", "full"), int(params.get("n_init", 5)), random_state=seed)
    return A.PackageJumpModel(k, float(params["jump_penalty"]), int(params.get("n_init", 10)), seed)


def anchor_walk_forward(name: str, params: dict, cfg, folds: list[dict], k: int) -> dict:
    """An anchor refitted per fold on the fold's training bars; evaluated like the walk-forward."""
    from market_regimes.evaluation import direction_skill, pool_skill, regime_process, strip_arrays, volatility_skill
    from market_regimes.features.ops import run_length
    from market_regimes.pipeline import load_features
    from market_regimes.walk_forward import carry_ids

    t0 = time.perf_counter()
    market, features = load_features(cfg)
    close, interval = market.panel.close, market.panel.interval
    h = int(cfg.walk_forward.get("horizon", 24))
    vol_name = next(n for n in features.names if n.startswith("log_rv_"))
    current_log_vol = np.where(features.valid.T, features.values[:, :, features.names.index(vol_name)].T, np.nan)
    X = return_vol_breadth(np.log(close).diff().to_numpy(), tuple(params.get("horizons", (24,))))
    ok = np.isfinite(X).all(axis=1)
    # score the cells the project scores: (bar, asset) where a window of the project ends
    windowed = run_length(features.valid.T) >= int(cfg.window.length)  # (T, A)
    T, symbols = len(close.index), list(close.columns)
    test_frames, vol_parts, dir_parts, stabilities, chosen = [], [], [], [], []
    prev, width = None, 0
    for fold in folds:
        train = np.zeros(T, dtype=bool)
        train[fold["train_start"] : fold["train_end"] + 1] = True
        test = np.zeros(T, dtype=bool)
        test[fold["test_start"] : fold["test_end"] + 1] = True
        span = ok.copy()
        span[: fold["train_start"]] = False
        span[fold["test_end"] + 1 :] = False
        fit_rows = ok & train
        fit_params = dict(params)
        prep = (lambda Z: np.asarray(Z, dtype=np.float64)) if name == "hmm" else A.jumpmodels_preprocessor(X[fit_rows])
        if name == "jump":
            fit_params["jump_penalty"], _ = A.package_penalty(prep(X[fit_rows]), k, params["penalties"],
                                                              int(params.get("n_init", 10)), int(cfg.seed))
            chosen.append(fit_params["jump_penalty"])
        est = _anchor(name, fit_params, k, int(cfg.seed)).fit(prep(X[fit_rows]))
        raw = np.full(T, -1, dtype=np.int64)
        raw[span] = est.predict_online(prep(X[span]))
        if prev is None:
            perm = np.arange(k)
        else:
            p_est, p_prep, p_perm, p_train_end = prev
            ref = np.full(T, -1, dtype=np.int64)
            ref[span] = p_perm[p_est.predict_online(p_prep(X[span]))]
            recent = span & (np.arange(T) > p_train_end) & (np.arange(T) <= fold["train_end"])
            perm = carry_ids(ref[recent], raw[recent], k, width)
            both = span & test
            stabilities.append(float(adjusted_rand_score(ref[both], raw[both])))
        width = max(width, int(perm.max()) + 1)
        labels = np.where(raw >= 0, perm[np.maximum(raw, 0)], -1)
        frame = pd.DataFrame(np.where(windowed, labels[:, None], -1), index=close.index, columns=symbols)
        test_frames.append(frame.iloc[fold["test_start"] : fold["test_end"] + 1])
        vol_parts.append(volatility_skill(close, frame, current_log_vol, train, test, width, h))
        dir_parts.append(direction_skill(close, frame, train, test, width, h))
        prev = (est, prep, perm, fold["train_end"])
    overall = {"n_regime_ids": width, "process": regime_process(test_frames, width, interval),
               "stability_ari_mean": float(np.mean(stabilities)) if stabilities else None,
               "volatility_skill": strip_arrays(pool_skill(vol_parts)),
               "direction_skill": strip_arrays(pool_skill(dir_parts))}
    out = {"overall": overall, "n_regimes": k, "seconds": round(time.perf_counter() - t0, 2)}
    if chosen:
        out["jump_penalties"] = chosen
    return out


def run_real_oos(scfg: dict, configs: dict, work: Path, earlier=lambda method: None, n_jobs: int = 1) -> dict:
    """Every project variant and anchor on the real data; ``configs``: variant -> composed config.
    Each method's row is written to ``work/<method>.json``; ``earlier(method)`` returns a row
    from an earlier run to reuse (or None). The methods left to compute run in ``n_jobs`` worker
    processes (each with its share of the cores' threads) on the folds of the first variant's
    walk-forward config."""
    from dataclasses import asdict

    from joblib import Parallel, delayed

    from market_regimes.benchmarks.measure import source_commit
    from market_regimes.pipeline import load_features
    from market_regimes.walk_forward import config_folds

    work.mkdir(parents=True, exist_ok=True)
    commit = source_commit()
    first = next(iter(configs.values()))
    k = int(scfg.get("anchor_regimes", 3))
    methods = [("project", name, cfg) for name, cfg in configs.items()]
    methods += [("anchor", name, params or {}) for name, params in (scfg.get("anchors") or {}).items()]
    rows = {}
    for _, name, _ in methods:
        row = earlier(name)
        if row is not None:
            rows[name] = {**row, "reused": True}
    todo = [m for m in methods if m[1] not in rows]
    if todo:  # the data are needed only to compute; a table re-rendered from reused rows takes their folds
        folds = [asdict(f) for f in config_folds(first, load_features(first)[1].index)[0]]
        stale = [name for name, row in rows.items() if row["fold_bounds"] != folds]
        for name in stale:  # reused rows from other data or folds are recomputed, not mixed in
            log.info("real_oos: the earlier %s ran on other folds; recomputed", name)
            del rows[name]
        todo = [m for m in methods if m[1] not in rows]
    else:
        folds = rows[methods[0][1]]["fold_bounds"]
    # worker processes share the cores; a single job (or n_jobs=1) runs here with the default threads
    threads = max(1, (os.cpu_count() or 1) // min(n_jobs, len(todo))) if n_jobs > 1 and len(todo) > 1 else None
    jobs = (delayed(_method_row)(kind, name, payload, first, folds, k, commit, threads) for kind, name, payload in todo)
    for name, row in Parallel(n_jobs=min(n_jobs, max(1, len(todo))), return_as="generator_unordered")(jobs):
        rows[name] = row
        (work / f"{name}.json").write_text(json.dumps(row, default=str))
    for name, row in rows.items():
        if row.get("reused"):
            (work / f"{name}.json").write_text(json.dumps(row, default=str))
        if row["fold_bounds"] != folds:
            raise RuntimeError(f"real_oos: {name} ran on other folds than the suite's")
    return {"folds": folds, "methods": {name: rows[name] for _, name, _ in methods}}


def _method_row(kind: str, name: str, payload, first, folds: list[dict], k: int, commit: str,
                threads: int | None) -> tuple[str, dict]:
    """One method's row: a project variant's walk-forward (``payload``: its config) or an anchor
    (``payload``: its parameters, on ``first``'s data); ``threads`` caps torch and BLAS threads."""
    from contextlib import nullcontext

    import torch
    from threadpoolctl import threadpool_limits

    if threads is not None:
        torch.set_num_threads(threads)
    with threadpool_limits(threads) if threads is not None else nullcontext():
        if kind == "project":
            report = run_project_walk_forward(payload)
            row = {**summary(report["overall"]), "n_regimes_per_fold": [f["n_regimes"] for f in report["folds"]],
                   "seconds": report["overall"]["seconds"], "fold_bounds": report["fold_bounds"]}
        else:
            res = anchor_walk_forward(name, payload, first, folds, k)
            row = {**summary(res["overall"]), "n_regimes_per_fold": [res["n_regimes"]] * len(folds),
                   "seconds": res["seconds"], "fold_bounds": folds,
                   **{key: v for key, v in res.items() if key == "jump_penalties"}}
    return name, {**row, "commit": commit}
