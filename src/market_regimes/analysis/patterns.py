"""Pre-move pattern mining: what the indicators looked like in the W bars before big moves,
grouped into shapes, and how often each shape is followed by a big move compared with any bar.

Definitions, per asset on the panel grid (bar t = the bar that opens at ``index[t]``):

* forward return of bar t: ``log(close[t+N] / close[t])`` (``stats.forward_log_return``: NaN
  across a gap or past the end). It is the label and the outcome, never an input.
* move at t: the forward return crosses the threshold: ``>= thr`` (up), ``<= -thr`` (down) or
  either (both). ``threshold_units=log_return``: ``thr = threshold``; ``vol``:
  ``thr = threshold * sigma_t * sqrt(N)`` with ``sigma_t`` the std of the one-bar log returns
  of the ``vol_window`` bars ending at t (trailing, so the threshold itself is causal).
* events: move bars thinned per asset: a move bar is kept only when the previous move bar of
  the same asset is ``min_gap`` or more bars before it. So each run of moves closer together
  than ``min_gap`` gives its first bar, and kept events are at least ``min_gap`` bars apart.
* window of bar t: bars ``t-W+1 .. t`` (ending AT t, nothing later) of the chosen indicators
  (``features.build_features``, causal), robust-scaled by a ``GlobalScaler`` fitted on the
  valid rows up to ``fit_end``, plus the cumulative return path ``log(close[s] / close[t])``
  for s in the window, divided by the robust spread of (W-1)-bar log returns up to ``fit_end``.
  A window exists only where all W rows are valid feature rows.
* split: bars from ``test_start`` on are held out. Patterns are fitted on the events whose
  forward window ends before it (events straddling it are "purged"); hit rates are measured
  in sample (bars whose outcome is known before test_start, minus the fitted events
  themselves) and out of sample (bars from test_start on).
* patterns: PCA of the flattened event windows, k-means in that space (k fixed or chosen by
  silhouette). A bar matches pattern c when its window's nearest centroid is c and lies within
  the ``match_quantile`` quantile of the distances of c's own events to c.
* rates: hit rate = share of matched bars followed by a move; base rate = share of all bars of
  the same population followed by a move; lift = hit / base. Neighbouring bars share most of
  their window and their forward path, so the Wilson 95 % intervals use an effective count:
  the number of distinct (asset, block of N bars) among the bars counted. Moves of different
  assets at the same time are still counted as separate; the out-of-sample rows are the test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel, inclusive_end, to_utc
from market_regimes.errors import ConfigError, DataError, checked_options
from market_regimes.features import FeatureSet
from market_regimes.features.ops import rolling, run_length
from market_regimes.stats import forward_log_return, wilson_interval
from market_regimes.windows import GlobalScaler

DIRECTIONS = ("up", "down", "both")
UNITS = ("log_return", "vol")
CUM_NAME = "cum_ret"


@dataclass(frozen=True)
class PatternConfig:
    """Options of the ``patterns`` node of config/mine_patterns.yaml (documented there)."""

    horizon: int = 24
    threshold: float = 0.10
    threshold_units: str = "log_return"
    vol_window: int = 168
    direction: str = "up"
    min_gap: int | None = None
    window: int = 48
    indicators: tuple[str, ...] = ("log_ret", "log_rv_24", "rsi_14", "bb_pctb_20", "volume_z_168", "macd_hist")
    cum_return: bool = True
    clip: float = 5.0
    fit_end: str | None = None
    test_start: str | None = None
    test_fraction: float = 0.3
    n_components: int = 8
    n_clusters: int | None = None
    k_range: tuple[int, int] = (2, 8)
    min_cluster_events: int = 5
    match_quantile: float = 0.9
    scan_max: int | None = None
    chunk: int = 65536
    seed: int = 0
    umap: bool = False
    plots: bool = True

    @classmethod
    def from_dict(cls, values) -> "PatternConfig":
        values = checked_options(cls, values, "patterns")
        if isinstance(values.get("indicators"), str):
            values["indicators"] = [n.strip() for n in values["indicators"].split(",") if n.strip()]
        for key in ("indicators", "k_range"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        def need(ok: bool, option: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"patterns.{option}={getattr(self, option)!r} {rule}")

        def integer(v, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

        need(integer(self.horizon, 1), "horizon", "must be an integer >= 1 (bars)")
        need(integer(self.window, 2), "window", "must be an integer >= 2 (bars)")
        need(number(self.threshold) and self.threshold > 0, "threshold",
             "must be a number > 0 (a log return, or sigmas with threshold_units=vol)")
        need(self.threshold_units in UNITS, "threshold_units", f"must be one of {list(UNITS)}")
        need(integer(self.vol_window, 2), "vol_window", "must be an integer >= 2 (bars)")
        need(self.direction in DIRECTIONS, "direction", f"must be one of {list(DIRECTIONS)}")
        need(self.min_gap is None or integer(self.min_gap, 1), "min_gap", "must be null (= horizon) or an integer >= 1")
        need(len(self.indicators) > 0 or self.cum_return, "indicators", "is empty and cum_return=false: no input")
        need(self.clip is None or (number(self.clip) and self.clip > 0), "clip", "must be a number > 0 or null")
        need(number(self.test_fraction) and 0.0 <= self.test_fraction < 1.0, "test_fraction", "must be in [0, 1)")
        need(integer(self.n_components, 1), "n_components", "must be an integer >= 1")
        need(self.n_clusters is None or integer(self.n_clusters, 1), "n_clusters",
             "must be null (choose by silhouette) or an integer >= 1")
        need(len(self.k_range) == 2 and all(integer(k, 2) for k in self.k_range) and self.k_range[0] <= self.k_range[1],
             "k_range", "must be [k_min, k_max] with 2 <= k_min <= k_max")
        need(integer(self.min_cluster_events, 1), "min_cluster_events", "must be an integer >= 1")
        need(number(self.match_quantile) and 0.0 < self.match_quantile <= 1.0, "match_quantile", "must be in (0, 1]")
        need(self.scan_max is None or integer(self.scan_max, 1), "scan_max",
             "must be null (every bar) or an integer >= 1")
        need(integer(self.chunk, 1), "chunk", "must be an integer >= 1")

    @property
    def gap(self) -> int:
        return self.horizon if self.min_gap is None else self.min_gap


# --------------------------------------------------------------------------- events
def move_threshold(close: pd.DataFrame, cfg: PatternConfig) -> np.ndarray:
    """(A, T) move size in log-return units at each bar (NaN where the trailing vol is undefined)."""
    if cfg.threshold_units == "log_return":
        return np.broadcast_to(float(cfg.threshold), close.shape[::-1])  # read-only, no (A, T) copy
    sigma = rolling(np.log(close).diff(), cfg.vol_window).std().to_numpy().T  # bars t-vol_window+1..t
    with np.errstate(invalid="ignore"):
        return np.where(sigma > 0, cfg.threshold * sigma * np.sqrt(cfg.horizon), np.nan)


def move_mask(fwd: np.ndarray, thr: np.ndarray, direction: str) -> np.ndarray:
    """(A, T) bool: the forward return crosses the threshold in ``direction`` (NaN: False)."""
    with np.errstate(invalid="ignore"):
        up, down = fwd >= thr, fwd <= -thr
    return {"up": up, "down": down, "both": up | down}[direction]


def thin_events(mask: np.ndarray, min_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(asset_idx, bar_idx) of the kept move bars of an (A, T) mask, by asset then time.

    A move bar is kept when the previous move bar of the same asset is >= ``min_gap`` bars
    earlier (or there is none): the first bar of each run of nearby moves.
    """
    a, t = np.nonzero(mask)  # row-major: sorted by asset, then bar
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (np.diff(t) >= min_gap)
    return a[keep], t[keep]


def effective_count(asset_idx: np.ndarray, bar_idx: np.ndarray, horizon: int, n_bars: int) -> int:
    """Distinct (asset, block of ``horizon`` bars) among the given bars: bars in one block share
    most of their forward path, so they count once."""
    if len(asset_idx) == 0:
        return 0
    return int(np.unique(asset_idx.astype(np.int64) * (n_bars // horizon + 1) + bar_idx // horizon).size)


def rate(move: np.ndarray, asset_idx: np.ndarray, bar_idx: np.ndarray, horizon: int, n_bars: int) -> dict:
    """Share of bars followed by a move, with its Wilson 95 % interval on the effective count."""
    n, hits = int(len(move)), int(np.sum(move))
    n_eff = effective_count(asset_idx, bar_idx, horizon, n_bars)
    p = hits / n if n else float("nan")
    lo, hi = wilson_interval(p * n_eff, n_eff) if n else (np.nan, np.nan)
    return {"n": n, "hits": hits, "n_eff": n_eff, "rate": p, "lo": float(lo), "hi": float(hi)}


# --------------------------------------------------------------------------- windows
@dataclass
class PatternInputs:
    """Everything per bar the mining needs, on one (A, T) grid (A assets, T bars of ``index``).

    raw: (A, T, F_all) float32 values of every feature (the FeatureSet's array, not a copy), the
    indicators at ``columns``; X: (A, T, F) the indicators robust-scaled and clipped, 0 on invalid
    rows; logc: (A, T) log close (NaN on gaps); ends: (A, T) a valid window of ``window`` bars
    ends at t; fwd: (A, T) forward log return over ``horizon`` bars; thr: (A, T) move size;
    move: (A, T) the forward return crosses it.
    """

    raw: np.ndarray
    columns: list[int]
    X: np.ndarray
    logc: np.ndarray
    ends: np.ndarray
    fwd: np.ndarray
    thr: np.ndarray
    move: np.ndarray
    index: pd.DatetimeIndex
    symbols: list[str]
    indicators: list[str]
    window: int
    scaler: GlobalScaler
    cum_scale: float | None
    clip: float | None

    @property
    def names(self) -> list[str]:
        return self.indicators + ([CUM_NAME] if self.cum_scale is not None else [])

    def windows(self, asset_idx: np.ndarray, end_idx: np.ndarray) -> np.ndarray:
        """(B, W, F') float32 scaled windows of bars ``end-W+1 .. end`` (the cumulative return
        path last); only for ends where ``self.ends`` is True."""
        asset_idx, end_idx = np.asarray(asset_idx), np.asarray(end_idx)
        if not self.ends[asset_idx, end_idx].all():
            raise ValueError("windows() asked for a window that is not valid (gap, warm-up or too early)")
        A, T, F = self.X.shape
        W = self.window
        rows = asset_idx * T + end_idx - W + 1  # first bar of each window, as a row of the (A*T) stack
        # Row r of these views is bars r..r+W-1 of the stacked assets, contiguous in memory, so a
        # batch is gathered with whole-row copies; rows that would cross assets are never asked for.
        feats = np.lib.stride_tricks.sliding_window_view(self.X.reshape(-1), W * F)[::F]  # (A*T-W+1, W*F)
        if self.cum_scale is None:
            return feats[rows].reshape(-1, W, F)
        out = np.empty((len(rows), W, F + 1), dtype=np.float32)
        out[:, :, :F] = feats[rows].reshape(-1, W, F)
        path = np.lib.stride_tricks.sliding_window_view(self.logc.reshape(-1), W)[rows]  # (B, W)
        cum = (path - path[:, -1:]) / self.cum_scale  # log(close[s] / close[end]) in robust units
        if self.clip is not None:
            np.clip(cum, -self.clip, self.clip, out=cum)
        out[:, :, F] = cum
        return out


def _time(option: str, value, convert) -> pd.Timestamp:
    try:
        return convert(value)
    except (ValueError, TypeError):
        raise ConfigError(f"patterns.{option}={value!r} is not a date or time (e.g. 2023-01-01)") from None


def split_points(index: pd.DatetimeIndex, cfg: PatternConfig) -> tuple[int, pd.Timestamp]:
    """(first held-out bar position, last bar time the scaler may see)."""
    T = len(index)
    if cfg.test_start is not None:
        test_idx = int(index.searchsorted(_time("test_start", cfg.test_start, to_utc)))
        if test_idx == 0 or test_idx >= T:
            raise ConfigError(f"patterns.test_start={cfg.test_start} must lie inside the data "
                              f"({index[0]} .. {index[-1]})")
    else:
        test_idx = T if cfg.test_fraction == 0 else max(int(round(T * (1 - cfg.test_fraction))), 1)
    fit_end = _time("fit_end", cfg.fit_end, inclusive_end) if cfg.fit_end is not None else index[test_idx - 1]
    if fit_end < index[0]:
        raise ConfigError(f"patterns.fit_end={cfg.fit_end} is before the first bar {index[0]}")
    return test_idx, fit_end


def build_inputs(panel: Panel, features: FeatureSet, cfg: PatternConfig, fit_end: pd.Timestamp) -> PatternInputs:
    """Scaled indicators, valid-window ends, forward returns and move labels for every bar."""
    unknown = [n for n in cfg.indicators if n not in features.names]
    if unknown:
        raise ConfigError(f"patterns.indicators: unknown feature(s) {unknown}; known: {features.names}")
    W, T = cfg.window, len(features.index)
    if T < W:
        raise DataError(f"{T} bars are fewer than patterns.window={W}")
    columns = [features.names.index(n) for n in cfg.indicators]
    in_fit = np.asarray(features.index <= fit_end)
    fit_rows = features.valid & in_fit[None, :]
    if not fit_rows.any():
        raise DataError(f"no valid feature row up to patterns.fit_end ({fit_end}); move it later")
    train = np.stack([features.values[:, :, j][fit_rows] for j in columns], axis=1)  # (N, F), no (N, F_all) copy
    scaler = GlobalScaler("robust", cfg.clip).fit(train)
    X = scaler.transform(features.values[:, :, columns])
    X[~features.valid] = 0.0
    ends = run_length(features.valid.T).T >= W  # (A, T)
    logc = np.ascontiguousarray(np.log(panel.close.to_numpy(dtype=np.float64).T))
    cum_scale = None
    if cfg.cum_return:
        span = logc[:, W - 1:] - logc[:, : T - W + 1]  # (A, T-W+1): window start -> end t
        rows = ends[:, W - 1:] & in_fit[None, W - 1:]
        q25, q75 = np.quantile(span[rows], [0.25, 0.75]) if rows.any() else (0.0, 0.0)
        cum_scale = float((q75 - q25) / 1.349) if q75 > q25 else 1.0
    fwd = forward_log_return(panel.close, cfg.horizon).to_numpy().T
    thr = move_threshold(panel.close, cfg)
    return PatternInputs(features.values, columns, X, logc, ends, fwd, thr, move_mask(fwd, thr, cfg.direction),
                         features.index, list(features.symbols), list(cfg.indicators), W, scaler, cum_scale, cfg.clip)
