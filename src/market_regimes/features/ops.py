"""Causal, vectorised building blocks on (T, A) arrays: value at row t uses rows <= t only.

NaN marks a missing value (a gap, or warm-up). Rolling statistics need a full window of finite
values; exponential averages restart after every NaN, so no value ever mixes data from both
sides of a gap.

Features are computed on numpy arrays; trailing-window statistics (:func:`roll`,
:func:`roll_pair`) use pandas' rolling kernels, which cost one pass whatever the window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from market_regimes.numerics import linear_recursion


def rolling(frame: pd.DataFrame, window: int):
    """Trailing window of exactly ``window`` bars; NaN unless all of them are finite."""
    return frame.rolling(window, min_periods=window)


def _frame(x: np.ndarray) -> pd.DataFrame | pd.Series:
    return pd.Series(x, copy=False) if x.ndim == 1 else pd.DataFrame(x, copy=False)


def roll(x: np.ndarray, window: int, stat: str, ddof: int = 1) -> np.ndarray:
    """Trailing-window ``stat`` ("mean", "sum", "std", "var") of a (T,) or (T, A) array, per
    column, over exactly ``window`` bars (NaN unless all of them are finite)."""
    r = rolling(_frame(np.asarray(x, dtype=np.float64)), window)
    out = getattr(r, stat)(ddof=ddof) if stat in ("std", "var") else getattr(r, stat)()
    return out.to_numpy()


def roll_pair(x: np.ndarray, y: np.ndarray, window: int, stat: str) -> np.ndarray:
    """Trailing-window ``stat`` ("cov" or "corr", ddof 1) of every column of the (T, A) ``x``
    with the (T,) ``y``."""
    r = rolling(pd.DataFrame(np.asarray(x, dtype=np.float64), copy=False), window)
    return getattr(r, stat)(pd.Series(np.asarray(y, dtype=np.float64), copy=False)).to_numpy()


def shift(x: np.ndarray, periods: int) -> np.ndarray:
    """Rows moved ``periods`` (> 0) later along the first axis, NaN in front."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    if periods < len(x):
        out[periods:] = x[: len(x) - periods]
    return out


def masked(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``x`` where ``keep``, NaN elsewhere."""
    return np.where(keep, x, np.nan)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` without warnings (inf or NaN where the denominator is 0 or NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def row_mean(x: np.ndarray) -> np.ndarray:
    """Mean over the columns of a (T, A) array, skipping NaN (NaN where a row has none)."""
    present = ~np.isnan(x)
    n = present.sum(axis=1)
    return ratio(np.where(present, x, 0.0).sum(axis=1), masked(n, n > 0))


def row_std(x: np.ndarray, min_count: int = 2) -> np.ndarray:
    """Sample standard deviation (ddof 1) over the columns, skipping NaN; NaN where a row has
    fewer than ``min_count`` values."""
    present = ~np.isnan(x)
    n = present.sum(axis=1)
    mean = ratio(np.where(present, x, 0.0).sum(axis=1), masked(n, n > 0))
    dev = np.where(present, x - mean[:, None], 0.0)
    var = ratio((dev * dev).sum(axis=1), masked(n - 1.0, n >= max(min_count, 2)))
    return np.sqrt(var)


def window_sum(values, window: int) -> np.ndarray:
    """Trailing sum of exactly ``window`` bars (NaN unless all are finite), computed from the
    window's own values in a fixed order. Unlike a running sum it carries no rounding residue
    from earlier bars, so a window of exact zeros sums to exactly 0 and the result does not
    depend on where the history starts; use it where a feature compares a sum with a threshold."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full_like(x, np.nan)
    if len(x) >= window:
        n = len(x) - window + 1
        acc = x[:n].copy()
        for k in range(1, window):
            acc += x[k : k + n]
        out[window - 1 :] = acc
    return out


def run_length(finite: np.ndarray) -> np.ndarray:
    """(T, A) int: number of consecutive True values ending at each row (0 where False)."""
    finite = np.asarray(finite, dtype=bool)
    t = np.arange(finite.shape[0])[:, None]
    last_break = np.maximum.accumulate(np.where(~finite, t, -1), axis=0)
    return np.where(finite, t - last_break, 0)


def ewm_mean(x: np.ndarray | pd.DataFrame, alpha: float) -> np.ndarray:
    """Exponentially weighted mean (pandas ``adjust=True`` weights) that restarts after NaN.

    For row t in a run of finite values that began at row s, the result is
    ``sum_{k=s..t} b^(t-k) x_k / sum_{k=s..t} b^(t-k)`` with ``b = 1 - alpha``: it is computed
    from the all-history filter ``S_t = b S_{t-1} + x_t`` as ``S_t - b^(t-s+1) S_{s-1}``, which
    needs no loop over bars. NaN where ``x`` is NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[:, None]
    beta = 1.0 - alpha
    finite = np.isfinite(x)
    s = linear_recursion(np.where(finite, x, 0.0), beta)
    n = run_length(finite)  # bars in the current run, including t
    t = np.arange(x.shape[0])[:, None]
    start = t - n + 1  # first row of the run
    prev = np.take_along_axis(s, np.clip(start - 1, 0, None), axis=0)
    prev = np.where(start > 0, prev, 0.0)
    decay = beta**n
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (s - decay * prev) * alpha / (1.0 - decay)
    out = np.where(finite, out, np.nan)
    return out[:, 0] if squeeze else out


def safe_log(x, floor: float = 1e-12):
    """log(max(x, floor)) keeping NaN: scale-type features are modelled on a log scale."""
    return np.log(np.maximum(x, floor))


def cross_sectional_share(condition: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Per row of (T, A) booleans: share of assets where ``condition`` holds among those where
    ``defined`` is True (NaN where none is)."""
    n = defined.sum(axis=1)
    hits = (condition & defined).sum(axis=1)
    return ratio(hits.astype(np.float64), masked(n, n > 0))


def mean_pairwise_correlation(returns: np.ndarray, window: int, chunk: int = 4096) -> np.ndarray:
    """Mean of the off-diagonal Pearson correlations over a trailing window, per row.

    ``returns`` is (T, A). At row t the assets counted are those with ``window`` finite returns
    ending at t and non-zero variance (at least two are needed, else NaN). With u_i = 1/sd_i and
    population moments over the window,
    ``sum_{i,j} corr_ij = mean_k (sum_i u_i r_ik)^2 - (sum_i u_i m_i)^2``, and the diagonal
    contributes the number of assets, so the cost is O(T * window * A) instead of a correlation
    matrix per bar.
    """
    r = np.asarray(returns, dtype=np.float64)
    T, A = r.shape
    out = np.full(T, np.nan)
    if T < window or A < 2:
        return out
    mean = roll(r, window, "mean")
    var = roll(r, window, "var", ddof=0)
    ok = np.isfinite(mean) & np.isfinite(var) & (var > 1e-30)
    u = np.where(ok, 1.0 / np.sqrt(np.where(ok, var, 1.0)), 0.0)  # (T, A)
    n_ok = ok.sum(axis=1)
    r0 = np.where(np.isfinite(r), r, 0.0)
    views = np.lib.stride_tricks.sliding_window_view(r0, window, axis=0)  # (T-w+1, A, w)
    for lo in range(0, T - window + 1, chunk):
        hi = min(lo + chunk, T - window + 1)
        rows = np.arange(lo, hi) + window - 1  # end row of each window
        proj = np.einsum("baw,ba->bw", views[lo:hi], u[rows])  # (B, w)
        q = np.mean(proj**2, axis=1) - np.einsum("ba,ba->b", np.where(ok[rows], mean[rows], 0.0), u[rows]) ** 2
        n = n_ok[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows] = np.where(n >= 2, (q - n) / (n * (n - 1.0)), np.nan)
    return out
