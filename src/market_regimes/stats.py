"""What each regime means, per asset: forward outcomes, persistence and transitions of labels.

Inputs share one regular UTC bar grid (see ``data.panel.Panel``):

* ``close``  (T, A) float: close of the bar that opens at the index time; NaN = missing bar (gap).
* ``labels`` (T, A) int: regime id of the bar, ``-1`` = no label (warm-up, invalid window, gap).

Everything computed here for bar ``t`` looks *forward* from the close of bar ``t`` (t -> t+h).
These are targets for describing regimes, never features: nothing in this module may feed back
into a model input. Statistics computed on the data the regimes were fitted on are in-sample and
are flagged as such by ``summarize_regimes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from market_regimes.data.panel import interval_to_timedelta
from market_regimes.errors import ConfigError, DataError

POOLED = "ALL"
Z95 = 1.959964

# describe_regime thresholds (see its docstring).
LOW_VOL_RATIO = 0.8
HIGH_VOL_RATIO = 1.25
STRESS_VOL_RATIO = 2.0
DRIFT_T_STAT = 3.0


# --------------------------------------------------------------------------- forward targets
def _log_close(close: pd.DataFrame) -> np.ndarray:
    values = close.to_numpy(dtype="float64")
    bad = values <= 0
    if bad.any():
        t, a = np.argwhere(bad)[0]
        raise DataError(
            f"close of {close.columns[a]} at {close.index[t]} is {values[t, a]}; prices must be > 0"
        )
    return np.log(values)


def _forward_complete(present: np.ndarray, h: int) -> np.ndarray:
    """(T, A) bool: bars t..t+h all exist (so t+h is inside the data)."""
    if not isinstance(h, (int, np.integer)) or h < 1:
        raise ConfigError(f"forward horizon h={h!r} must be an integer >= 1 (bars)")
    T = present.shape[0]
    missing = np.zeros((T + 1,) + present.shape[1:], dtype=np.int64)
    np.cumsum(~present, axis=0, out=missing[1:])
    ok = np.zeros(present.shape, dtype=bool)
    if T > h:
        ok[: T - h] = (missing[h + 1 :] - missing[: T - h]) == 0  # missing bars in [t, t+h]
    return ok


def forward_log_return(close: pd.DataFrame, h: int) -> pd.DataFrame:
    """(T, A) target: value at row t = ``log(close[t+h] / close[t])`` within each asset.

    Row t holds what happens *after* bar t closes, over the next ``h`` bars. NaN when any bar in
    t..t+h is missing (a gap is never crossed) or when t+h is past the last row.
    """
    logc = _log_close(close)
    ok = _forward_complete(~np.isnan(logc), h)
    out = np.full(logc.shape, np.nan)
    T = len(logc)
    if T > h:
        out[: T - h] = logc[h:] - logc[: T - h]  # forward by design: this is a target
    out[~ok] = np.nan
    return pd.DataFrame(out, index=close.index, columns=close.columns)


def forward_realized_vol(close: pd.DataFrame, h: int) -> pd.DataFrame:
    """(T, A) target: value at row t = sample std (ddof=1) of the one-bar log returns of bars
    t+1..t+h (i.e. ``log(c[s]/c[s-1])`` for s = t+1..t+h), per bar, not annualised.

    ddof=1 so that the mean forward variance is unbiased for the one-bar variance; hence ``h=1``
    gives all-NaN. NaN under the same rules as ``forward_log_return`` (gap or end of data).
    """
    logc = _log_close(close)
    ok = _forward_complete(~np.isnan(logc), h)
    ret = np.full(logc.shape, np.nan)
    ret[1:] = np.diff(logc, axis=0)  # ret[s] = log(c[s] / c[s-1])
    trailing = pd.DataFrame(ret).rolling(h, min_periods=h).std(ddof=1).to_numpy()  # over s-h+1..s
    out = np.full(logc.shape, np.nan)
    T = len(logc)
    if T > h:
        out[: T - h] = trailing[h:]  # row t <- window ending at s = t+h (forward target)
    out[~ok] = np.nan
    return pd.DataFrame(out, index=close.index, columns=close.columns)


# --------------------------------------------------------------------------- small estimators
def wilson_interval(successes, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion, elementwise; ``n == 0`` gives NaN.

    ``n`` may be fractional (an effective sample size); ``successes`` is then ``p * n``.
    """
    k = np.asarray(successes, dtype="float64")
    n = np.asarray(n, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        z2 = z * z
        denom = 1.0 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = z * np.sqrt(np.clip(p * (1 - p) / n + z2 / (4 * n * n), 0.0, None)) / denom
    empty = ~(n > 0)
    low = np.where(empty, np.nan, np.clip(centre - half, 0.0, 1.0))
    high = np.where(empty, np.nan, np.clip(centre + half, 0.0, 1.0))
    return low, high


def run_lengths(
    labels_1d: np.ndarray, return_censored: bool = False
) -> tuple[np.ndarray, ...]:
    """Runs of equal consecutive labels in one asset's label sequence (bars on the grid).

    ``-1`` breaks runs and is never a run itself. Returns ``(run_labels, run_lengths)`` in time
    order, plus a bool ``censored`` array with ``return_censored=True``. Censored runs (those that
    touch the start/end of the sample or a ``-1`` bar, so their true length is unknown and at
    least the observed one) are *included*; use the flag to drop them.
    """
    x = np.asarray(labels_1d).astype(np.int64).ravel()
    n = len(x)
    if n == 0:
        empty = np.array([], dtype=np.int64)
        return (empty, empty, np.array([], dtype=bool)) if return_censored else (empty, empty)
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    lengths = np.diff(np.r_[starts, n])
    ends = starts + lengths - 1
    before = np.where(starts > 0, x[np.maximum(starts - 1, 0)], -1)
    after = np.where(ends < n - 1, x[np.minimum(ends + 1, n - 1)], -1)
    keep = x[starts] >= 0
    labs, lens = x[starts][keep], lengths[keep]
    if not return_censored:
        return labs, lens
    return labs, lens, ((before == -1) | (after == -1))[keep]


# --------------------------------------------------------------------------- transitions
def _label_array(labels: pd.DataFrame, n_regimes: int) -> np.ndarray:
    """(T, A) int64 labels; NaN is read as -1; anything outside {-1, .., K-1} raises."""
    if n_regimes < 1:
        raise ConfigError(f"n_regimes={n_regimes} must be >= 1")
    values = labels.to_numpy(dtype="float64", na_value=np.nan)
    values = np.where(np.isnan(values), -1.0, values)
    bad = (values != np.round(values)) | (values < -1) | (values >= n_regimes)
    if bad.any():
        t, a = np.argwhere(bad)[0]
        raise DataError(
            f"label {values[t, a]} of {labels.columns[a]} at {labels.index[t]} is not an integer "
            f"in -1..{n_regimes - 1}; use -1 for 'no label' and ids below n_regimes={n_regimes}"
        )
    return values.astype(np.int64)


def _consecutive_rows(index: pd.Index, interval: str | None) -> np.ndarray:
    """(T-1,) bool: row t-1 and row t are adjacent bars on the grid."""
    if len(index) < 2 or not isinstance(index, pd.DatetimeIndex):
        return np.ones(max(len(index) - 1, 0), dtype=bool)
    steps = index[1:] - index[:-1]
    if interval is not None:
        step = interval_to_timedelta(interval)
    else:
        step = steps[steps > pd.Timedelta(0)].min()
    return np.asarray(steps == step)


def transition_counts(
    labels: pd.DataFrame, n_regimes: int, interval: str | None = None
) -> np.ndarray:
    """(K, K) int counts of label i at bar t-1 followed by label j at bar t, summed over assets.

    Counts only pairs within one asset where both labels are >= 0 and the two rows are adjacent
    bars of the grid (``interval``; if None, the smallest index step of a DatetimeIndex).
    """
    lab = _label_array(labels, n_regimes)
    prev, cur = lab[:-1], lab[1:]
    valid = (prev >= 0) & (cur >= 0) & _consecutive_rows(labels.index, interval)[:, None]
    flat = prev[valid] * n_regimes + cur[valid]
    return np.bincount(flat, minlength=n_regimes * n_regimes).reshape(n_regimes, n_regimes)


def row_normalise(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def transition_matrix(
    labels: pd.DataFrame, n_regimes: int, interval: str | None = None
) -> np.ndarray:
    """(K, K) row-stochastic P[i, j] = P(label_t = j | label_{t-1} = i), pooled over assets.

    A regime never seen as the origin of a valid pair gets a NaN row (no data is not uniform).
    """
    return row_normalise(transition_counts(labels, n_regimes, interval))


def stationary_distribution(P: np.ndarray) -> np.ndarray:
    """(K,) pi with ``pi @ P = pi``, ``sum(pi) = 1``; all-NaN if P has a NaN row.

    Unique for an irreducible chain; otherwise the minimum-norm solution (one of many).
    """
    P = np.asarray(P, dtype="float64")
    K = P.shape[0]
    if np.isnan(P).any():
        return np.full(K, np.nan)
    A = np.vstack([P.T - np.eye(K), np.ones((1, K))])
    b = np.r_[np.zeros(K), 1.0]
    pi = np.clip(np.linalg.lstsq(A, b, rcond=None)[0], 0.0, None)
    return pi / pi.sum()


def entropy_rate(P: np.ndarray, pi: np.ndarray | None = None) -> float:
    """``-sum_i pi_i sum_j P_ij log P_ij`` in nats (0 log 0 = 0): uncertainty of the next label.

    ``pi`` defaults to the stationary distribution of P, which makes this the entropy rate of the
    Markov chain P. ``summarize_regimes`` passes the empirical share of each origin regime among
    the counted transitions instead, giving the observed conditional entropy H(label_t |
    label_{t-1}); that stays defined when P is reducible or has NaN rows of unseen regimes.
    Rows with ``pi_i == 0`` are ignored, so their NaN does not propagate.
    """
    P = np.asarray(P, dtype="float64")
    pi = stationary_distribution(P) if pi is None else np.asarray(pi, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        row_h = -np.where(P > 0, P * np.log(P), np.where(np.isnan(P), np.nan, 0.0)).sum(axis=1)
    used = pi > 0
    return float(np.sum(pi[used] * row_h[used])) if not np.isnan(pi).any() else math.nan


# --------------------------------------------------------------------------- the regime table
def _check_inputs(close: pd.DataFrame, labels: pd.DataFrame, n_regimes: int, interval: str):
    if not close.index.equals(labels.index) or not close.columns.equals(labels.columns):
        raise DataError("close and labels must share the same index (bars) and columns (assets)")
    if close.empty:
        raise DataError(f"close has no bars or no assets (shape {close.shape})")
    if POOLED in [str(c) for c in close.columns]:
        raise DataError(f"an asset is named {POOLED!r}, which is reserved for the pooled rows")
    if isinstance(close.index, pd.DatetimeIndex) and len(close.index) > 1:
        if not ((close.index[1:] - close.index[:-1]) == interval_to_timedelta(interval)).all():
            raise DataError(
                f"the bar index is not a regular {interval} grid; build it with to_panel"
            )
    lab = _label_array(labels, n_regimes)
    orphan = (lab >= 0) & close.isna().to_numpy()
    if orphan.any():
        t, a = np.argwhere(orphan)[0]
        raise DataError(
            f"{close.columns[a]} has regime label {lab[t, a]} at {close.index[t]} but no bar "
            "there; label missing bars -1"
        )
    return lab


def _aggregate(bars: pd.DataFrame, runs: pd.DataFrame, keys: list[str], horizons, h_vol: int):
    """Per-group statistics from one row per labelled bar and one row per run."""
    spec: dict[str, tuple[str, str]] = {"n_bars": ("regime", "size")}
    for h in horizons:
        spec |= {
            f"n_fwd_{h}": (f"r{h}", "count"), f"n_up_{h}": (f"up{h}", "sum"),
            f"mean_fwd_ret_{h}": (f"r{h}", "mean"), f"median_fwd_ret_{h}": (f"r{h}", "median"),
            f"std_fwd_ret_{h}": (f"r{h}", "std"),
        }
    spec |= {f"mean_fwd_vol_{h_vol}": ("vol", "mean"), "_nvar": ("nvar", "mean")}
    out = bars.groupby(keys).agg(**spec)
    for h in horizons:
        n, up = out[f"n_fwd_{h}"], out.pop(f"n_up_{h}")
        out[f"p_up_{h}"] = up / n.where(n > 0)
        # Forward windows of nearby bars overlap; n_fwd / h is a conservative effective size.
        out[f"n_eff_{h}"] = n / h
        lo, hi = wilson_interval(out[f"p_up_{h}"] * out[f"n_eff_{h}"], out[f"n_eff_{h}"])
        out[f"p_up_{h}_lo"], out[f"p_up_{h}_hi"] = lo, hi
    out[f"fwd_vol_ratio_{h_vol}"] = np.sqrt(out.pop("_nvar"))
    dur = runs.groupby(keys).agg(
        mean_duration_bars=("length", "mean"), median_duration_bars=("length", "median"),
        n_runs=("length", "size"), n_censored_runs=("censored", "sum"),
    )
    return out.join(dur, how="outer")


def regime_statistics(
    close: pd.DataFrame,
    labels: pd.DataFrame,
    n_regimes: int,
    interval: str = "1h",
    horizons: Sequence[int] = (1, 24),
) -> pd.DataFrame:
    """Tidy table: one row per (asset, regime) then one pooled row per regime (asset ``"ALL"``).

    For the labelled bars t of a regime: ``n_bars``, ``occupancy`` (share of the asset's labelled
    bars), and per horizon h the forward log return t -> t+h (``n_fwd_h`` bars where it exists,
    ``p_up_h`` = share > 0, its Wilson 95 % interval ``p_up_h_lo/_hi`` computed on the
    effective size ``n_eff_h = n_fwd_h / h`` because overlapping windows are not independent,
    ``mean/median/std_fwd_ret_h``). At ``h_max = max(horizons)``: ``mean_fwd_vol_h`` (mean forward
    realised vol, per bar) and ``fwd_vol_ratio_h`` = sqrt(mean of forward variance / sigma^2),
    sigma being the asset's one-bar forward return std (ddof=1) over all its labelled bars; the
    variance scale makes a regime with no volatility information score ~1 (a mean of stds would
    be biased low under volatility clustering). Durations come from per-asset runs, censored runs
    included (``n_censored_runs`` says how many). ALL pools the bars and runs of every asset;
    its vol ratio averages each bar's variance relative to its own asset's sigma.
    """
    if not horizons or any(int(h) != h or h < 1 for h in horizons):
        raise ConfigError(f"horizons={list(horizons)} must be integers >= 1 (bars ahead)")
    horizons = sorted({int(h) for h in horizons})
    lab = _check_inputs(close, labels, n_regimes, interval)
    h_vol = horizons[-1]
    ti, ai = np.nonzero(lab >= 0)  # one row per labelled bar
    bars = pd.DataFrame({"asset": ai, "regime": lab[ti, ai]})
    for h in horizons:
        r = forward_log_return(close, h).to_numpy()[ti, ai]
        bars[f"r{h}"], bars[f"up{h}"] = r, np.where(np.isnan(r), np.nan, r > 0)
    one_bar = forward_log_return(close, 1).to_numpy()[ti, ai]
    sigma = pd.Series(one_bar).groupby(ai).std(ddof=1).reindex(range(close.shape[1])).to_numpy()
    vol = forward_realized_vol(close, h_vol).to_numpy()[ti, ai]
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat asset has sigma = 0 -> NaN
        bars["vol"], bars["nvar"] = vol, np.where(sigma[ai] > 0, (vol / sigma[ai]) ** 2, np.nan)
    runs = [
        pd.DataFrame(dict(zip(("regime", "length", "censored"), run_lengths(lab[:, a], True))))
        .assign(asset=a)
        for a in range(close.shape[1])
    ]
    runs = pd.concat(runs, ignore_index=True).astype({"regime": "int64", "length": "int64"})

    per_asset = _aggregate(bars, runs, ["asset", "regime"], horizons, h_vol)
    grid = [range(close.shape[1]), range(n_regimes)]
    per_asset = per_asset.reindex(pd.MultiIndex.from_product(grid, names=["asset", "regime"]))
    asset_total = per_asset.groupby(level="asset")["n_bars"].transform("sum")
    per_asset["occupancy"] = per_asset["n_bars"] / asset_total
    per_asset = per_asset.reset_index()
    per_asset["asset"] = [str(close.columns[a]) for a in per_asset["asset"]]
    pooled = _aggregate(bars, runs, ["regime"], horizons, h_vol).reindex(range(n_regimes))
    pooled["occupancy"] = pooled["n_bars"] / pooled["n_bars"].sum()
    pooled = pooled.rename_axis("regime").reset_index().assign(asset=POOLED)

    table = pd.concat([per_asset, pooled], ignore_index=True)
    counts = ["n_bars", "n_runs", "n_censored_runs"] + [f"n_fwd_{h}" for h in horizons]
    table[counts] = table[counts].fillna(0).astype("int64")
    table[[f"n_eff_{h}" for h in horizons]] = table[[f"n_eff_{h}" for h in horizons]].fillna(0.0)
    table["mean_duration_hours"] = table["mean_duration_bars"] * (
        interval_to_timedelta(interval) / pd.Timedelta("1h")
    )
    columns = ["asset", "regime", "n_bars", "occupancy"]
    for h in horizons:
        columns += [f"n_fwd_{h}", f"n_eff_{h}", f"p_up_{h}", f"p_up_{h}_lo", f"p_up_{h}_hi",
                    f"mean_fwd_ret_{h}", f"median_fwd_ret_{h}", f"std_fwd_ret_{h}"]
    columns += [f"mean_fwd_vol_{h_vol}", f"fwd_vol_ratio_{h_vol}", "mean_duration_bars",
                "median_duration_bars", "mean_duration_hours", "n_runs", "n_censored_runs"]
    return table[columns]


# --------------------------------------------------------------------------- naming and summary
def describe_regime(row: pd.Series | dict) -> str:
    """Short descriptive name for one row of ``regime_statistics`` (meant for the pooled row).

    Volatility level from ``fwd_vol_ratio_h``: ``low`` below 0.8, ``high`` above 1.25, else
    ``normal``. Drift from the longest horizon h with a ``p_up_h_lo`` column: ``bull`` if the
    (overlap-corrected) Wilson interval of ``p_up_h`` lies above 0.5 or the mean forward return's
    t-statistic on ``n_eff_h`` exceeds +3, ``bear`` for the mirror case, otherwise (no evidence
    or contradicting evidence) ``neutral``. A high-vol bear with ratio >= 2 is ``crash/stress``.
    Returns e.g. ``"low-vol bull"``, ``"normal-vol neutral"``; ``"insufficient data"`` if the
    regime has no forward returns.
    """
    row = dict(row)
    horizons = [int(k[5:-3]) for k in row if k.startswith("p_up_") and k.endswith("_lo")]
    vol_keys = [k for k in row if k.startswith("fwd_vol_ratio_")]
    if not horizons or not vol_keys:
        raise DataError(
            "describe_regime needs a row of regime_statistics (p_up_h_lo, fwd_vol_ratio_h)"
        )
    h = max(horizons)
    if not row[f"n_fwd_{h}"] > 0:
        return "insufficient data"
    ratio = float(row[vol_keys[0]])
    if math.isnan(ratio):
        level = "unknown"
    else:
        level = "low" if ratio < LOW_VOL_RATIO else "high" if ratio > HIGH_VOL_RATIO else "normal"
    std, n_eff = float(row[f"std_fwd_ret_{h}"]), float(row[f"n_eff_{h}"])
    t_stat = float(row[f"mean_fwd_ret_{h}"]) / (std / math.sqrt(n_eff)) if std > 0 else math.nan
    up = row[f"p_up_{h}_lo"] > 0.5 or t_stat > DRIFT_T_STAT
    down = row[f"p_up_{h}_hi"] < 0.5 or t_stat < -DRIFT_T_STAT
    drift = "bull" if up and not down else "bear" if down and not up else "neutral"
    if drift == "bear" and ratio >= STRESS_VOL_RATIO:
        return "crash/stress"
    return f"{level}-vol {drift}"


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def summarize_regimes(
    close: pd.DataFrame,
    labels: pd.DataFrame,
    n_regimes: int,
    interval: str = "1h",
    horizons: Sequence[int] = (1, 24),
    *,
    in_sample: bool = True,
) -> dict[str, Any]:
    """JSON-ready summary: the ``regime_statistics`` table as records (``per_asset``, pooled
    ``ALL`` rows included), transition matrices and entropy rates (pooled and per asset),
    occupancy, a descriptive name per regime from its pooled row, and the ``in_sample`` flag.

    Pass ``in_sample=False`` only when the labels come from a model that did not see these bars.
    Entropy rates weight each origin regime by its share of the counted transitions.
    """
    table = regime_statistics(close, labels, n_regimes, interval, horizons)
    pooled_rows = table[table["asset"] == POOLED].set_index("regime")

    def chain(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
        counts = transition_counts(frame, n_regimes, interval)
        total = counts.sum()
        weights = counts.sum(axis=1) / total if total else np.full(n_regimes, np.nan)
        P = row_normalise(counts)
        return counts, P, entropy_rate(P, weights)

    counts, P, h_rate = chain(labels)
    per_asset = {str(a): chain(labels[[a]]) for a in labels.columns}
    counts_a, P_a, h_rate_a = ({a: c[i] for a, c in per_asset.items()} for i in range(3))
    occupancy = table.pivot(index="asset", columns="regime", values="occupancy")
    return _jsonable({
        "in_sample": bool(in_sample),
        "interval": interval,
        "n_regimes": int(n_regimes),
        "horizons": sorted({int(h) for h in horizons}),
        "regime_names": {k: describe_regime(pooled_rows.loc[k]) for k in range(n_regimes)},
        "per_asset": table.to_dict(orient="records"),
        "transition_counts": {"pooled": counts, "per_asset": counts_a},
        "transition_matrix": {"pooled": P, "per_asset": P_a},
        "stationary_distribution": stationary_distribution(P),
        "entropy_rate_nats": {"pooled": h_rate, "per_asset": h_rate_a},
        "occupancy": {"pooled": occupancy.loc[POOLED].to_numpy(),
                      "per_asset": {a: occupancy.loc[a].to_numpy() for a in per_asset}},
    })
