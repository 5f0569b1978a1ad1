"""Cross-asset causal features: each asset against a reference asset (BTC by default)."""

from __future__ import annotations

import pandas as pd

from market_regimes.features.asset import Maker
from market_regimes.features.ops import rolling


def cross_features(ret: pd.DataFrame, log_rv: pd.DataFrame, reference: str, cfg) -> dict[str, pd.DataFrame]:
    """Relative return, rolling correlation and beta, volatility spread against ``reference``.

    ``ret`` is the (T, A) log-return frame and ``log_rv`` the short-horizon log volatility; the reference asset's own rows are the trivial
    values (0 relative return, correlation and beta 1) so every asset has the same columns.
    """
    return {name: make() for name, make in cross_feature_makers(ret, log_rv, reference, cfg)}


def cross_feature_makers(ret: pd.DataFrame, log_rv: pd.DataFrame, reference: str, cfg) -> list[Maker]:
    """``(name, compute)`` per feature of :func:`cross_features`, in output order."""
    ref = ret[reference]
    w_rel, w_corr = cfg.relative_return_window, cfg.corr_window

    def beta():
        ref_var = rolling(ref, w_corr).var()
        return rolling(ret, w_corr).cov(ref).div(ref_var.where(ref_var > 0), axis=0)

    return [
        (f"rel_ret_{w_rel}", lambda: rolling(ret, w_rel).sum().sub(rolling(ref, w_rel).sum(), axis=0)),
        (f"corr_ref_{w_corr}", lambda: rolling(ret, w_corr).corr(ref)),
        (f"beta_ref_{w_corr}", beta),
        (f"vol_spread_{min(cfg.vol_horizons)}", lambda: log_rv.sub(log_rv[reference], axis=0)),
    ]
