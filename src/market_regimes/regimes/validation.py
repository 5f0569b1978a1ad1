"""Truth-free validation of a regime model by what its causal labels forecast.

A regime is worth what it predicts. The candidate model is fitted on the first
``1 - HOLDOUT_FRACTION`` of every sequence; its causal labels (``predict_online`` run over the
whole sequence, so the filter arrives at the held-out part with its history) then forecast, at
each held-out row t, the latent ``horizon`` rows later by the centroid of the regime at t. The
score is the mean squared forecast error over held-out rows whose target lies in the same
sequence; lower is better.

Why this picks persistent, real regimes: once ``horizon`` is longer than the memory of the
inputs (window plus feature look-back), x_{t+h} depends on the past only through the regime.
Splitting a true regime then costs forecast error (the sub-centroid chases noise that does not
persist), and merging two regimes costs it too (their centroids differ and regimes persist); a
label that flickers (too small a jump penalty) forecasts with the wrong centroid after every
spurious switch, one that lags (too large a penalty) after every true switch.

``choose_by_forecast`` compares candidates ordered from simplest to most complex (fewest
regimes; most persistent penalty first) and returns the simplest whose error exceeds the best
one's by no more than one standard error of the paired difference. Forecast errors of rows
closer than ``horizon`` share much of their target's history, so the standard error comes from
contiguous blocks of at least ``horizon`` scored rows (at most ``MAX_BLOCKS`` of them); with fewer
than ``MIN_BLOCKS`` such blocks the held-out data cannot tell the candidates apart and the
``fallback`` is returned (the simplest candidate unless another is given).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

HOLDOUT_FRACTION = 0.3
FORECAST_HORIZON = 64
MAX_BLOCKS = 10
MIN_BLOCKS = 3


def holdout_split(lengths: np.ndarray, fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(held-out mask over rows, lengths of the fitting heads): the last ``fraction`` of every sequence."""
    lengths = np.asarray(lengths, dtype=np.intp)
    heads = np.maximum(np.floor((1.0 - fraction) * lengths).astype(np.intp), 1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)  # position inside the sequence
    return pos >= np.repeat(heads, lengths), heads


def forecast_targets(lengths: np.ndarray, held_out: np.ndarray, horizon: int) -> np.ndarray:
    """Rows t that are held out and have a row t + horizon in the same sequence."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = np.repeat(starts + lengths, lengths)
    rows = np.arange(len(held_out))
    return rows[held_out & (rows + horizon < ends)]


def forecast_errors(estimator: Any, X: np.ndarray, lengths: np.ndarray, held_out: np.ndarray, heads: np.ndarray,
                    rows: np.ndarray, horizon: int) -> np.ndarray:
    """Per-row squared forecast errors (len(rows),) of ``estimator`` fitted on the heads only."""
    estimator.fit(X[~held_out], heads)
    labels = np.asarray(estimator.predict_online(X, lengths))
    centroids = np.asarray(estimator.centroids_)
    return ((X[rows + horizon] - centroids[labels[rows]]) ** 2).sum(axis=1)


def choose_by_forecast(candidates: list, make_estimator: Callable[[Any], Any], X: np.ndarray, lengths: np.ndarray,
                       horizon: int = FORECAST_HORIZON, fraction: float = HOLDOUT_FRACTION,
                       fallback: Any = None) -> tuple[Any, list[dict]]:
    """The simplest candidate (list order) within one standard error of the best; and the scores.

    Returns ``(choice, table)`` with one ``{"candidate", "forecast_error", "excess", "excess_se"}``
    per candidate. With fewer than ``MIN_BLOCKS`` blocks of ``horizon`` scorable held-out rows
    (too little data for the horizon) nothing is fitted: ``fallback`` (default: the first
    candidate) is returned with a warning and an empty table.
    """
    held_out, heads = holdout_split(lengths, fraction)
    rows = forecast_targets(lengths, held_out, horizon)
    n_blocks = min(MAX_BLOCKS, len(rows) // max(int(horizon), 1))
    keep = candidates[0] if fallback is None else fallback
    if len(candidates) == 1:
        return candidates[0], []
    if n_blocks < MIN_BLOCKS:
        warnings.warn(f"forecast validation: {len(rows)} held-out rows with a target {horizon} rows ahead make "
                      f"{n_blocks} blocks of {horizon} (need {MIN_BLOCKS}); keeping {keep!r}", stacklevel=2)
        return keep, []
    errors = np.array([forecast_errors(make_estimator(c), X, lengths, held_out, heads, rows, horizon)
                       for c in candidates])  # (C, M)
    mean = errors.mean(axis=1)
    best = int(np.argmin(mean))
    blocks = np.array_split(np.arange(len(rows)), n_blocks)
    excess = np.stack([(errors[:, b] - errors[best, b]).mean(axis=1) for b in blocks], axis=1)  # (C, blocks)
    se = excess.std(axis=1, ddof=1) / np.sqrt(n_blocks)
    gap = mean - mean[best]
    choice = int(np.flatnonzero(gap <= se)[0])
    table = [{"candidate": c, "forecast_error": float(m), "excess": float(g), "excess_se": float(e)}
             for c, m, g, e in zip(candidates, mean, gap, se)]
    return candidates[choice], table
