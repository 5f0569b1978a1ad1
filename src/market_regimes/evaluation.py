"""Out-of-sample evaluation of a regime labelling (used per walk-forward fold and pooled).

Every function takes labels as a (T, A) frame (-1: no label) on the panel's grid, plus boolean
row masks saying which bars are the fitting period (``train``) and which are scored (``test``).
Whatever a predictor learns (a regime's mean forward volatility, P(up | regime), a regression on
current volatility) is fitted on ``train`` rows with forward targets that end inside ``train``,
and scored on ``test`` rows only.

Skill metrics (``volatility_skill``, ``direction_skill``) return sums as well as ratios so that
folds can be pooled exactly (``pool_skill``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from market_regimes.data.panel import interval_to_timedelta
from market_regimes.stats import (
    POOLED,
    entropy_rate,
    forward_log_return,
    forward_realized_vol,
    regime_statistics,
    row_normalise,
    run_lengths,
    transition_counts,
)


def regime_process(frames: list[pd.DataFrame], n_regimes: int, interval: str) -> dict:
    """Entropy rate (nats per bar), switches per 1,000 bars, mean run length and occupancy of the
    label process, pooled over ``frames`` (transitions and runs never cross two frames)."""
    counts = sum(transition_counts(f, n_regimes, interval) for f in frames)
    total = counts.sum()
    weights = counts.sum(axis=1) / total if total else np.full(n_regimes, np.nan)
    h = entropy_rate(row_normalise(counts), weights) if total else float("nan")
    lens, censored = [], []
    for f in frames:
        lab = f.to_numpy()
        for a in range(lab.shape[1]):
            _, ln, cen = run_lengths(lab[:, a], return_censored=True)
            lens.append(ln)
            censored.append(cen)
    lens = np.concatenate(lens) if lens else np.zeros(0)
    censored = np.concatenate(censored) if censored else np.zeros(0, dtype=bool)
    labelled = np.concatenate([f.to_numpy().ravel() for f in frames]) if frames else np.zeros(0)
    labelled = labelled[labelled >= 0]
    occ = np.bincount(labelled, minlength=n_regimes) / max(len(labelled), 1)
    complete = lens[~censored]
    hours = interval_to_timedelta(interval) / pd.Timedelta("1h")
    mean_run = float(lens.mean()) if len(lens) else float("nan")
    return {
        "n_labelled_bars": int(len(labelled)),
        "entropy_rate_nats": float(h),
        "switches_per_1000_bars": float(1000.0 * (total - np.trace(counts)) / total) if total else float("nan"),
        "mean_run_length_bars": mean_run,
        "mean_run_length_hours": mean_run * hours,
        "mean_complete_run_length_bars": float(complete.mean()) if len(complete) else None,
        "n_runs": int(len(lens)),
        "occupancy": occ.round(4).tolist(),
        "transition_counts": counts.tolist(),
    }


def internal_indices(z: np.ndarray, labels: np.ndarray, max_rows: int = 5000, seed: int = 0) -> dict:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz of latents under their labels (internal
    indices: they describe cluster shape, not whether the regimes mean anything)."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    ok = labels >= 0
    z, labels = z[ok], labels[ok]
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None, "n": int(len(labels))}
    rng = np.random.default_rng(seed)
    if len(labels) > max_rows:
        pick = rng.choice(len(labels), max_rows, replace=False)
        z, labels = z[pick], labels[pick]
        if len(np.unique(labels)) < 2:
            return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None, "n": int(len(labels))}
    return {"silhouette": float(silhouette_score(z, labels)), "davies_bouldin": float(davies_bouldin_score(z, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(z, labels)), "n": int(len(labels))}


def _train_targets(target: np.ndarray, train: np.ndarray, h: int) -> np.ndarray:
    """Targets usable for fitting: the bar is in train and so is the bar h ahead (no look-ahead)."""
    ok_end = np.zeros_like(train)
    ok_end[: len(train) - h] = train[h:]
    return np.where((train & ok_end)[:, None], target, np.nan)


def _group_means(y: np.ndarray, lab: np.ndarray, n_regimes: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, K) mean of y per asset and regime (NaN when empty), (K,) pooled means."""
    A = y.shape[1]
    ok = np.isfinite(y) & (lab >= 0)
    a_idx = np.broadcast_to(np.arange(A), y.shape)[ok]
    k_idx = lab[ok]
    s = np.zeros((A, n_regimes))
    c = np.zeros((A, n_regimes))
    np.add.at(s, (a_idx, k_idx), y[ok])
    np.add.at(c, (a_idx, k_idx), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(c > 0, s / c, np.nan)
        pooled = np.where(c.sum(0) > 0, s.sum(0) / c.sum(0), np.nan)
    return per, pooled


def _regime_forecast(y_train: np.ndarray, lab: np.ndarray, n_regimes: int) -> np.ndarray:
    """(T, A) forecast = training mean of y for the asset's current regime (pooled regime mean,
    then the asset's mean, where a cell was never seen)."""
    per, pooled = _group_means(y_train, lab, n_regimes)
    asset_mean = np.nanmean(np.where(np.isfinite(y_train), y_train, np.nan), axis=0)
    table = np.where(np.isfinite(per), per, pooled[None, :])
    table = np.where(np.isfinite(table), table, asset_mean[:, None])
    A = lab.shape[1]
    out = np.full(lab.shape, np.nan)
    ok = lab >= 0
    out[ok] = table[np.broadcast_to(np.arange(A), lab.shape)[ok], lab[ok]]
    return out


def _ols_forecast(y_train: np.ndarray, X: np.ndarray, rows_ok: np.ndarray) -> np.ndarray:
    """Per-asset least squares y ~ X fitted on finite training cells, applied to every cell.
    X: (T, A, P) design with an intercept column; returns (T, A) forecasts."""
    T, A, P = X.shape
    out = np.full((T, A), np.nan)
    for a in range(A):
        fit = np.isfinite(y_train[:, a]) & np.isfinite(X[:, a]).all(axis=1) & rows_ok[:, a]
        if fit.sum() <= P:
            continue
        beta, *_ = np.linalg.lstsq(X[fit, a], y_train[fit, a], rcond=None)
        use = np.isfinite(X[:, a]).all(axis=1)
        out[use, a] = X[use, a] @ beta
    return out


def _score(y: np.ndarray, f: np.ndarray, bench: np.ndarray) -> dict:
    ok = np.isfinite(y) & np.isfinite(f) & np.isfinite(bench)
    sse, sse_bench = float(np.sum((y[ok] - f[ok]) ** 2)), float(np.sum((y[ok] - bench[ok]) ** 2))
    return {"n": int(ok.sum()), "sse": sse, "sse_benchmark": sse_bench,
            "r2": 1.0 - sse / sse_bench if sse_bench > 0 else None,
            "spearman": float(spearmanr(y[ok], f[ok]).statistic) if ok.sum() > 2 else None,
            "y": y[ok], "f": f[ok]}


def volatility_skill(close: pd.DataFrame, labels: pd.DataFrame, current_log_vol: np.ndarray, train: np.ndarray,
                     test: np.ndarray, n_regimes: int, h: int = 24) -> dict:
    """How well the regime forecasts the log realised volatility of the next ``h`` bars out of sample.

    Predictors, all fitted on training rows: ``regime`` (the training mean for the asset's regime),
    ``naive`` (per-asset linear fit on the current log realised volatility ``current_log_vol``,
    (T, A)), ``naive_plus_regime`` (the same fit with regime indicators added). R^2 is out of sample
    against the training mean of each asset (Campbell-Thompson style, so it can be negative);
    Spearman is the rank correlation of forecast and outcome over all scored asset-bars.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(forward_realized_vol(close, h).to_numpy())
    y[~np.isfinite(y)] = np.nan
    lab = labels.to_numpy()
    y_train = _train_targets(y, train, h)
    bench = np.broadcast_to(np.nanmean(y_train, axis=0), y.shape)
    ones = np.ones(y.shape + (1,))
    x = current_log_vol[..., None]
    onehot = (lab[..., None] == np.arange(1, n_regimes)).astype(np.float64)
    onehot[lab < 0] = np.nan
    preds = {
        "regime": _regime_forecast(y_train, lab, n_regimes),
        "naive": _ols_forecast(y_train, np.concatenate([ones, x], axis=2), np.ones_like(lab, dtype=bool)),
        "naive_plus_regime": _ols_forecast(y_train, np.concatenate([ones, x, onehot], axis=2), lab >= 0),
    }
    scored = (lab >= 0) & test[:, None]
    y_test = np.where(scored, y, np.nan)
    return {"horizon": h, **{name: _score(y_test, f, bench) for name, f in preds.items()}}


def direction_skill(close: pd.DataFrame, labels: pd.DataFrame, train: np.ndarray, test: np.ndarray,
                    n_regimes: int, h: int = 24) -> dict:
    """Brier score of P(up over h bars | asset, regime) from the training period against the
    asset's training base rate, on test rows; ``skill`` = 1 - Brier(regime) / Brier(base rate)."""
    r = forward_log_return(close, h).to_numpy()
    up = np.where(np.isnan(r), np.nan, (r > 0).astype(np.float64))
    lab = labels.to_numpy()
    up_train = _train_targets(up, train, h)
    p_regime = _regime_forecast(up_train, lab, n_regimes)
    base = np.broadcast_to(np.nanmean(up_train, axis=0), up.shape)
    ok = (lab >= 0) & test[:, None] & np.isfinite(up) & np.isfinite(p_regime) & np.isfinite(base)
    b_reg = float(np.sum((p_regime[ok] - up[ok]) ** 2))
    b_base = float(np.sum((base[ok] - up[ok]) ** 2))
    n = int(ok.sum())
    return {"horizon": h, "n": n, "brier_regime": b_reg / n if n else None, "brier_base_rate": b_base / n if n else None,
            "skill": 1.0 - b_reg / b_base if b_base > 0 else None, "sum_regime": b_reg, "sum_base_rate": b_base}


def pool_skill(parts: list[dict]) -> dict:
    """Pool per-fold skill results exactly (sums and concatenated outcome/forecast pairs)."""
    if not parts:
        return {}
    if "brier_regime" in parts[0]:
        n = sum(p["n"] for p in parts)
        br, bb = sum(p["sum_regime"] for p in parts), sum(p["sum_base_rate"] for p in parts)
        return {"horizon": parts[0]["horizon"], "n": n, "brier_regime": br / n if n else None,
                "brier_base_rate": bb / n if n else None, "skill": 1.0 - br / bb if bb > 0 else None,
                "sum_regime": br, "sum_base_rate": bb}
    out = {"horizon": parts[0]["horizon"]}
    for name in ("regime", "naive", "naive_plus_regime"):
        y = np.concatenate([p[name]["y"] for p in parts])
        f = np.concatenate([p[name]["f"] for p in parts])
        sse, sse_b = sum(p[name]["sse"] for p in parts), sum(p[name]["sse_benchmark"] for p in parts)
        out[name] = {"n": int(len(y)), "sse": sse, "sse_benchmark": sse_b, "r2": 1.0 - sse / sse_b if sse_b > 0 else None,
                     "spearman": float(spearmanr(y, f).statistic) if len(y) > 2 else None, "y": y, "f": f}
    return out


def strip_arrays(skill: dict) -> dict:
    """The skill dict without its outcome/forecast arrays (for JSON)."""
    return {k: ({kk: vv for kk, vv in v.items() if kk not in ("y", "f")} if isinstance(v, dict) else v)
            for k, v in skill.items()}


def regime_table(close: pd.DataFrame, labels: pd.DataFrame, n_regimes: int, interval: str, h: int) -> pd.DataFrame:
    """Pooled (all assets) regime rows: bars, P(up over h) and forward-volatility ratio."""
    t = regime_statistics(close, labels, n_regimes, interval, (1, h))
    t = t[t["asset"] == POOLED].set_index("regime")
    return t[["n_bars", f"p_up_{h}", f"fwd_vol_ratio_{h}"]]


def in_vs_out_of_sample(close: pd.DataFrame, labels: pd.DataFrame, train: np.ndarray, test: np.ndarray,
                        n_regimes: int, interval: str, h: int = 24) -> list[dict]:
    """Per regime, P(up over h bars) and forward-volatility ratio in the training period (prices
    after it hidden) next to the same on the test rows."""
    train_close = close.where(np.broadcast_to(train[:, None], close.shape))
    ins = regime_table(train_close, labels.where(np.broadcast_to(train[:, None], labels.shape), -1), n_regimes, interval, h)
    oos = regime_table(close, labels.where(np.broadcast_to(test[:, None], labels.shape), -1), n_regimes, interval, h)
    rows = []
    for k in range(n_regimes):
        row = {"regime": k}
        for part, t in (("in_sample", ins), ("out_of_sample", oos)):
            row[f"{part}_bars"] = int(t.loc[k, "n_bars"])
            row[f"{part}_p_up_{h}"] = _num(t.loc[k, f"p_up_{h}"])
            row[f"{part}_fwd_vol_ratio_{h}"] = _num(t.loc[k, f"fwd_vol_ratio_{h}"])
        rows.append(row)
    return rows


def _num(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None
