"""Compose the stages: config -> data -> features -> scaled windows (training comes on top)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from market_regimes.data import MarketData, load_market
from market_regimes.features import FeatureConfig, FeatureSet, build_features
from market_regimes.serialize import json_default
from market_regimes.windows import GlobalScaler, WindowConfig, WindowSet, build_windows

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    market: MarketData
    features: FeatureSet
    windows: WindowSet
    scaler: GlobalScaler
    timings: dict


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def load_features(cfg, timings: dict | None = None) -> tuple[MarketData, FeatureSet]:
    """Data -> causal features for a composed config (``data``, ``features``)."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    market = load_market(_plain(cfg.data))
    timings["data_s"] = time.perf_counter() - t0
    log.info("data: %s, %d symbols x %d bars (%s .. %s)", market.source["source"], len(market.panel.symbols),
             len(market.panel.index), market.source["start"], market.source["end"])
    t0 = time.perf_counter()
    features = build_features(market.panel, FeatureConfig.from_dict(_plain(cfg.features)), market.sentiment)
    timings["features_s"] = time.perf_counter() - t0
    return market, features


def prepare(cfg) -> Prepared:
    """Run data -> features -> windows for a composed config (``data``, ``features``, ``window``)."""
    timings = {}
    market, features = load_features(cfg, timings)
    t0 = time.perf_counter()
    windows, scaler = build_windows(features, WindowConfig.from_dict(_plain(cfg.window)))
    timings["windows_s"] = time.perf_counter() - t0
    return Prepared(market, features, windows, scaler, timings)


def summarize(prep: Prepared) -> dict:
    """JSON-able description of what was built: shapes, validity, split sizes, timings."""
    w = prep.windows
    a_train, _ = w.keys(end=w.train_end)
    a_all, _ = w.keys()
    per_asset = {
        s: {"valid_feature_rows": int(prep.features.valid[i].sum()), "windows": int(w.ends[i].sum())}
        for i, s in enumerate(w.symbols)
    }
    return {
        "source": prep.market.source,
        "n_features": len(w.names),
        "features": w.names,
        "window_length": w.length,
        "train_end": str(w.train_end),
        "scaler": prep.scaler.to_state(),
        "windows_total": int(len(a_all)),
        "windows_train": int(len(a_train)),
        "market_windows_total": int(len(w.market_keys())),
        "per_asset": per_asset,
        "feature_panel_mb": round(w.X.nbytes / 2**20, 1),
        "timings_s": {k: round(v, 3) for k, v in prep.timings.items()},
        "has_truth": prep.market.truth is not None,
        "truth_occupancy": (
            {int(k): float(v) for k, v in prep.market.truth.value_counts(normalize=True).sort_index().items()}
            if prep.market.truth is not None else None
        ),
    }


def run_prepare(cfg) -> Path:
    """The ``prepare`` job: build everything, write ``summary.json`` to the run dir, return its path."""
    prep = prepare(cfg)
    summary = summarize(prep)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "summary.json"
    out.write_text(json.dumps(summary, indent=2, default=json_default))
    print(f"{len(summary['per_asset'])} assets, {summary['n_features']} features, "
          f"{summary['windows_total']} windows of {summary['window_length']} bars "
          f"({summary['windows_train']} in the training period up to {summary['train_end']}); "
          f"timings {summary['timings_s']}")
    return out
