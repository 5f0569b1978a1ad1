"""Market-wide causal features: one value per bar, shared by every asset of the panel."""

from __future__ import annotations

from functools import cache

import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.features.asset import Maker
from market_regimes.features.ops import cross_sectional_share, mean_pairwise_correlation, window_sum

TIE = 1e-12  # log-return (or relative price) margin below which a comparison is a tie


def market_features(
    panel: Panel, ret: pd.DataFrame, log_rv: pd.DataFrame, cfg, sentiment: pd.Series | None = None
) -> dict[str, pd.Series]:
    """Breadth, mean pairwise correlation, cross-sectional dispersion and optional sentiment.

    Computed over the assets present at each bar; measures that need two assets are skipped for
    a one-asset panel (NaN where fewer than two are available).
    """
    return {name: make() for name, make in market_feature_makers(panel, ret, log_rv, cfg, sentiment)}


def market_feature_makers(
    panel: Panel, ret: pd.DataFrame, log_rv: pd.DataFrame, cfg, sentiment: pd.Series | None = None
) -> list[Maker]:
    """``(name, compute)`` per feature of :func:`market_features`, in output order (float64 Series)."""
    w_ret, w_ma = cfg.breadth_return_window, cfg.breadth_ma_window

    # Breadth compares sums with thresholds. Flat prices are common (coarse ticks), so ties are
    # too: window sums carry no residue from earlier bars, and a margin of TIE counts a window
    # that is level up to rounding as neither up nor above its mean, whatever the summation order.
    @cache
    def cum() -> pd.DataFrame:
        return window_sum(ret, w_ret)

    def breadth_above_ma():
        ma = window_sum(panel.close, w_ma) / w_ma
        return cross_sectional_share(panel.close > ma * (1.0 + TIE), ma.notna() & panel.close.notna())

    makers: list[Maker] = [
        (f"breadth_up_{w_ret}", lambda: cross_sectional_share(cum() > TIE, cum().notna())),
        (f"breadth_above_ma_{w_ma}", breadth_above_ma),
        # Market level: the cross-sectional mean of log volatility and of the trailing return,
        # which describe the state of the market as a whole rather than of one asset.
        (f"market_log_rv_{min(cfg.vol_horizons)}", lambda: log_rv.mean(axis=1)),
        (f"market_ret_{w_ret}", lambda: cum().mean(axis=1)),
    ]
    if ret.shape[1] >= 2:
        w = cfg.market_corr_window
        makers += [
            (f"mean_corr_{w}", lambda: pd.Series(mean_pairwise_correlation(ret.to_numpy(), w), index=ret.index)),
            ("dispersion_ret", lambda: ret.std(axis=1).where(ret.notna().sum(axis=1) >= 2)),
            ("dispersion_vol", lambda: log_rv.std(axis=1).where(log_rv.notna().sum(axis=1) >= 2)),
        ]
    if sentiment is not None:
        makers.append(("fear_greed", lambda: sentiment.reindex(ret.index).astype("float64") / 100.0))
    return [(name, lambda make=make: make().astype("float64")) for name, make in makers]
