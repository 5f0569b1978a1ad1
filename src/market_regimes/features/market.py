"""Market-wide causal features: one value per bar, shared by every asset of the panel."""

from __future__ import annotations

import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.features.ops import cross_sectional_share, mean_pairwise_correlation, rolling


def market_features(
    panel: Panel, ret: pd.DataFrame, log_rv: pd.DataFrame, cfg, sentiment: pd.Series | None = None
) -> dict[str, pd.Series]:
    """Breadth, mean pairwise correlation, cross-sectional dispersion and optional sentiment.

    Computed over the assets present at each bar; measures that need two assets are skipped for
    a one-asset panel (NaN where fewer than two are available).
    """
    out: dict[str, pd.Series] = {}
    w = cfg.breadth_return_window
    cum = rolling(ret, w).sum()
    out[f"breadth_up_{w}"] = cross_sectional_share(cum > 0, cum.notna())
    w = cfg.breadth_ma_window
    ma = rolling(panel.close, w).mean()
    out[f"breadth_above_ma_{w}"] = cross_sectional_share(panel.close > ma, ma.notna() & panel.close.notna())
    # Market level: the cross-sectional mean of log volatility and of the trailing return, which
    # describe the state of the market as a whole rather than of one asset.
    out[f"market_log_rv_{min(cfg.vol_horizons)}"] = log_rv.mean(axis=1)
    out[f"market_ret_{cfg.breadth_return_window}"] = cum.mean(axis=1)
    if ret.shape[1] >= 2:
        w = cfg.market_corr_window
        out[f"mean_corr_{w}"] = pd.Series(mean_pairwise_correlation(ret.to_numpy(), w), index=ret.index)
        enough = ret.notna().sum(axis=1) >= 2
        out["dispersion_ret"] = ret.std(axis=1).where(enough)
        out["dispersion_vol"] = log_rv.std(axis=1).where(log_rv.notna().sum(axis=1) >= 2)
    if sentiment is not None:
        out["fear_greed"] = sentiment.reindex(ret.index).astype("float64") / 100.0
    return {k: v.astype("float64") for k, v in out.items()}
