"""One row of behavioural features per asset over a lookback that ends at ``as_of``.

Bars are cut at ``as_of`` first, so every number depends only on bars up to it. Hourly (or any
intraday) bars become daily closes (the last close of each UTC day) and daily quote volume
(``close * volume`` summed over the day); daily bars pass through unchanged. The lookback is the
``lookback_days`` daily log returns ending on the day of ``as_of``.

Features (daily log returns ``r``, ``N = annualisation_days``, 365 for crypto):

    ann_return     mean(r) * N                      (annualised log return)
    ann_vol        std(r, ddof=1) * sqrt(N)
    sharpe         ann_return / ann_vol              (zero risk-free rate)
    skewness       m3 / m2^1.5                       (biased central moments)
    kurtosis       m4 / m2^2 - 3                     (excess)
    var            -q, q the (1 - var_level) quantile of r (numpy's linear interpolation); a loss > 0
    cvar           -mean(r | r <= q)
    momentum       log(close[end] / close[end - momentum_days])   (last known closes)
    trend_r2       R^2 of a straight-line fit of log close on time
    max_drawdown   max over the lookback of 1 - close / running max of close
    corr_ref       correlation of r with the reference asset's r on days both have
    quote_volume   mean daily quote volume (quote currency)

An asset with fewer than ``min_coverage * lookback_days`` daily returns in the lookback is left
out and reported with the reason, never silently kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel, inclusive_end
from market_regimes.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = ("ann_return", "ann_vol", "sharpe", "skewness", "kurtosis", "var", "cvar", "momentum",
                             "trend_r2", "max_drawdown", "corr_ref", "quote_volume")


@dataclass(frozen=True)
class ProfileConfig:
    lookback_days: int = 365
    min_coverage: float = 0.9
    reference_symbol: str | None = None  # None: BTCUSDT when present, else the first symbol
    momentum_days: int = 30
    annualisation_days: float = 365.0
    var_level: float = 0.95

    def __post_init__(self) -> None:
        if self.lookback_days < 3:
            raise ConfigError(f"lookback_days={self.lookback_days} must be >= 3")
        if not 0 < self.min_coverage <= 1:
            raise ConfigError(f"min_coverage={self.min_coverage} must be in (0, 1]")
        if not 1 <= self.momentum_days < self.lookback_days:
            raise ConfigError(f"momentum_days={self.momentum_days} must be in [1, lookback_days)")
        if not 0.5 < self.var_level < 1:
            raise ConfigError(f"var_level={self.var_level} must be in (0.5, 1)")
        if not self.annualisation_days > 0:
            raise ConfigError(f"annualisation_days={self.annualisation_days} must be > 0")


@dataclass
class AssetProfile:
    """features: (A, F) on the kept assets; excluded: one row per left-out asset with the reason;
    returns: (D, A) daily log returns of the kept assets over the lookback (NaN = no data)."""

    features: pd.DataFrame
    excluded: pd.DataFrame
    returns: pd.DataFrame
    as_of: pd.Timestamp
    start_day: pd.Timestamp
    reference: str


def daily_bars(panel: Panel, as_of: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(daily close, daily quote volume), each (D, A) on UTC midnights, from bars opening <= as_of."""
    close = panel.close.loc[:as_of]
    quote = close * panel.volume.loc[:as_of]
    if close.empty:
        raise DataError(f"no bars at or before as_of={as_of}; the data starts {panel.index[0]}")
    return close.resample("1D").last(), quote.resample("1D").sum(min_count=1)


def resolve_as_of(panel: Panel, as_of) -> pd.Timestamp:
    """The last bar at or before ``as_of`` (a date alone means the end of that day); None: the data end."""
    stamp = inclusive_end(as_of) if as_of is not None else panel.index[-1]
    if stamp < panel.index[0]:
        raise DataError(f"as_of={as_of} is before the data start {panel.index[0]}")
    return panel.index[panel.index.searchsorted(stamp, side="right") - 1]


def resolve_reference(symbols: list[str], reference: str | None) -> str:
    if reference is None:
        return "BTCUSDT" if "BTCUSDT" in symbols else symbols[0]
    if reference not in symbols:
        raise ConfigError(f"reference_symbol={reference} is not in the data; it has {', '.join(symbols)}")
    return reference


def _masked_moments(r: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per column of (D, A) ``r``: count, mean, ddof-1 std, biased m2, m3, m4 over ``valid`` rows."""
    n = valid.sum(axis=0)
    x = np.where(valid, r, 0.0)
    mean = x.sum(axis=0) / np.maximum(n, 1)
    d = np.where(valid, r - mean, 0.0)
    m2, m3, m4 = ((d**p).sum(axis=0) / np.maximum(n, 1) for p in (2, 3, 4))
    std = np.sqrt(m2 * n / np.maximum(n - 1, 1))
    return n, mean, std, m2, m3, m4


def _masked_corr(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per column of (D, A) x and y: Pearson correlation over ``valid`` rows (NaN if undefined)."""
    n = np.maximum(valid.sum(axis=0), 1)
    xm = np.where(valid, x, 0.0).sum(axis=0) / n
    ym = np.where(valid, y, 0.0).sum(axis=0) / n
    dx, dy = np.where(valid, x - xm, 0.0), np.where(valid, y - ym, 0.0)
    denom = np.sqrt((dx**2).sum(axis=0) * (dy**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (dx * dy).sum(axis=0) / denom, np.nan)


def return_features(close: np.ndarray, ref_returns: np.ndarray, cfg: ProfileConfig) -> dict[str, np.ndarray]:
    """Every price feature of the module docstring for (D + 1, A) daily closes (NaN = no close).

    ref_returns: (D,) daily log returns of the reference asset. Returns name -> (A,) values.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        logc = np.log(close)
        r = np.diff(logc, axis=0)  # (D, A)
        valid = np.isfinite(r)
        n, mean, std, m2, m3, m4 = _masked_moments(r, valid)
        ann = cfg.annualisation_days
        out = {"ann_return": mean * ann, "ann_vol": std * np.sqrt(ann)}
        out["sharpe"] = np.where(std > 0, out["ann_return"] / out["ann_vol"], np.nan)
        out["skewness"] = np.where(m2 > 0, m3 / m2**1.5, np.nan)
        out["kurtosis"] = np.where(m2 > 0, m4 / m2**2 - 3.0, np.nan)
        q = np.nanquantile(np.where(valid, r, np.nan), 1 - cfg.var_level, axis=0)  # (A,)
        tail = valid & (r <= q[None, :])
        out["var"] = -q
        out["cvar"] = -np.where(tail, r, 0.0).sum(axis=0) / np.maximum(tail.sum(axis=0), 1)
        last = pd.DataFrame(logc).ffill().to_numpy()  # last known log close at each day
        out["momentum"] = last[-1] - last[-1 - cfg.momentum_days]
        t = np.arange(len(logc), dtype=float)[:, None] * np.ones((1, logc.shape[1]))
        out["trend_r2"] = _masked_corr(t, logc, np.isfinite(logc)) ** 2
        peak = np.fmax.accumulate(last, axis=0)
        out["max_drawdown"] = np.nanmax(1.0 - np.exp(last - peak), axis=0)
        ref = np.broadcast_to(ref_returns[:, None], r.shape)
        out["corr_ref"] = _masked_corr(r, ref, valid & np.isfinite(ref))
    for name, v in out.items():
        out[name] = np.where(n >= 2, v, np.nan)
    return out


def asset_profile(panel: Panel, cfg: ProfileConfig, as_of=None) -> AssetProfile:
    """Features of every asset with enough history in the ``lookback_days`` up to ``as_of``."""
    reference = resolve_reference(panel.symbols, cfg.reference_symbol)
    stamp = resolve_as_of(panel, as_of)
    close, quote = daily_bars(panel, stamp)
    days = pd.date_range(end=stamp.floor("1D"), periods=cfg.lookback_days + 1, freq="1D", tz="UTC")
    close = close.reindex(days)  # (D + 1, A): days before the data start are NaN
    quote = quote.reindex(days[1:])
    returns = np.log(close).diff().iloc[1:]  # (D, A)
    n_ret = returns.notna().sum()
    need = int(np.ceil(cfg.min_coverage * cfg.lookback_days))
    short = n_ret < need
    if short[reference]:
        raise DataError(f"reference_symbol {reference} has {n_ret[reference]} of {cfg.lookback_days} daily returns "
                        f"in the lookback to {stamp}; choose another reference_symbol or lower min_coverage")
    excluded = pd.DataFrame({
        "asset": n_ret.index[short], "daily_returns": n_ret[short].to_numpy(),
        "reason": [f"{k} of {cfg.lookback_days} daily returns in the lookback (needs {need})" for k in n_ret[short]],
    })
    if len(excluded):
        log.debug("left out %d asset(s) with too little history at %s: %s", len(excluded), stamp,
                  ", ".join(excluded["asset"]))
    keep = list(n_ret.index[~short])
    values = return_features(close[keep].to_numpy(), returns[reference].to_numpy(), cfg)
    values["quote_volume"] = quote[keep].mean().to_numpy()
    features = pd.DataFrame(values, index=pd.Index(keep, name="asset"))[list(FEATURES)]
    features.insert(0, "daily_returns", n_ret[keep].astype(int))
    return AssetProfile(features, excluded, returns[keep], stamp, days[0], reference)
