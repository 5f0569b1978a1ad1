"""Cross-asset causal features: each asset against a reference asset (BTC by default)."""

from __future__ import annotations

import numpy as np

from market_regimes.features.asset import Maker
from market_regimes.features.ops import masked, ratio, roll, roll_pair


def cross_feature_makers(ret: np.ndarray, log_rv: np.ndarray, reference: int, cfg) -> list[Maker]:
    """Relative return, rolling correlation and beta, volatility spread against the asset in
    column ``reference``, as ``(name, compute)`` pairs in output order.

    ``ret`` is the (T, A) log-return array and ``log_rv`` the short-horizon log volatility; the
    reference asset's own column holds the trivial values (0 relative return, correlation and
    beta 1), so every asset has the same features.
    """
    ref = ret[:, reference]
    w_rel, w_corr = cfg.relative_return_window, cfg.corr_window

    def beta():
        ref_var = roll(ref, w_corr, "var")
        return ratio(roll_pair(ret, ref, w_corr, "cov"), masked(ref_var, ref_var > 0)[:, None])

    return [
        (f"rel_ret_{w_rel}", lambda: roll(ret, w_rel, "sum") - roll(ref, w_rel, "sum")[:, None]),
        (f"corr_ref_{w_corr}", lambda: roll_pair(ret, ref, w_corr, "corr")),
        (f"beta_ref_{w_corr}", beta),
        (f"vol_spread_{min(cfg.vol_horizons)}", lambda: log_rv - log_rv[:, reference : reference + 1]),
    ]
