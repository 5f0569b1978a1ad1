"""Per-asset causal features: returns, volatility, range, oscillators, volume.

Every function takes the aligned panel and returns ``{name: (T, A) DataFrame}``. Scale-type
quantities (volatility, range, width) are logged; nothing exposes a raw price or volume level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.features.ops import ewm_mean, rolling, safe_log


def log_returns(panel: Panel) -> pd.DataFrame:
    """r_t = log(close_t / close_{t-1}); NaN when either bar is missing (no fill over gaps)."""
    return np.log(panel.close).diff()


def asset_features(panel: Panel, cfg) -> dict[str, pd.DataFrame]:
    close, high, low, volume = panel.close, panel.high, panel.low, panel.volume
    ret = log_returns(panel)
    out: dict[str, pd.DataFrame] = {"log_ret": ret}

    vols = {}
    for h in cfg.vol_horizons:
        vols[h] = rolling(ret, h).std()
        out[f"log_rv_{h}"] = safe_log(vols[h])
    short, long = min(cfg.vol_horizons), max(cfg.vol_horizons)
    if short != long:
        out[f"rv_ratio_{short}_{long}"] = safe_log(vols[short]) - safe_log(vols[long])

    w = cfg.downside_window
    out[f"log_downside_{w}"] = safe_log(np.sqrt(rolling(ret.clip(upper=0.0) ** 2, w).mean()), 1e-6)

    prev_close = close.shift(1)
    true_range = np.maximum(high - low, np.maximum((high - prev_close).abs(), (low - prev_close).abs()))
    out[f"log_atr_pct_{cfg.atr_window}"] = safe_log(rolling(true_range / close, cfg.atr_window).mean(), 1e-6)

    n = cfg.rsi_window  # Wilder smoothing, alpha = 1/n, restarted after gaps
    gain = ewm_mean(ret.clip(lower=0.0), 1.0 / n)
    loss = ewm_mean((-ret).clip(lower=0.0), 1.0 / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi = np.where(gain + loss > 0, 100.0 * gain / (gain + loss), 50.0)
    rsi = np.where(np.isfinite(gain) & np.isfinite(loss), rsi, np.nan)
    out[f"rsi_{n}"] = pd.DataFrame(rsi, index=close.index, columns=close.columns)

    w, k = cfg.bollinger_window, cfg.bollinger_k
    ma, sd = rolling(close, w).mean(), rolling(close, w).std(ddof=0)
    band = 2.0 * k * sd
    out[f"bb_pctb_{w}"] = ((close - (ma - k * sd)) / band.where(band > 0)).clip(-2.0, 3.0)
    out[f"log_bb_width_{w}"] = safe_log(band / ma, 1e-6)

    fast, slow, signal = cfg.macd
    ema = lambda x, span: ewm_mean(x, 2.0 / (span + 1.0))  # noqa: E731
    macd = ema(close, fast) - ema(close, slow)
    hist = (macd - ema(macd, signal)) / close.to_numpy()
    out["macd_hist"] = pd.DataFrame(hist, index=close.index, columns=close.columns)

    w = cfg.volume_window
    # log volume with a floor relative to its own recent level: zero-volume bars stay finite
    # and the feature does not depend on the unit of volume.
    logv = np.log(volume + 1e-3 * rolling(volume, cfg.volume_roc_window).mean())
    mu, sd = rolling(logv, w).mean(), rolling(logv, w).std()
    out[f"volume_z_{w}"] = ((logv - mu) / sd.where(sd > 0)).clip(-10.0, 10.0)
    w = cfg.volume_roc_window
    vsum = rolling(volume, w).sum()
    prev = vsum.shift(w)
    out[f"volume_roc_{w}"] = np.log((vsum + 1e-6 * prev) / (prev + 1e-6 * vsum))

    w = cfg.obv_window
    flow = rolling(np.sign(ret) * volume, w).sum()
    vol_sum = rolling(volume, w).sum()
    out[f"obv_slope_{w}"] = (flow / vol_sum.where(vol_sum > 0)).where(vol_sum > 0, 0.0).where(flow.notna())
    return out
