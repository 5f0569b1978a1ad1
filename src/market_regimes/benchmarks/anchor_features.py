"""Hand-made, causal inputs of the anchor methods (trailing windows only; NaN until a window is full).

* :func:`downside_features`: the features of Shu, Yu and Mulvey (2024), used in the
  ``jumpmodels`` examples: for each half-life h, the log of the exponentially weighted downside
  deviation and the exponentially weighted Sortino ratio (EW mean over EW downside deviation).
* :func:`ewm_volatility_features`: for each half-life h, the log of the exponentially weighted
  root mean square return (an EW volatility). On the two-state Hardy simulation the ``jumpmodels``
  model on these inputs labels online with balanced accuracy 0.85-0.90 for fixed penalties 1-20
  (T = 1000, 10 seeds), against ~0.65 on the downside-deviation/Sortino pair; with the penalty the
  benchmark validates it gets 0.62-0.82 over T = 250-2000 (the validation picks too persistent a
  penalty on daily data).
* :func:`return_vol_breadth`: for each horizon h, the market return (cross-sectional mean of the
  h-bar log return), the market volatility (cross-sectional mean of the log h-bar realised
  volatility) and, with two or more assets, breadth: the share of up bars over the last h bars,
  pooled over the assets. (The share of assets whose h-bar return is positive takes only A + 1
  values; with three assets such a feature gives a Gaussian HMM zero-variance states on its
  extremes, which is a defect of the feature, not of the anchor.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def downside_features(returns, halflives=(5, 10, 21)) -> np.ndarray:
    """(T, 2 * len(halflives)) from a (T,) return series; rows before max(halflives) bars are NaN."""
    r = pd.Series(np.asarray(returns, dtype=np.float64))
    cols = []
    for h in halflives:
        dd = np.sqrt((r.clip(upper=0.0) ** 2).ewm(halflife=h).mean())
        mean = r.ewm(halflife=h).mean()
        cols += [np.log(dd + 1e-8), mean / (dd + 1e-8)]
    out = np.column_stack(cols)
    out[: int(max(halflives))] = np.nan
    return out


def ewm_volatility_features(returns, halflives=(5, 10, 21)) -> np.ndarray:
    """(T, len(halflives)) log EW RMS returns from a (T,) series; rows before max(halflives) bars are NaN."""
    r2 = pd.Series(np.asarray(returns, dtype=np.float64) ** 2)
    out = np.column_stack([0.5 * np.log(r2.ewm(halflife=h).mean().to_numpy() + 1e-16) for h in halflives])
    out[: int(max(halflives))] = np.nan
    return out


#: name -> feature maker of the jump-model anchor (``anchors.jump.features`` in a suite config)
JUMP_FEATURES = {"downside": downside_features, "ewm_vol": ewm_volatility_features}


def return_vol_breadth(returns, horizons=(24,)) -> np.ndarray:
    """(T, F) from (T, A) log returns (a (T,) series is one asset); see the module docstring."""
    r = pd.DataFrame(np.asarray(returns, dtype=np.float64).reshape(len(returns), -1))
    cols = []
    for h in horizons:
        cum = r.rolling(h).sum()
        cols += [cum.mean(axis=1, skipna=False), np.log(r.rolling(h).std() + 1e-12).mean(axis=1, skipna=False)]
        if r.shape[1] >= 2:
            up = (r > 0).astype(np.float64).where(r.notna()).rolling(h).mean()
            cols.append(up.mean(axis=1, skipna=False))
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
