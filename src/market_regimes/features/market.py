"""Market-wide causal features: one value per bar, shared by every asset of the panel.

Computed over the assets present at each bar; measures that need two assets are skipped for a
one-asset panel (NaN where fewer than two are available).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.features.asset import Maker
from market_regimes.features.ops import cross_sectional_share, mean_pairwise_correlation, row_mean, row_std, window_sum

TIE = 1e-12  # log-return (or relative price) margin below which a comparison is a tie


def market_feature_makers(
    panel: Panel, ret: np.ndarray, log_rv: np.ndarray, cfg, sentiment: pd.Series | None = None
) -> list[Maker]:
    """``(name, compute)`` per market feature (breadth, market volatility and return, mean
    pairwise correlation, cross-sectional dispersion, optional sentiment), in output order;
    each computes a (T,) float64 array. ``ret`` and ``log_rv`` are (T, A) arrays."""
    w_ret, w_ma = cfg.breadth_return_window, cfg.breadth_ma_window
    close = panel.close.to_numpy(dtype=np.float64)

    # Breadth compares sums with thresholds. Flat prices are common (coarse ticks), so ties are
    # too: window sums carry no residue from earlier bars, and a margin of TIE counts a window
    # that is level up to rounding as neither up nor above its mean, whatever the summation order.
    @cache
    def cum() -> np.ndarray:
        return window_sum(ret, w_ret)

    def breadth_above_ma():
        ma = window_sum(close, w_ma) / w_ma
        with np.errstate(invalid="ignore"):
            above = close > ma * (1.0 + TIE)
        return cross_sectional_share(above, ~np.isnan(ma) & ~np.isnan(close))

    def breadth_up():
        with np.errstate(invalid="ignore"):
            up = cum() > TIE
        return cross_sectional_share(up, ~np.isnan(cum()))

    makers: list[Maker] = [
        (f"breadth_up_{w_ret}", breadth_up),
        (f"breadth_above_ma_{w_ma}", breadth_above_ma),
        # Market level: the cross-sectional mean of log volatility and of the trailing return,
        # which describe the state of the market as a whole rather than of one asset.
        (f"market_log_rv_{min(cfg.vol_horizons)}", lambda: row_mean(log_rv)),
        (f"market_ret_{w_ret}", lambda: row_mean(cum())),
    ]
    if ret.shape[1] >= 2:
        w = cfg.market_corr_window
        makers += [
            (f"mean_corr_{w}", lambda: mean_pairwise_correlation(ret, w)),
            ("dispersion_ret", lambda: row_std(ret)),
            ("dispersion_vol", lambda: row_std(log_rv)),
        ]
    if sentiment is not None:
        makers.append(("fear_greed", lambda: sentiment.reindex(panel.index).to_numpy(dtype=np.float64) / 100.0))
    return makers
