"""Scale stages: a synthetic market of many assets and years through the whole path.

data (``simulate_market`` -> panel) -> features -> windows -> one training epoch of
``windows_per_epoch`` windows -> encoding of every valid window -> clustering. Each stage runs
in its own process and hands its output to the next through ``.npy`` files in ``work_dir``, so
its peak memory is its own plus its inputs (``rss_inputs_mb``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from market_regimes.benchmarks.measure import mark, rss_mb
from market_regimes.benchmarks.prep import load_panel, save_panel
from market_regimes.features import FeatureConfig, FeatureSet, build_features
from market_regimes.windows import WindowConfig, WindowSet, build_windows


def _save(work: Path, **arrays) -> None:
    for name, a in arrays.items():
        np.save(work / f"{name}.npy", a)


def _load(work: Path, name: str) -> np.ndarray:
    return np.load(work / f"{name}.npy")


def _meta(work: Path, **values) -> dict:
    path = work / "meta.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    meta.update(values)
    path.write_text(json.dumps(meta))
    return meta


def data_stage(work_dir: str, n_assets: int, n_bars: int, seed: int = 0, scenario: str = "volatility") -> dict:
    """``simulate_market`` (the long table) then ``to_panel``, as ``load_market`` does for data=synthetic."""
    from market_regimes.data import load_long, to_panel

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    long, _ = load_long({"source": "synthetic", "n_assets": n_assets, "n_bars": n_bars, "seed": seed,
                         "scenario": scenario})
    t1 = time.perf_counter()
    panel = to_panel(long, "1h")
    t2 = time.perf_counter()
    del long
    save_panel(panel, str(work / "panel.npz"))
    return {"simulate_s": t1 - t0, "panel_s": t2 - t1, "wall_s": t2 - t0,
            "asset_bars": n_assets * n_bars, "panel_mb": 5 * panel.close.to_numpy().nbytes / 2**20}


def features_stage(work_dir: str, features: dict) -> dict:
    work = Path(work_dir)
    panel = load_panel(str(work / "panel.npz"))
    mark("inputs")
    t0 = time.perf_counter()
    fs = build_features(panel, FeatureConfig.from_dict(features))
    wall = time.perf_counter() - t0
    _save(work, values=fs.values, valid=fs.valid, index=fs.index.asi8)
    _meta(work, symbols=fs.symbols, names=fs.names)
    return {"wall_s": wall, "features_mb": fs.values.nbytes / 2**20}


def windows_stage(work_dir: str, window: dict) -> dict:
    work = Path(work_dir)
    meta = _meta(work)
    index = pd.DatetimeIndex(pd.to_datetime(_load(work, "index"), utc=True))
    fs = FeatureSet(_load(work, "values"), _load(work, "valid"), index, meta["symbols"], meta["names"])
    mark("inputs")
    t0 = time.perf_counter()
    ws, scaler = build_windows(fs, WindowConfig.from_dict(window))
    wall = time.perf_counter() - t0
    order = fs.names.index(next(n for n in fs.names if n.startswith("log_rv_")))
    _save(work, X=ws.X, ends=ws.ends, order_key=fs.values[:, :, order])
    _meta(work, inputs=ws.names, length=ws.length, stride=ws.stride, train_end=str(ws.train_end))
    return {"wall_s": wall, "scaled_panel_mb": ws.X.nbytes / 2**20, "n_windows": int(ws.ends.sum())}


def _window_set(work: Path) -> WindowSet:
    meta = _meta(work)
    index = pd.DatetimeIndex(pd.to_datetime(_load(work, "index"), utc=True))
    return WindowSet(_load(work, "X"), _load(work, "ends"), index, meta["symbols"], meta["inputs"], meta["length"],
                     pd.Timestamp(meta["train_end"]), meta["stride"])


def train_stage(work_dir: str, model: dict, trainer: dict, batch_size: int, windows_per_epoch: int,
                val_fraction: float = 0.15, seed: int = 0) -> dict:
    """One epoch of ``windows_per_epoch`` random training windows, then validation on as many
    validation windows (the train job validates on all of them; see ``n_val_windows``)."""
    import lightning as L
    from safetensors.torch import save_file

    from market_regimes.benchmarks.throughput import LEAN_TRAINER, _model_args
    from market_regimes.datamodule import WindowDataModule, time_split
    from market_regimes.model import RegimeAutoencoder

    work = Path(work_dir)
    ws = _window_set(work)
    mark("inputs")
    t0 = time.perf_counter()
    fit_keys, val_keys = time_split(ws, val_fraction)
    margs, dargs = _model_args(model)
    L.seed_everything(seed, verbose=False)
    net = RegimeAutoencoder(n_features=len(ws.names), window=ws.length, **margs)
    dm = WindowDataModule(ws, fit_keys, val_keys, batch_size=batch_size, seed=seed,
                          windows_per_epoch=windows_per_epoch, **dargs)

    class EpochTimer(L.Callback):
        """Seconds in the training batches of the epoch and in its validation loop."""

        train_s = val_s = 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self.t = time.perf_counter()

        def on_validation_start(self, trainer, pl_module):
            self.train_s += time.perf_counter() - self.t
            self.t = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            self.val_s += time.perf_counter() - self.t

    timer = EpochTimer()
    n_val = len(val_keys[1])
    val_batches = min(-(-windows_per_epoch // batch_size), max(-(-n_val // batch_size), 1))
    tr = L.Trainer(**{**trainer, **LEAN_TRAINER, "max_epochs": 1, "limit_val_batches": val_batches,
                      "callbacks": [timer]})
    tr.fit(net, datamodule=dm)
    wall = time.perf_counter() - t0
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(work / "model.safetensors"))
    _meta(work, model=margs)
    val_windows = min(val_batches * batch_size, n_val)
    return {"wall_s": wall, "setup_s": wall - timer.train_s - timer.val_s, "train_epoch_s": timer.train_s,
            "val_s": timer.val_s, "train_windows": windows_per_epoch, "val_windows": val_windows,
            "n_fit_windows": len(fit_keys[1]), "n_val_windows": n_val,
            "val_all_estimate_s": timer.val_s * n_val / max(val_windows, 1)}


def encode_stage(work_dir: str, batch_size: int = 2048) -> dict:
    """``training.encode_windows``: the latent of every valid window, batch by batch."""
    from safetensors.torch import load_file

    from market_regimes.model import RegimeAutoencoder
    from market_regimes.training import encode_windows

    work = Path(work_dir)
    ws = _window_set(work)
    net = RegimeAutoencoder(n_features=len(ws.names), window=ws.length, **_meta(work)["model"])
    net.load_state_dict(load_file(str(work / "model.safetensors")))
    mark("inputs")
    t0 = time.perf_counter()
    lat = encode_windows(net, ws, "asset", batch_size=batch_size)
    wall = time.perf_counter() - t0
    _save(work, z=lat.z, asset_idx=lat.asset_idx, end_idx=lat.end_idx, lengths=lat.lengths)
    return {"wall_s": wall, "n_windows": len(lat.z), "windows_per_s": len(lat.z) / wall}


def cluster_stage(work_dir: str, cluster: dict, fit_rows: int, seed: int = 0) -> dict:
    """Fit the configured clusterer (K chosen as configured) on whole training sequences of a
    random subset of assets holding about ``fit_rows`` rows, then label every window causally."""
    from market_regimes.training import Latents, fit_regimes

    work = Path(work_dir)
    meta = _meta(work)
    lat = Latents(_load(work, "z"), _load(work, "asset_idx"), _load(work, "end_idx"), _load(work, "lengths"))
    key = _load(work, "order_key")[lat.asset_idx, lat.end_idx].astype(np.float64)
    index = pd.DatetimeIndex(pd.to_datetime(_load(work, "index"), utc=True))
    mark("inputs")
    t0 = time.perf_counter()
    in_train = np.asarray(index[lat.end_idx] <= pd.Timestamp(meta["train_end"]))
    per_asset = np.bincount(lat.asset_idx[in_train], minlength=len(meta["symbols"]))
    order = np.random.default_rng(seed).permutation(len(per_asset))
    chosen = order[: int(np.searchsorted(np.cumsum(per_asset[order]), fit_rows)) + 1]
    fit = in_train & np.isin(lat.asset_idx, chosen)
    clusterer, _ = fit_regimes(lat.select(fit), key[fit], cluster, seed)
    t1 = time.perf_counter()
    labels = clusterer.predict_online(lat.z, lat.lengths)
    t2 = time.perf_counter()
    return {"wall_s": t2 - t0, "fit_s": t1 - t0, "predict_s": t2 - t1, "fit_rows": int(fit.sum()),
            "fit_assets": len(chosen), "train_rows": int(in_train.sum()), "n_labelled": len(labels),
            "n_regimes": int(clusterer.n_regimes)}


def heap_probe_stage(n_assets: int, n_bars: int, window: dict, features: dict, model: dict) -> dict:
    """Resident memory added by ``training.encode_windows`` over a synthetic market, per window
    encoded (its output is a few hundred bytes per window; the rest is heap the allocator kept)."""
    from market_regimes.benchmarks.throughput import _model_args
    from market_regimes.data import load_market
    from market_regimes.model import RegimeAutoencoder
    from market_regimes.training import encode_windows

    market = load_market({"source": "synthetic", "n_assets": n_assets, "n_bars": n_bars})
    ws, _ = build_windows(build_features(market.panel, FeatureConfig.from_dict(features)), WindowConfig.from_dict(window))
    net = RegimeAutoencoder(n_features=len(ws.names), window=ws.length, **_model_args(model)[0])
    before = rss_mb()
    lat = encode_windows(net, ws, "asset")
    grown = rss_mb() - before
    return {"n_windows": len(lat.z), "rss_growth_mb": grown, "per_window_kb": 1024 * grown / len(lat.z),
            "output_per_window_kb": (lat.z.nbytes + lat.asset_idx.nbytes + lat.end_idx.nbytes) / len(lat.z) / 1024}
