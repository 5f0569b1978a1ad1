"""Per-asset causal features: returns, volatility, range, oscillators, volume.

Every feature is a ``(T, A)`` float64 array on the panel grid (NaN where undefined). Scale-type
quantities (volatility, range, width) are logged; nothing exposes a raw price or volume level.
:func:`asset_feature_makers` lists them as ``(name, compute)`` pairs so a caller can store each
one and free it before computing the next.

The arithmetic is plain numpy on arrays and only the trailing-window statistics go through
pandas (:mod:`~market_regimes.features.ops`): a short tail of history (inference) then costs
tens of array operations, not hundreds of DataFrame ones, and the full history the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from market_regimes.data.panel import Panel
from market_regimes.features.ops import ewm_mean, masked, ratio, roll, safe_log, shift

Maker = tuple[str, Callable[[], np.ndarray]]


def log_returns(panel: Panel) -> np.ndarray:
    """(T, A) r_t = log(close_t / close_{t-1}); NaN when either bar is missing (no fill over gaps)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close = np.log(panel.close.to_numpy(dtype=np.float64))
    return log_close - shift(log_close, 1)


def asset_feature_makers(panel: Panel, cfg, ret: np.ndarray | None = None,
                         log_rv: np.ndarray | None = None) -> list[Maker]:
    """``(name, compute)`` per feature, in output order. ``ret`` (log returns) and ``log_rv``
    (log volatility at the shortest horizon) may be passed when the caller already has them;
    intermediates shared by two features are computed once."""
    close, high, low, volume = (getattr(panel, k).to_numpy(dtype=np.float64)
                                for k in ("close", "high", "low", "volume"))
    ret = log_returns(panel) if ret is None else ret
    short, long = min(cfg.vol_horizons), max(cfg.vol_horizons)

    @cache
    def log_vol(h: int) -> np.ndarray:
        if h == short and log_rv is not None:
            return log_rv
        return safe_log(roll(ret, h, "std"))

    makers: list[Maker] = [("log_ret", lambda: ret)]
    makers += [(f"log_rv_{h}", lambda h=h: log_vol(h)) for h in cfg.vol_horizons]
    if short != long:
        makers.append((f"rv_ratio_{short}_{long}", lambda: log_vol(short) - log_vol(long)))

    def downside():
        return safe_log(np.sqrt(roll(np.minimum(ret, 0.0) ** 2, cfg.downside_window, "mean")), 1e-6)

    def atr():
        prev_close = shift(close, 1)
        true_range = np.maximum(high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close)))
        return safe_log(roll(true_range / close, cfg.atr_window, "mean"), 1e-6)

    def rsi():
        n = cfg.rsi_window  # Wilder smoothing, alpha = 1/n, restarted after gaps
        gain = ewm_mean(np.maximum(ret, 0.0), 1.0 / n)
        loss = ewm_mean(np.maximum(-ret, 0.0), 1.0 / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(gain + loss > 0, 100.0 * gain / (gain + loss), 50.0)
        return np.where(np.isfinite(gain) & np.isfinite(loss), value, np.nan)

    w, k = cfg.bollinger_window, cfg.bollinger_k

    @cache
    def bollinger() -> tuple[np.ndarray, np.ndarray]:
        return roll(close, w, "mean"), roll(close, w, "std", ddof=0)

    def bb_pctb():
        ma, sd = bollinger()
        band = 2.0 * k * sd
        return np.clip(ratio(close - (ma - k * sd), masked(band, band > 0)), -2.0, 3.0)

    def bb_width():
        ma, sd = bollinger()
        return safe_log(ratio(2.0 * k * sd, ma), 1e-6)

    def macd_hist():
        fast, slow, signal = cfg.macd
        ema = lambda x, span: ewm_mean(x, 2.0 / (span + 1.0))  # noqa: E731
        macd = ema(close, fast) - ema(close, slow)
        return (macd - ema(macd, signal)) / close

    def volume_z():
        w = cfg.volume_window
        # log volume with a floor relative to its own recent level: zero-volume bars stay finite
        # and the feature does not depend on the unit of volume.
        with np.errstate(divide="ignore", invalid="ignore"):
            logv = np.log(volume + 1e-3 * roll(volume, cfg.volume_roc_window, "mean"))
        mu, sd = roll(logv, w, "mean"), roll(logv, w, "std")
        return np.clip(ratio(logv - mu, masked(sd, sd > 0)), -10.0, 10.0)

    def volume_roc():
        vsum = roll(volume, cfg.volume_roc_window, "sum")
        prev = shift(vsum, cfg.volume_roc_window)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(ratio(vsum + 1e-6 * prev, prev + 1e-6 * vsum))

    def obv_slope():
        flow = roll(np.sign(ret) * volume, cfg.obv_window, "sum")
        vol_sum = roll(volume, cfg.obv_window, "sum")
        out = np.where(vol_sum > 0, ratio(flow, masked(vol_sum, vol_sum > 0)), 0.0)
        return masked(out, ~np.isnan(flow))

    makers += [
        (f"log_downside_{cfg.downside_window}", downside),
        (f"log_atr_pct_{cfg.atr_window}", atr),
        (f"rsi_{cfg.rsi_window}", rsi),
        (f"bb_pctb_{w}", bb_pctb),
        (f"log_bb_width_{w}", bb_width),
        ("macd_hist", macd_hist),
        (f"volume_z_{cfg.volume_window}", volume_z),
        (f"volume_roc_{cfg.volume_roc_window}", volume_roc),
        (f"obv_slope_{cfg.obv_window}", obv_slope),
    ]
    return makers
