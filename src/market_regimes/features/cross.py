"""Cross-asset causal features: each asset against a reference asset (BTC by default)."""

from __future__ import annotations

import pandas as pd

from market_regimes.features.ops import rolling


def cross_features(ret: pd.DataFrame, log_rv: pd.DataFrame, reference: str, cfg) -> dict[str, pd.DataFrame]:
    """Relative return, rolling correlation and beta, volatility spread against ``reference``.

    ``ret`` is the (T, A) log-return frame and ``log_rv`` the short-horizon log volatility; the reference asset's own rows are the trivial
    values (0 relative return, correlation and beta 1) so every asset has the same columns.
    """
    ref = ret[reference]
    out: dict[str, pd.DataFrame] = {}
    w = cfg.relative_return_window
    out[f"rel_ret_{w}"] = rolling(ret, w).sum().sub(rolling(ref, w).sum(), axis=0)

    w = cfg.corr_window
    out[f"corr_ref_{w}"] = rolling(ret, w).corr(ref)
    ref_var = rolling(ref, w).var()
    out[f"beta_ref_{w}"] = rolling(ret, w).cov(ref).div(ref_var.where(ref_var > 0), axis=0)

    out[f"vol_spread_{min(cfg.vol_horizons)}"] = log_rv.sub(log_rv[reference], axis=0)
    return out
