"""Data stage: a source (synthetic, files, binance) -> validated long OHLCV -> aligned :class:`Panel`.

``load_market(cfg)`` is the one entry point; ``cfg`` is the Hydra ``data`` group (any mapping).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from market_regimes.data.panel import FIELDS, Panel, to_panel
from market_regimes.errors import ConfigError

__all__ = ["MarketData", "Panel", "load_market", "to_panel", "fingerprint"]


@dataclass
class MarketData:
    """An aligned panel plus what came with it.

    truth: true regime id per bar (synthetic source only), on ``panel.index``;
    sentiment: Fear & Greed value usable at each bar (causally aligned) or None;
    source: JSON-able description of where the data came from, with a content fingerprint.
    """

    panel: Panel
    truth: pd.Series | None = None
    sentiment: pd.Series | None = None
    source: dict = field(default_factory=dict)


def fingerprint(panel: Panel) -> str:
    """sha256 of the grid, symbols and every OHLCV value: equal data <=> equal fingerprint."""
    h = hashlib.sha256()
    h.update(",".join(panel.symbols).encode())
    h.update(panel.interval.encode())
    h.update(panel.index.asi8.tobytes())
    for f in FIELDS:
        h.update(np.ascontiguousarray(panel.field(f).to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()


def _get(cfg: Mapping, key: str, default=None):
    value = cfg.get(key, default)
    return default if value is None else value


def _list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return [str(s) for s in value]


def load_long(cfg: Mapping) -> tuple[pd.DataFrame, pd.Series | None]:
    """The validated canonical long table of the configured source, and the true regimes if known."""
    source = cfg.get("source")
    interval = _get(cfg, "interval", "1h")
    if source == "synthetic":
        from market_regimes.data.synthetic import RegimeSpec, scenario, simulate_market

        regimes = cfg.get("regimes")
        specs = [RegimeSpec(**dict(r)) for r in regimes] if regimes else scenario(_get(cfg, "scenario", "volatility"))
        long, truth = simulate_market(
            specs, n_bars=int(cfg.get("n_bars", 6000)), symbols=_list(cfg.get("symbols")),
            n_assets=int(_get(cfg, "n_assets", 3)), interval=interval, start=str(_get(cfg, "start", "2022-01-01")),
            seed=int(_get(cfg, "seed", 0)), tail_df=float(_get(cfg, "tail_df", 5.0)),
            garch_alpha=float(_get(cfg, "garch_alpha", 0.05)), garch_beta=float(_get(cfg, "garch_beta", 0.90)),
        )
        return long, truth
    if source == "synthetic_groups":  # planted asset groups, no regimes (the asset-clustering analysis)
        from market_regimes.data.synthetic import simulate_grouped_market

        keys = ("group_sizes", "n_independent", "n_bars", "start", "seed", "group_vol", "group_drift", "group_corr",
                "independent_vol", "independent_drift", "tail_df", "symbols")
        options = {k: cfg[k] for k in keys if cfg.get(k) is not None}
        return simulate_grouped_market(interval=interval, **options)[0], None
    read_kwargs = dict(interval=interval, naive_timezone=cfg.get("naive_timezone"),
                       on_bad_rows=_get(cfg, "on_bad_rows", "error"))
    if source == "files":
        from market_regimes.data.files import read_path

        path = cfg.get("path")
        if not path or path == "???":
            raise ConfigError("data=files needs data.path=PATH (a folder of Binance kline files or a long parquet/CSV)")
        return read_path(path, **read_kwargs), None
    if source == "binance":
        from market_regimes.data.binance import load_binance

        symbols = _list(cfg.get("symbols"))
        if not symbols:
            raise ConfigError("data=binance needs data.symbols=[BTCUSDT,...]")
        read_kwargs.pop("interval")
        long = load_binance(symbols, interval, cfg.get("start"), cfg.get("end"), cache_dir=cfg.get("cache_dir"),
                            base_url=cfg.get("base_url"), timeout_s=float(_get(cfg, "timeout_s", 10.0)), **read_kwargs)
        return long, None
    raise ConfigError(f"unknown data.source={source!r}; use synthetic, synthetic_groups, files or binance")


def load_market(cfg: Mapping) -> MarketData:
    """Load the configured source into an aligned panel (symbols, interval, start/end applied)."""
    long, truth = load_long(cfg)
    interval = _get(cfg, "interval", "1h")
    symbols = _list(cfg.get("symbols"))
    panel = to_panel(long, interval, symbols=symbols, start=cfg.get("start"), end=cfg.get("end"))
    if truth is not None:
        truth = truth.reindex(panel.index)
    sentiment = None
    if cfg.get("fear_greed_path"):
        from market_regimes.data.sentiment import align_causal, load_fear_greed

        sentiment = align_causal(load_fear_greed(cfg["fear_greed_path"]), panel.index)
    description = {
        "source": cfg.get("source"), "path": str(cfg.get("path")) if cfg.get("path") else None,
        "scenario": cfg.get("scenario") if cfg.get("source") == "synthetic" else None,
        "symbols": panel.symbols, "interval": interval,
        "start": str(panel.index[0]), "end": str(panel.index[-1]), "n_bars": len(panel.index),
        "fingerprint": fingerprint(panel),
    }
    return MarketData(panel, truth, sentiment, description)
