"""Causal features: per asset, against a reference asset, and market-wide.

``build_features`` turns an aligned :class:`~market_regimes.data.panel.Panel` into a
:class:`FeatureSet`: a (A, T, F) float32 array plus a validity mask. A value at bar t uses bars
<= t only; a row is valid only when the asset has ``warmup`` consecutive bars ending at t (so no
feature window touches a gap or the pre-listing period) and every feature is finite.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.errors import ConfigError, DataError, checked_options
from market_regimes.features.asset import asset_feature_makers, log_returns
from market_regimes.features.cross import cross_feature_makers
from market_regimes.features.market import market_feature_makers
from market_regimes.features.ops import roll, run_length, safe_log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureConfig:
    """Feature parameters; windows are in bars of the panel's interval."""

    reference_symbol: str = "BTCUSDT"
    vol_horizons: tuple[int, ...] = (24, 72)
    downside_window: int = 24
    atr_window: int = 14
    rsi_window: int = 14
    bollinger_window: int = 20
    bollinger_k: float = 2.0
    macd: tuple[int, int, int] = (12, 26, 9)
    volume_window: int = 168
    volume_roc_window: int = 24
    obv_window: int = 24
    relative_return_window: int = 24
    corr_window: int = 168
    breadth_return_window: int = 24
    breadth_ma_window: int = 50
    market_corr_window: int = 72
    cross_asset: bool = True
    market: bool = True
    fear_greed: bool = False
    warmup: int | None = None  # bars; None = longest lookback + 1

    @classmethod
    def from_dict(cls, values) -> "FeatureConfig":
        values = checked_options(cls, values, "features")
        for key in ("vol_horizons", "macd"):
            if key in values and values[key] is not None:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def lookback(self) -> int:
        """Longest trailing window any feature reads, in bars (returns add one more)."""
        windows = [*self.vol_horizons, self.downside_window, self.atr_window, self.bollinger_window,
                   self.volume_window + self.volume_roc_window, 2 * self.volume_roc_window, self.obv_window,
                   self.relative_return_window, self.corr_window, self.breadth_return_window,
                   self.breadth_ma_window, self.market_corr_window,
                   4 * self.rsi_window, 2 * (self.macd[1] + self.macd[2])]
        return max(windows) + 1

    def effective_warmup(self) -> int:
        return self.lookback() if self.warmup is None else int(self.warmup)

    def history(self, tol: float = 1e-16) -> int:
        """Bars of history that fix a feature row: computed from only the last ``history()`` bars
        up to t, row t equals the row computed from the whole history (valid the same way) --
        exactly for the rolling windows, and to relative ``tol`` for the exponential averages
        (RSI, MACD), whose weight on older bars is below ``tol``."""
        fast, slow, signal = self.macd
        slowest = min(1.0 / self.rsi_window, 2.0 / (slow + 1.0), 2.0 / (signal + 1.0))
        ewm_bars = int(np.ceil(np.log(tol) / np.log1p(-slowest))) + 1
        return max(self.effective_warmup(), self.lookback(), ewm_bars)


@dataclass
class FeatureSet:
    """Features of every asset on the panel grid.

    values: (A, T, F) float32, NaN where undefined; valid: (A, T) bool; index: the bar-open
    times (length T, UTC); symbols: A names; names: F feature names.
    """

    values: np.ndarray
    valid: np.ndarray
    index: pd.DatetimeIndex
    symbols: list[str]
    names: list[str]
    config: dict = field(default_factory=dict)

    def frame(self, symbol: str) -> pd.DataFrame:
        """One asset's features as a (T, F) DataFrame on the bar index (plus a ``valid`` column)."""
        a = self.symbols.index(symbol)
        df = pd.DataFrame(self.values[a], index=self.index, columns=self.names)
        df["valid"] = self.valid[a]
        return df

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())


FEATURE_BLOCK = 6  # feature layers copied into the result together (a (T, A, 6) float32 buffer)


def build_features(panel: Panel, cfg: FeatureConfig | None = None, sentiment: pd.Series | None = None) -> FeatureSet:
    """Compute every configured feature for every asset; see the module docstring for validity.

    Each feature is computed, written into a (T, A, FEATURE_BLOCK) float32 buffer and freed
    before the next one; each full buffer is copied into the preallocated (A, T, F) result, so
    memory stays near the size of the result plus the buffer and a few (T, A) frames.
    """
    cfg = cfg or FeatureConfig()
    if cfg.fear_greed and sentiment is None:
        raise ConfigError("features.fear_greed=true needs data.fear_greed_path (the daily index CSV)")
    symbols = panel.symbols
    T, A = len(panel.index), len(symbols)
    ret = log_returns(panel)
    log_rv = safe_log(roll(ret, min(cfg.vol_horizons), "std"))
    makers = asset_feature_makers(panel, cfg, ret, log_rv)
    if cfg.cross_asset and A >= 2:
        reference = cfg.reference_symbol
        if reference not in symbols:
            raise ConfigError(
                f"features.reference_symbol={reference} is not among the symbols {symbols}; "
                "set it to one of them or features.cross_asset=false"
            )
        makers += cross_feature_makers(ret, log_rv, symbols.index(reference), cfg)
    if cfg.market:
        makers += market_feature_makers(panel, ret, log_rv, cfg, sentiment if cfg.fear_greed else None)
    del ret, log_rv  # the makers keep what they still need

    names = [name for name, _ in makers]
    n = len(names)
    values = np.empty((A, T, n), dtype=np.float32)
    finite = np.ones((A, T), dtype=bool)
    # Layers come as (T, A); the result is (A, T, F). Writing one layer at a time into it is a
    # transposed write with a stride of F floats (most of the time of a large panel), so layers
    # are gathered FEATURE_BLOCK at a time in a (T, A, block) buffer and copied over together.
    block = max(1, min(n, FEATURE_BLOCK))
    buf = np.empty((T, A, block), dtype=np.float32)
    makers.reverse()
    for start in range(0, n, block):
        stop = min(start + block, n)
        for i in range(stop - start):
            _, make = makers.pop()  # dropping each maker frees the intermediates only it used
            layer = make()  # (T, A), or (T,) for a market-wide feature
            buf[:, :, i] = layer if layer.ndim == 2 else layer[:, None]
            del make, layer
        part = buf[:, :, : stop - start]
        values[:, :, start:stop] = part.transpose(1, 0, 2)
        finite &= np.isfinite(part).all(axis=2).T
    del buf
    present_run = run_length(panel.present.to_numpy()).T  # (A, T)
    valid = (present_run >= cfg.effective_warmup()) & finite
    if not valid.any():
        raise DataError(
            f"no valid feature rows: {T} bars per asset but features need {cfg.effective_warmup()} "
            "consecutive bars; load more history or shorten the feature windows"
        )
    log.info("features: %d assets x %d bars x %d features, %.1f%% rows valid",
             A, T, len(names), 100.0 * valid.mean())
    return FeatureSet(values, valid, panel.index, symbols, names, asdict(cfg))
