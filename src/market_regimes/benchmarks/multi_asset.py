"""Suite 3 of the regime benchmark: multi-asset synthetic markets from the project's generator.

One case is one scenario (``volatility``, ``correlation``, ``crash``; ``data.synthetic.SCENARIOS``)
and seed, loaded exactly as ``data=synthetic data.scenario=... data.seed=...`` loads it. Every
method is fitted on the training period the project's window config defines
(``window.train_fraction``, 70 % by default) and labels every bar causally; labels are scored
against the planted regimes after the training period (out of sample) and on all labelled bars.

The project chooses its number of regimes itself (``right_k``: whether it found the planted
number); the anchors are given the planted number. Their inputs are the hand-made market return,
volatility and breadth over ``horizons`` bars (``anchor_features.return_vol_breadth``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from market_regimes.benchmarks import anchors as A
from market_regimes.benchmarks.anchor_features import return_vol_breadth
from market_regimes.benchmarks.scoring import agreement


def _market_anchor(name: str, params: dict, X: np.ndarray, train: np.ndarray, k: int, seed: int):
    """(T,) labels of an anchor on market features X (-1 where X is not finite) and its choices."""
    ok = np.isfinite(X).all(axis=1)
    fit_rows = ok & train
    out = np.full(len(X), -1, dtype=np.int64)
    info = {}
    if name == "hmm":
        est = A.FilteredHMM(k, params.get("covariance_type", "full"), int(params.get("n_init", 5)), random_state=seed)
        out[ok] = est.fit(X[fit_rows]).predict_online(X[ok])
    elif name == "kmeans":
        out[ok] = A.KMeansAnchor(k, random_state=seed).fit(X[fit_rows]).predict_online(X[ok])
    elif name == "jump":
        prep = A.jumpmodels_preprocessor(X[fit_rows])
        penalty, table = A.package_penalty(prep(X[fit_rows]), k, params["penalties"], int(params.get("n_init", 10)), seed)
        out[ok] = A.PackageJumpModel(k, penalty, int(params.get("n_init", 10)), seed).fit(prep(X[fit_rows])) \
            .predict_online(prep(X[ok]))
        info = {"jump_penalty": penalty, "validation": table}
    else:
        raise ValueError(f"unknown anchor {name!r}")
    return out, info


def market_anchors(anchors: dict, close, train: np.ndarray, k: int, seed: int) -> dict:
    """Labels of every anchor on the hand-made market features of a (T, A) close frame."""
    results = {}
    log_ret = np.log(close).diff().to_numpy()
    for name, params in (anchors or {}).items():
        if name not in ("hmm", "kmeans", "jump"):
            continue  # WK-means and the oracle need a univariate series with known parameters
        t0 = time.perf_counter()
        X = return_vol_breadth(log_ret, tuple((params or {}).get("horizons", (24,))))
        labels, info = _market_anchor(name, params or {}, X, train, k, seed)
        results[name] = (labels, {"n_regimes": k, "seconds": round(time.perf_counter() - t0, 2), **info})
    return results


def run_case(case: dict) -> dict:
    """Fit, label and score every method on one synthetic market (runs in a worker process)."""
    from market_regimes.benchmarks.project_path import run_project
    from market_regimes.data import load_market
    from market_regimes.windows import WindowConfig, training_cutoff

    work = Path(case["work_dir"])
    first_cfg = next(iter(case["project"].values()))
    market = load_market({**first_cfg["data"], "scenario": case["scenario"], "seed": case["seed"]})
    index = market.panel.index
    train_end = training_cutoff(index, WindowConfig.from_dict(first_cfg["window"]))
    truth = market.truth.to_numpy()
    k_true = int(len(np.unique(truth)))
    fits = {}
    for name, plain in case["project"].items():
        cfg = OmegaConf.create({**plain, "seed": case["seed"]})
        fits[name] = run_project(cfg, market.panel, train_end, work / name)
    for name, spec in (case.get("reselect") or {}).items():
        fits[name] = fits[spec["of"]].reselect(spec["cluster"])
    results = {name: (f.labels.to_numpy(), {"n_regimes": f.n_regimes, "seconds": round(f.seconds, 2)})
               for name, f in fits.items()}
    train = np.asarray(index <= train_end)
    results.update(market_anchors(case.get("anchors"), market.panel.close, train, k_true, case["seed"]))
    masks = {"out_of_sample": ~train, "all": np.ones(len(index), dtype=bool)}
    scored = {}
    for name, (labels, info) in results.items():
        scored[name] = {**info, "right_k": info["n_regimes"] == k_true,
                        **{part: agreement(truth, labels, m) for part, m in masks.items()}}
    return {"suite": case["suite"], "case": case["scenario"], "seed": case["seed"], "n_bars": int(len(index)),
            "n_assets": len(market.panel.symbols), "n_true_regimes": k_true,
            "train_end": str(train_end), "methods": scored}
