"""The training job: windows -> autoencoder -> latents -> regimes -> statistics -> bundle.

``run_training(cfg)`` is what ``scripts/train.py`` calls. Every stateful step is fitted on the
training period only (scaler, autoencoder, clusterer, model selection, in-sample statistics);
labels for every bar come from the clusterer's causal ``predict_online`` filter, so the label of
bar t depends on windows ending at or before t only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score, normalized_mutual_info_score

from market_regimes.drift import draw_sample
from market_regimes.datamodule import WindowDataModule, time_split
from market_regimes.model import RegimeAutoencoder, encode
from market_regimes.pipeline import prepare
from market_regimes.regimes import canonical_order, make_clusterer, select_n_regimes, sequence_lengths
from market_regimes.stats import summarize_regimes
from market_regimes.windows import WindowSet

log = logging.getLogger(__name__)

ORDER_FEATURE_PREFIX = "log_rv_"  # regimes are ordered by realised volatility: 0 = calmest


@dataclass
class Latents:
    """Latent vector of every valid window, ordered by asset then time.

    z: (N, D); asset_idx/end_idx: (N,) window keys; lengths: sizes of the runs of consecutive
    windows (sequences for the clusterer, split at gaps and between assets).
    """

    z: np.ndarray
    asset_idx: np.ndarray
    end_idx: np.ndarray
    lengths: np.ndarray

    def select(self, mask: np.ndarray) -> "Latents":
        a, t = self.asset_idx[mask], self.end_idx[mask]
        return Latents(self.z[mask], a, t, sequence_lengths(a, t))


def model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def latent_dim(model: torch.nn.Module) -> int:
    return int(getattr(model, "latent_dim", None) or model.hparams["latent_dim"])


def encode_windows(model: torch.nn.Module, windows: WindowSet, mode: str = "asset",
                   batch_size: int = 2048) -> Latents:
    """Encode every valid window (market mode: one per end bar, repeated for each asset).

    The latents are written into one array allocated up front. Collecting per-batch outputs
    instead leaves small live blocks between the freed batch buffers, and glibc's heap then keeps
    ~1.3 KB per window it can neither reuse nor return: encoding 441,760 windows grew the
    resident memory by 634 MB that way, by 150 MB (61 MB of it the latents) this way, a growth
    that no longer doubles with the windows.
    """
    model.eval()
    device = model_device(model)
    dim = latent_dim(model)
    if mode == "asset":
        a, t = windows.keys()
        order = np.lexsort((t, a))
        a, t = a[order], t[order]
        z = np.empty((len(t), dim), dtype=np.float64)
        with torch.no_grad():
            for i in range(0, len(t), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(windows.gather(a[i : i + batch_size], t[i : i + batch_size])))
                z[i : i + len(x)] = encode(model, x.to(device)).cpu().numpy()
    else:
        t_m = windows.market_keys()
        z_m = np.empty((len(t_m), dim), dtype=np.float64)
        with torch.no_grad():
            for i in range(0, len(t_m), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(windows.gather_market(t_m[i : i + batch_size])))
                z_m[i : i + len(x)] = encode(model, x.to(device)).cpu().numpy()
        n_a = len(windows.symbols)
        a = np.repeat(np.arange(n_a), len(t_m))
        t = np.tile(t_m, n_a)
        z = np.tile(z_m, (n_a, 1))
    return Latents(z, a, t, sequence_lengths(a, t))


def order_key(features, latents: Latents) -> np.ndarray:
    """Unscaled short-horizon realised volatility at each window's end bar (causal)."""
    names = features.names
    vol_names = [n for n in names if n.startswith(ORDER_FEATURE_PREFIX)]
    j = names.index(vol_names[0])
    return features.values[latents.asset_idx, latents.end_idx, j].astype(np.float64)


def label_frame(index: pd.DatetimeIndex, symbols: list[str], latents: Latents, labels: np.ndarray) -> pd.DataFrame:
    """(T, A) int frame of regime labels, -1 where a bar has no valid window."""
    out = np.full((len(index), len(symbols)), -1, dtype=np.int64)
    out[latents.end_idx, latents.asset_idx] = labels
    return pd.DataFrame(out, index=index, columns=pd.Index(symbols, name="symbol"))


def truth_agreement(truth: pd.Series, labels: pd.DataFrame, mask: np.ndarray | None = None) -> dict:
    """ARI, NMI and balanced accuracy (after Hungarian matching) of labels vs the true regimes."""
    from market_regimes.regimes import align_to_reference

    lab = labels.to_numpy()
    tru = np.broadcast_to(truth.to_numpy()[:, None], lab.shape)
    ok = (lab >= 0) & np.isfinite(tru)
    if mask is not None:
        ok &= mask[:, None]
    y, p = tru[ok].astype(np.int64), lab[ok]
    if len(y) == 0:
        return {"n": 0}
    k = int(max(y.max(), p.max()) + 1)
    perm = align_to_reference(y, p, k)
    return {"n": int(len(y)), "ari": float(adjusted_rand_score(y, p)), "nmi": float(normalized_mutual_info_score(y, p)),
            "balanced_accuracy": float(balanced_accuracy_score(y, perm[p])),
            "n_true_regimes": int(len(np.unique(y))), "n_found_regimes": int(len(np.unique(p)))}


def fit_regimes(latents: Latents, key: np.ndarray, cfg, seed: int):
    """Fit the configured clusterer on training latents, choosing K unless fixed; canonical order."""
    ccfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    params = dict(ccfg.get("params") or {})
    name = ccfg["name"]
    selection = None
    k = ccfg.get("n_regimes", "auto")
    if k in (None, "auto"):
        lo, hi = ccfg.get("k_range", [2, 6])
        selection = select_n_regimes(
            latents.z, latents.lengths, lambda n: make_clusterer(name, n, random_state=seed, **params),
            k_range=(int(lo), int(hi)), criterion=ccfg.get("selection", "stability"), random_state=seed,
        )
        k = selection.best_k
    clusterer = make_clusterer(name, int(k), random_state=seed, **params).fit(latents.z, latents.lengths)
    raw = clusterer.predict_online(latents.z, latents.lengths)
    clusterer.permute_(canonical_order(raw, key, int(k)))
    return clusterer, selection


def build_trainer(cfg, run_dir: Path, callbacks=None, loggers: bool = True) -> L.Trainer:
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if not loggers:
        tcfg["enable_checkpointing"] = False
    loggers, logger_cfgs = [], (cfg.get("logger") or {}) if loggers else {}
    for lcfg in logger_cfgs.values():
        if lcfg and "_target_" in lcfg:
            loggers.append(instantiate(lcfg))
    return L.Trainer(**tcfg, logger=loggers or False, callbacks=callbacks or [], default_root_dir=str(run_dir))


@dataclass
class Fitted:
    """One fitted stack: scaler, encoder (trained or feature-only), clusterer, and what it saw.

    ``labels`` are the causal labels of every row of ``latents`` (all valid windows of
    ``windows``); ``val_keys`` the keys held out for the autoencoder's validation loss.
    """

    model: torch.nn.Module
    scaler: object
    clusterer: object
    selection: object
    windows: WindowSet
    latents: Latents
    labels: np.ndarray
    trainer: L.Trainer | None
    val_keys: object
    train_seconds: float
    cluster_seconds: float


def feature_columns(names: list[str], patterns, n_assets: int = 1, symbols: list[str] | None = None) -> list[int]:
    """Indices of the model inputs matching ``patterns`` (all when None), tiled over assets in market mode.

    In market mode (``symbols``: the A assets of the flattened ``A*F`` axis) a pattern
    ``SYMBOL:pattern`` picks that one asset's columns, e.g. ``BTCUSDT:log_rv_168``. A market-wide
    feature has the same value for every asset, so ``BTCUSDT:breadth_up_24`` is its single copy
    (a plain ``breadth_up_24`` takes A identical copies). Such a pattern must match something.
    """
    from fnmatch import fnmatch

    from market_regimes.errors import ConfigError

    if not patterns:
        return list(range(n_assets * len(names)))
    picked: set[int] = set()
    for pattern in (str(p) for p in patterns):
        symbol, colon, feature = pattern.rpartition(":")
        if not colon:
            picked.update(a * len(names) + i for a in range(n_assets) for i, n in enumerate(names)
                          if fnmatch(n, pattern))
            continue
        if symbols is None:
            raise ConfigError(f"model.columns: {pattern!r} names an asset, which needs window.mode=market; "
                              "per-asset windows hold one asset's features, so drop the 'SYMBOL:' prefix")
        if symbol not in symbols:
            raise ConfigError(f"model.columns: {pattern!r} names {symbol}, not among the symbols {list(symbols)}")
        idx = [i for i, n in enumerate(names) if fnmatch(n, feature)]
        if not idx:
            raise ConfigError(f"model.columns: {pattern!r} matches none of the model inputs {names}")
        picked.update(symbols.index(symbol) * len(names) + i for i in idx)
    if not picked:
        raise ConfigError(f"model.columns={list(patterns)} matches none of the model inputs {names}")
    return sorted(picked)


def fit_stack(cfg, features, windows: WindowSet, scaler, run_dir: Path, callbacks=None, resume=None,
              loggers: bool = True) -> Fitted | None:
    """Train the encoder on the training windows (or build the feature-only embedding), encode every
    window, fit the clusterer on the training latents and label every window causally.
    Returns None on non-zero DDP ranks."""
    from market_regimes.model.networks import FeatureEmbedding

    seed = int(cfg.seed)
    mode = cfg.window.mode
    fit_keys, val_keys = time_split(windows, float(cfg.train.val_fraction), mode)
    mcfg = OmegaConf.to_container(cfg.model, resolve=True)
    n_assets = len(windows.symbols) if mode == "market" else 1
    n_features = len(windows.names) * n_assets
    trainer, train_s = None, 0.0
    if mcfg["encoder"] == "features":
        model = FeatureEmbedding(n_features, windows.length, columns=feature_columns(windows.names, mcfg.get("columns"), n_assets,
                                                                 windows.symbols if mode == "market" else None),
                                 pool=mcfg.get("pool", "last"))
    else:
        positive_offset = int(mcfg.pop("positive_offset", 0)) if mcfg.get("w_temporal", 0) > 0 else 0
        mcfg.pop("positive_offset", None)
        positive = mcfg.pop("positive", "cross_asset")
        positive_min_offset = mcfg.pop("positive_min_offset", None)
        model = RegimeAutoencoder(n_features=n_features, window=windows.length, **mcfg)
        dm = WindowDataModule(windows, fit_keys, val_keys, mode=mode, batch_size=int(cfg.train.batch_size),
                              num_workers=int(cfg.train.num_workers), seed=seed, positive_offset=positive_offset,
                              windows_per_epoch=cfg.train.get("windows_per_epoch"), positive=positive,
                              positive_min_offset=positive_min_offset,
                              pin_memory=cfg.trainer.get("accelerator") not in ("cpu", None))
        trainer = build_trainer(cfg, run_dir, callbacks, loggers=loggers)
        log.info("training %s encoder on %d windows (%d for validation)", mcfg["encoder"],
                 len(np.atleast_1d(fit_keys[1] if mode == "asset" else fit_keys)),
                 len(np.atleast_1d(val_keys[1] if mode == "asset" else val_keys)))
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm, ckpt_path=resume or None)
        train_s = time.perf_counter() - t0
        if trainer.global_rank != 0:
            return None
        model = model.cpu()

    t0 = time.perf_counter()
    latents = encode_windows(model, windows, mode)
    key = order_key(features, latents)
    in_train = windows.index[latents.end_idx] <= windows.train_end
    if mode == "market":  # one market sequence, repeated per asset: fit on a single copy
        in_train &= latents.asset_idx == 0
    clusterer, selection = fit_regimes(latents.select(in_train), key[in_train], cfg.cluster, seed)
    labels = np.asarray(clusterer.predict_online(latents.z, latents.lengths))
    return Fitted(model, scaler, clusterer, selection, windows, latents, labels, trainer, val_keys, train_s,
                  time.perf_counter() - t0)


@dataclass
class TrainResult:
    bundle_path: Path | None
    metrics: dict
    run_dir: Path


def run_training(cfg) -> TrainResult:
    """Train end to end and write the bundle; returns its path and the metrics."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from market_regimes.bundle import save_bundle
    from market_regimes.plots import save_training_plots

    t_start = time.perf_counter()
    seed = int(cfg.seed)
    L.seed_everything(seed, workers=True, verbose=False)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg)
    windows, mode = prep.windows, cfg.window.mode
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0)
    fitted = fit_stack(cfg, prep.features, windows, prep.scaler, run_dir, [ckpt], resume=cfg.train.get("resume"))
    if fitted is None:
        return TrainResult(None, {}, run_dir)
    model, clusterer, selection, latents, labels = (fitted.model, fitted.clusterer, fitted.selection,
                                                    fitted.latents, fitted.labels)
    trainer, val_keys = fitted.trainer, fitted.val_keys
    K = int(clusterer.n_regimes)
    frame = label_frame(windows.index, windows.symbols, latents, labels)
    in_train_latent = windows.index[latents.end_idx] <= windows.train_end
    reference = draw_sample(model, windows, latents, labels, in_train_latent, K, mode, seed=seed)

    close, interval = prep.market.panel.close, prep.market.panel.interval
    horizons = tuple(int(h) for h in cfg.stats.horizons)
    train_rows = np.asarray(windows.index <= windows.train_end)
    in_train_rows = np.broadcast_to(train_rows[:, None], frame.shape)
    # in-sample statistics see prices up to train_end only: forward targets crossing it are NaN
    stats = {
        "in_sample": summarize_regimes(close.where(in_train_rows), frame.where(in_train_rows, -1), K, interval,
                                       horizons, in_sample=True),
        "out_of_sample": (summarize_regimes(close, frame.where(~in_train_rows, -1), K, interval, horizons,
                                            in_sample=False) if (frame.to_numpy()[~train_rows] >= 0).any() else None),
    }
    metrics = {
        "n_regimes": K,
        "train_seconds": round(fitted.train_seconds, 2),
        "cluster_seconds": round(fitted.cluster_seconds, 2),
        "epochs": int(trainer.current_epoch) if trainer is not None else 0,
        "val_loss": _metric(trainer, "val_loss"),
        "train_loss": _metric(trainer, "train/loss"),
        "model_selection": selection.table.reset_index().to_dict(orient="records") if selection is not None else None,
        "selection_criterion": selection.criterion if selection is not None else "fixed",
        "entropy_rate_nats_in_sample": stats["in_sample"]["entropy_rate_nats"]["pooled"],
        "timings_s": {k: round(v, 3) for k, v in prep.timings.items()},
    }
    truth = prep.market.truth
    if truth is not None:
        val_ends = val_keys[1] if mode == "asset" else val_keys
        val_rows = np.zeros(len(windows.index), dtype=bool)
        if len(val_ends):
            val_rows[int(np.min(val_ends)) :] = True
        val_rows &= train_rows
        metrics["truth"] = {
            "all": truth_agreement(truth, frame),
            "train": truth_agreement(truth, frame, train_rows),
            "validation": truth_agreement(truth, frame, val_rows),  # inside the training period
            "test": truth_agreement(truth, frame, ~train_rows),
        }
    plot_files = save_training_plots(run_dir, prep, frame, latents, labels, selection, stats, K) if cfg.get("plots", True) else []
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 2)
    manifest = {
        "symbols": windows.symbols, "interval": interval, "mode": mode, "window_length": windows.length,
        "stride": int(cfg.window.stride), "features": windows.names, "n_regimes": K,
        "regime_names": stats["in_sample"].get("regime_names"),
        "train_start": str(windows.index[0]), "train_end": str(windows.train_end),
        "data_end": str(windows.index[-1]), "data": prep.market.source,
    }
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    bundle_path = save_bundle(cfg.paths.artifacts_dir, model=model, scaler=prep.scaler, clusterer=clusterer,
                              config=plain_cfg, manifest=manifest, metrics=metrics, regime_stats=stats,
                              name=cfg.bundle.get("name"), update_latest=bool(cfg.bundle.update_latest),
                              reference=reference.to_arrays())
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    frame.to_csv(run_dir / "regimes.csv") if len(frame) * len(frame.columns) < 5_000_000 else None
    if trainer is not None:
        _log_to_loggers(trainer, metrics, plot_files)
    return TrainResult(bundle_path, metrics, run_dir)


def _metric(trainer: L.Trainer | None, name: str) -> float | None:
    value = None if trainer is None else trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def _log_to_loggers(trainer: L.Trainer, metrics: dict, plot_files: list[Path]) -> None:
    flat = {f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    for name, part in (metrics.get("truth") or {}).items():
        flat.update({f"truth/{name}_{k}": v for k, v in part.items() if isinstance(v, float)})
    for lg in trainer.loggers:
        lg.log_metrics(flat)
        if hasattr(lg, "log_image") and plot_files:
            for p in plot_files:
                lg.log_image(key=f"plots/{p.stem}", images=[str(p)])
        lg.save()


def objective_value(result: TrainResult, name: str) -> float | None:
    """The number a sweeper optimises (lower is better): val_loss, -ARI vs truth on the validation
    part of the training period (never the test period, which stays held out), or entropy rate."""
    m = result.metrics
    if name == "val_loss":
        return m.get("val_loss")
    if name == "ari":
        ari = (m.get("truth") or {}).get("validation", {}).get("ari")
        return None if ari is None else -ari
    if name == "neg_entropy_rate":
        return m.get("entropy_rate_nats_in_sample")
    raise ValueError(f"unknown objective {name!r}")


def print_summary(result: TrainResult) -> None:
    m = result.metrics
    if not m:
        return
    print(f"regimes: {m['n_regimes']} (selection: {m['selection_criterion']}); "
          f"train {m['train_seconds']} s over {m['epochs']} epochs, val_loss {m['val_loss']}")
    for part, t in (m.get("truth") or {}).items():
        if t.get("n"):
            print(f"agreement with planted regimes [{part}]: ARI {t['ari']:.3f}, NMI {t['nmi']:.3f}, "
                  f"balanced accuracy {t['balanced_accuracy']:.3f} ({t['n_found_regimes']} found / "
                  f"{t['n_true_regimes']} true)")
    print(f"bundle: {result.bundle_path}")
    print(f"run directory (plots, metrics, regimes.csv): {result.run_dir}")
    print(f"total {m['total_seconds']} s")
