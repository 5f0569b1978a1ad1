"""Per-asset causal features: returns, volatility, range, oscillators, volume.

Every feature is a ``(T, A)`` DataFrame. Scale-type quantities (volatility, range, width) are
logged; nothing exposes a raw price or volume level. :func:`asset_feature_makers` lists them as
``(name, compute)`` pairs so a caller can store each one and free it before computing the next;
:func:`asset_features` computes them all into a dict.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.features.ops import ewm_mean, rolling, safe_log

Maker = tuple[str, Callable[[], "pd.DataFrame | pd.Series | np.ndarray"]]


def log_returns(panel: Panel) -> pd.DataFrame:
    """r_t = log(close_t / close_{t-1}); NaN when either bar is missing (no fill over gaps)."""
    return np.log(panel.close).diff()


def asset_features(panel: Panel, cfg) -> dict[str, pd.DataFrame]:
    """Every per-asset feature, ``{name: (T, A) DataFrame}``."""
    return {name: make() for name, make in asset_feature_makers(panel, cfg)}


def asset_feature_makers(panel: Panel, cfg, ret: pd.DataFrame | None = None,
                         log_rv: pd.DataFrame | None = None) -> list[Maker]:
    """``(name, compute)`` per feature, in output order. ``ret`` (log returns) and ``log_rv``
    (log volatility at the shortest horizon) may be passed when the caller already has them;
    intermediates shared by two features are computed once."""
    close, high, low, volume = panel.close, panel.high, panel.low, panel.volume
    ret = log_returns(panel) if ret is None else ret
    short, long = min(cfg.vol_horizons), max(cfg.vol_horizons)

    @cache
    def log_vol(h: int) -> pd.DataFrame:
        if h == short and log_rv is not None:
            return log_rv
        return safe_log(rolling(ret, h).std())

    makers: list[Maker] = [("log_ret", lambda: ret)]
    makers += [(f"log_rv_{h}", lambda h=h: log_vol(h)) for h in cfg.vol_horizons]
    if short != long:
        makers.append((f"rv_ratio_{short}_{long}", lambda: log_vol(short) - log_vol(long)))

    def downside():
        return safe_log(np.sqrt(rolling(ret.clip(upper=0.0) ** 2, cfg.downside_window).mean()), 1e-6)

    def atr():
        prev_close = close.shift(1)
        true_range = np.maximum(high - low, np.maximum((high - prev_close).abs(), (low - prev_close).abs()))
        return safe_log(rolling(true_range / close, cfg.atr_window).mean(), 1e-6)

    def rsi():
        n = cfg.rsi_window  # Wilder smoothing, alpha = 1/n, restarted after gaps
        gain = ewm_mean(ret.clip(lower=0.0), 1.0 / n)
        loss = ewm_mean((-ret).clip(lower=0.0), 1.0 / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(gain + loss > 0, 100.0 * gain / (gain + loss), 50.0)
        return np.where(np.isfinite(gain) & np.isfinite(loss), value, np.nan)

    w, k = cfg.bollinger_window, cfg.bollinger_k

    @cache
    def bollinger() -> tuple[pd.DataFrame, pd.DataFrame]:
        return rolling(close, w).mean(), rolling(close, w).std(ddof=0)

    def bb_pctb():
        ma, sd = bollinger()
        band = 2.0 * k * sd
        return ((close - (ma - k * sd)) / band.where(band > 0)).clip(-2.0, 3.0)

    def bb_width():
        ma, sd = bollinger()
        return safe_log(2.0 * k * sd / ma, 1e-6)

    def macd_hist():
        fast, slow, signal = cfg.macd
        ema = lambda x, span: ewm_mean(x, 2.0 / (span + 1.0))  # noqa: E731
        macd = ema(close, fast) - ema(close, slow)
        return (macd - ema(macd, signal)) / close.to_numpy()

    def volume_z():
        w = cfg.volume_window
        # log volume with a floor relative to its own recent level: zero-volume bars stay finite
        # and the feature does not depend on the unit of volume.
        logv = np.log(volume + 1e-3 * rolling(volume, cfg.volume_roc_window).mean())
        mu, sd = rolling(logv, w).mean(), rolling(logv, w).std()
        return ((logv - mu) / sd.where(sd > 0)).clip(-10.0, 10.0)

    def volume_roc():
        vsum = rolling(volume, cfg.volume_roc_window).sum()
        prev = vsum.shift(cfg.volume_roc_window)
        return np.log((vsum + 1e-6 * prev) / (prev + 1e-6 * vsum))

    def obv_slope():
        flow = rolling(np.sign(ret) * volume, cfg.obv_window).sum()
        vol_sum = rolling(volume, cfg.obv_window).sum()
        return (flow / vol_sum.where(vol_sum > 0)).where(vol_sum > 0, 0.0).where(flow.notna())

    makers += [
        (f"log_downside_{cfg.downside_window}", downside),
        (f"log_atr_pct_{cfg.atr_window}", atr),
        (f"rsi_{cfg.rsi_window}", lambda: _frame(rsi(), close)),
        (f"bb_pctb_{w}", bb_pctb),
        (f"log_bb_width_{w}", bb_width),
        ("macd_hist", lambda: _frame(macd_hist(), close)),
        (f"volume_z_{cfg.volume_window}", volume_z),
        (f"volume_roc_{cfg.volume_roc_window}", volume_roc),
        (f"obv_slope_{cfg.obv_window}", obv_slope),
    ]
    return makers


def _frame(values: np.ndarray, like: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(values, index=like.index, columns=like.columns)
