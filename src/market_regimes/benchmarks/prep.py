"""Benchmark stages for data -> features -> windows, and the comparison with the pandas reference.

Each ``*_stage`` function runs in its own process (see :mod:`market_regimes.benchmarks.measure`)
and returns a JSON-able dict. Panels travel between stages as ``.npz`` files.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from market_regimes.benchmarks.measure import mark
from market_regimes.data import load_market
from market_regimes.data.panel import FIELDS, Panel
from market_regimes.features import FeatureConfig, build_features
from market_regimes.windows import WindowConfig, build_windows


def save_panel(panel: Panel, path: str) -> None:
    np.savez(path, index=panel.index.asi8, symbols=np.array(panel.symbols), interval=np.array(panel.interval),
             **{f: panel.field(f).to_numpy() for f in FIELDS})


def load_panel(path: str) -> Panel:
    with np.load(path) as z:
        index = pd.DatetimeIndex(pd.to_datetime(z["index"], utc=True), name="timestamp")
        columns = pd.Index([str(s) for s in z["symbols"]], name="symbol")
        fields = {f: pd.DataFrame(z[f], index=index, columns=columns) for f in FIELDS}
        return Panel(**fields, interval=str(z["interval"]))


def load_stage(data: dict, panel_path: str) -> dict:
    """Read the configured source into a panel (``load_market``) and save it for later stages."""
    t0 = time.perf_counter()
    market = load_market(data)
    load_s = time.perf_counter() - t0
    save_panel(market.panel, panel_path)
    p = market.panel
    return {"load_s": load_s, "n_assets": len(p.symbols), "n_bars": len(p.index),
            "asset_bars": int(p.present.to_numpy().sum()), "panel_mb": 5 * p.close.to_numpy().nbytes / 2**20}


def features_windows_stage(panel_path: str, features: dict, window: dict) -> dict:
    """The project's path from a loaded panel: ``build_features`` then ``build_windows``."""
    panel = load_panel(panel_path)
    mark("inputs")
    t0 = time.perf_counter()
    fs = build_features(panel, FeatureConfig.from_dict(features))
    t1 = time.perf_counter()
    ws, _ = build_windows(fs, WindowConfig.from_dict(window))
    t2 = time.perf_counter()
    return {"features_s": t1 - t0, "windows_s": t2 - t1, "features_windows_s": t2 - t0,
            "features_mb": fs.values.nbytes / 2**20, "scaled_panel_mb": ws.X.nbytes / 2**20,
            "n_features": len(fs.names), "n_inputs": len(ws.names), "n_windows": int(ws.ends.sum())}


def prepare_stage(data: dict, features: dict, window: dict) -> dict:
    """What ``scripts/prepare_data.py`` does, in one process: load, features, windows."""
    t0 = time.perf_counter()
    market = load_market(data)
    mark("loaded")
    t1 = time.perf_counter()
    fs = build_features(market.panel, FeatureConfig.from_dict(features), market.sentiment)
    t2 = time.perf_counter()
    ws, _ = build_windows(fs, WindowConfig.from_dict(window))
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "features_s": t2 - t1, "windows_s": t3 - t2, "total_s": t3 - t0,
            "scaled_panel_mb": ws.X.nbytes / 2**20}


def reference_stage(panel_path: str, features: dict, window: dict, slice_bars: int | None = None) -> dict:
    """Project path and pandas reference on the last ``slice_bars`` bars (None: all of them):
    times and differences. The reference's windows are checked against the project's chunk by
    chunk and dropped; the checking is not counted in the reference's time."""
    from market_regimes.benchmarks.reference import iter_reference_windows, reference_features, reference_names

    full = load_panel(panel_path)
    panel = full if slice_bars is None else full.select(start=full.index[-min(int(slice_bars), len(full.index))])
    whole = len(panel.index) == len(full.index)
    del full
    fcfg = FeatureConfig.from_dict(features)
    wcfg = WindowConfig.from_dict({**window, "train_end": None})
    project = lambda: build_windows(build_features(panel, fcfg), wcfg)  # noqa: E731
    project()  # warm-up: first calls pay for lazy imports
    t0 = time.perf_counter()
    ws, scaler = project()
    project_s = time.perf_counter() - t0
    fs = build_features(panel, fcfg)

    warm = panel.select(end=panel.index[min(len(panel.index), 3 * fcfg.effective_warmup()) - 1])
    reference_features(warm, fcfg)
    timings: dict = {}
    t0 = time.perf_counter()
    ref_feats, ref_valid = reference_features(panel, fcfg, timings)
    t1 = time.perf_counter()
    check, check_s = WindowCheck(ws), 0.0
    for keys, windows in iter_reference_windows(ref_feats, ref_valid, wcfg.length, ws.train_end,
                                                wcfg.exclude_features, wcfg.clip):
        c0 = time.perf_counter()
        check.add(keys, windows)
        check_s += time.perf_counter() - c0
    t2 = time.perf_counter()
    names = reference_names(ref_feats, wcfg.exclude_features)
    return {
        "slice_bars": len(panel.index), "whole_panel": whole,
        "asset_bars": int(panel.present.to_numpy().sum()),
        "project_s": project_s, "reference_features_s": t1 - t0, "reference_windows_s": t2 - t1 - check_s,
        "reference_s": t2 - t0 - check_s, "reference_corr_loop_s": timings.get("corr_loop_s", 0.0),
        "check_s": check_s, "n_windows": check.n,
        **_differences(fs, ws, ref_feats, ref_valid, check, names),
    }


def compare_features(fs, ref_feats, ref_valid) -> dict:
    """Differences between the project's features and validity and the reference's (0 = identical)."""
    valid = ref_valid.to_numpy().T  # (A, T)
    both = valid & fs.valid
    feat_rel = 0.0
    for j, name in enumerate(fs.names):
        if name not in ref_feats:
            continue
        ref = ref_feats[name].to_numpy(dtype=np.float64).T[both]
        got = fs.values[:, :, j][both].astype(np.float64)
        if len(ref):
            feat_rel = max(feat_rel, float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref)))))
    return {"same_feature_names": list(ref_feats) == fs.names, "valid_mismatches": int((valid != fs.valid).sum()),
            "feature_max_rel_diff": feat_rel}


class WindowCheck:
    """The reference's windows checked against the project's ``WindowSet``, a chunk at a time."""

    def __init__(self, ws):
        self.sym = {s: i for i, s in enumerate(ws.symbols)}
        self.ws, self.codes, self.max_abs, self.n = ws, [], 0.0, 0

    def add(self, keys, windows) -> None:
        a = np.array([self.sym[s] for s, _ in keys], dtype=np.int64)
        t = self.ws.index.get_indexer([ts for _, ts in keys])
        self.codes.append(a * len(self.ws.index) + t)
        self.max_abs = max(self.max_abs, float(np.max(np.abs(self.ws.gather(a, t) - windows))))
        self.n += len(keys)

    def result(self, ws, names) -> dict:
        proj_a, proj_t = ws.keys()
        got = np.sort(np.concatenate(self.codes)) if self.codes else np.zeros(0, dtype=np.int64)
        same_keys = len(got) == len(proj_a) and bool(np.array_equal(got, np.sort(proj_a * len(ws.index) + proj_t)))
        return {"same_input_names": names == ws.names, "same_window_keys": same_keys,
                "window_max_abs_diff": self.max_abs}


def compare(fs, ws, ref_feats, ref_valid, keys, ref_windows, names) -> dict:
    """Differences between the project's features/windows and the reference's (0 = identical)."""
    check = WindowCheck(ws)
    if len(keys):
        check.add(keys, ref_windows)
    return _differences(fs, ws, ref_feats, ref_valid, check, names)


def _differences(fs, ws, ref_feats, ref_valid, check: WindowCheck, names) -> dict:
    out = {**compare_features(fs, ref_feats, ref_valid), **check.result(ws, names)}
    return {**out, "same_names": out["same_feature_names"] and out["same_input_names"]}
