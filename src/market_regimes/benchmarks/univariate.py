"""Suites 1 and 2 of the regime benchmark: univariate simulations with known regimes.

One *case* is one simulated series: every method is fitted on its first ``n_train`` bars and
labels every bar causally; labels are scored against the truth on the bars after ``n_train``
(out of sample) and on the training bars (in sample, from the first bar every method labels).

* ``two_state``: :func:`simulations.two_state_returns` (Hardy parameters), ``n_train`` = T in
  ``lengths``, followed by ``n_test`` bars.
* ``switching``: :func:`simulations.switching_path` (gBm, Merton), fitted on the first
  ``fit_fraction`` of the path.

Methods: the project's variants (``project``: name -> composed config; ``reselect``: name ->
``{of: variant, cluster: {...}}``, the same latents clustered again) and the anchors
(``anchors``: hmm, jump, kmeans, wkmeans; ``oracle`` for the two-state model, whose true
parameters are known).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from market_regimes.benchmarks import anchors as A
from market_regimes.benchmarks.anchor_features import JUMP_FEATURES, return_vol_breadth
from market_regimes.benchmarks.scoring import agreement
from market_regimes.benchmarks.simulations import (
    HARDY_MEANS,
    HARDY_TRANSITION,
    HARDY_VOLS,
    returns_panel,
    switching_path,
    two_state_returns,
)
from market_regimes.errors import ConfigError

N_TRUE = 2  # bull and bear; the anchors are given it, the project chooses its own


def simulate(case: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """(returns, truth, n_train) of a case."""
    if case["model"] == "two_state":
        r, s = two_state_returns(case["n_train"] + case["n_test"], case["seed"])
        return r, s, case["n_train"]
    p = case["path"]
    r, s = switching_path(case["model"], case["seed"], p["years"], p["steps_per_day"], p["n_episodes"],
                          p["episode_years"])
    return r, s, int(case["fit_fraction"] * len(r))


def _rows(X: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with finite inputs (all, and those in the training part)."""
    ok = np.isfinite(X).all(axis=1)
    train = ok.copy()
    train[n_train:] = False
    return ok, train


def _spread(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.full(len(ok), -1, dtype=np.int64)
    out[ok] = values
    return out


def anchor_labels(name: str, params: dict, r: np.ndarray, n_train: int, seed: int) -> tuple[np.ndarray, dict]:
    """(T,) causal labels of one anchor (-1 before its inputs exist) and what it chose."""
    if name == "oracle":
        return A.oracle_filter(r, HARDY_MEANS, HARDY_VOLS, HARDY_TRANSITION), {}
    if name == "hmm":
        est = A.FilteredHMM(N_TRUE, params.get("covariance_type", "full"), int(params.get("n_init", 5)),
                            random_state=seed).fit(r[:n_train])
        return est.predict_online(r), {}
    if name == "wkmeans":
        est = A.WassersteinKMeans(N_TRUE, int(params["window"]), int(params["step"]), int(params.get("n_init", 10)),
                                  random_state=seed).fit(r[:n_train])
        return est.predict_online(r), {}
    if name == "kmeans":
        X = return_vol_breadth(r, tuple(params["horizons"]))
        ok, train = _rows(X, n_train)
        est = A.KMeansAnchor(N_TRUE, random_state=seed).fit(X[train])
        return _spread(est.predict_online(X[ok]), ok), {}
    if name == "jump":
        kind = params.get("features", "downside")
        if kind not in JUMP_FEATURES:
            raise ConfigError(f"anchors.jump.features must be one of {', '.join(JUMP_FEATURES)}, got {kind!r}")
        X = JUMP_FEATURES[kind](r, tuple(params["halflives"]))
        ok, train = _rows(X, n_train)
        prep = A.jumpmodels_preprocessor(X[train])
        penalty, table = A.package_penalty(prep(X[train]), N_TRUE, params["penalties"], int(params.get("n_init", 10)), seed)
        est = A.PackageJumpModel(N_TRUE, penalty, int(params.get("n_init", 10)), seed).fit(prep(X[train]))
        return _spread(est.predict_online(prep(X[ok])), ok), {"jump_penalty": penalty, "validation": table}
    raise ValueError(f"unknown anchor {name!r}")


def project_labels(case: dict, r: np.ndarray, n_train: int, work: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """Labels of every project variant: (T,) labels and {n_regimes, seconds}."""
    from market_regimes.benchmarks.project_path import run_project

    panel = returns_panel(r, case["interval"], seed=case["seed"])
    train_end = panel.index[n_train - 1]
    out, fits = {}, {}
    for name, plain in case["project"].items():
        cfg = OmegaConf.create({**plain, "seed": case["seed"]})
        fits[name] = run_project(cfg, panel, train_end, work / name)
    for name, spec in (case.get("reselect") or {}).items():
        fits[name] = fits[spec["of"]].reselect(spec["cluster"])
    for name, fit in fits.items():
        out[name] = (fit.labels.to_numpy()[:, 0], {"n_regimes": fit.n_regimes, "seconds": round(fit.seconds, 2)})
    return out


def run_case(case: dict) -> dict:
    """Fit, label and score every method on one simulated series (runs in a worker process)."""
    r, truth, n_train = simulate(case)
    work = Path(case["work_dir"])
    results = project_labels(case, r, n_train, work)
    for name, params in (case.get("anchors") or {}).items():
        if name == "oracle" and case["model"] != "two_state":
            continue
        t0 = time.perf_counter()
        labels, info = anchor_labels(name, params or {}, r, n_train, case["seed"])
        results[name] = (labels, {"n_regimes": N_TRUE, "seconds": round(time.perf_counter() - t0, 2), **info})
    first = max(int(np.argmax(lab >= 0)) for lab, _ in results.values())
    bars = np.arange(len(r))
    masks = {"in_sample": (bars >= first) & (bars < n_train), "out_of_sample": bars >= n_train}
    scored = {}
    for name, (labels, info) in results.items():
        scored[name] = {**info, **{part: agreement(truth, labels, m) for part, m in masks.items()}}
    return {"suite": case["suite"], "case": case["case"], "seed": case["seed"], "n_bars": int(len(r)),
            "n_train": int(n_train), "first_scored_bar": first, "bear_share": float(truth.mean()), "methods": scored}
