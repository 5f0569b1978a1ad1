"""Training-loop throughput: the Lightning training step against a bare PyTorch loop.

Both loops train the same ``RegimeAutoencoder`` with the same optimizer (its
``configure_optimizers``), the same gradient clipping and determinism settings as the trainer
config, on the same pre-gathered batches (gathered in one vectorised call per batch by the
project's ``WindowDataset``, positives included), for the same number of steps; the first
``warmup`` steps are not timed. A third loop, ``datamodule``, is Lightning with the project's
``WindowDataModule`` gathering each batch as it trains, i.e. what ``scripts/train.py`` runs.

On a GPU (``device="cuda"``) the model runs in bf16 autocast (Lightning: ``precision=bf16-mixed``),
batches are in pinned memory and copied with ``non_blocking=True``, and the clock is read after
``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import numpy as np
import torch

from market_regimes.data import load_market
from market_regimes.features import FeatureConfig, build_features
from market_regimes.windows import WindowConfig, build_windows

LEAN_TRAINER = {"enable_progress_bar": False, "enable_checkpointing": False, "logger": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0, "limit_val_batches": 0}


def _identity(batch):
    return batch


def _model_args(model: dict) -> tuple[dict, dict]:
    """Model config -> (RegimeAutoencoder kwargs, dataset kwargs), split like the train job does."""
    mcfg = dict(model)
    data = {"positive_offset": int(mcfg.pop("positive_offset", 0) or 0) if mcfg.get("w_temporal", 0) > 0 else 0,
            "positive": mcfg.pop("positive", "cross_asset"), "positive_min_offset": mcfg.pop("positive_min_offset", None)}
    mcfg.pop("positive_offset", None)
    return mcfg, data


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_loop_stage(loop: str, device: str, data: dict, features: dict, window: dict, model: dict,
                     trainer: dict, batch_size: int, steps: int, warmup: int, seed: int = 0) -> dict:
    """Windows per second of one training loop (``bare``, ``lightning`` or ``datamodule``)."""
    from market_regimes.datamodule import WindowDataModule, WindowDataset, time_split
    from market_regimes.model import RegimeAutoencoder

    market = load_market(data)
    ws, _ = build_windows(build_features(market.panel, FeatureConfig.from_dict(features)), WindowConfig.from_dict(window))
    fit_keys, val_keys = time_split(ws, 0.15)
    margs, dargs = _model_args(model)
    dataset = WindowDataset(ws, fit_keys, positive_offset=dargs["positive_offset"], seed=seed,
                            positive=dargs["positive"], positive_min_offset=dargs["positive_min_offset"])
    rng = np.random.default_rng(seed)
    batches = [dataset.__getitems__(rng.choice(len(dataset), batch_size, replace=False)) for _ in range(steps)]
    if device == "cuda":
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    L.seed_everything(seed, verbose=False)
    net = RegimeAutoencoder(n_features=len(ws.names), window=ws.length, **margs)
    clip = trainer.get("gradient_clip_val")
    if loop == "bare":
        elapsed = _bare_loop(net, batches, device, warmup, clip, bool(trainer.get("deterministic", False)))
    else:
        timer = _StepTimer(warmup, steps, device)
        tr = L.Trainer(**{**trainer, **LEAN_TRAINER, "max_steps": steps, "max_epochs": -1, "callbacks": [timer],
                          "accelerator": "gpu" if device == "cuda" else "cpu"})
        if loop == "lightning":
            from torch.utils.data import DataLoader

            tr.fit(net, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=_identity,
                                                     pin_memory=device == "cuda"))
        else:
            dm = WindowDataModule(ws, fit_keys, val_keys, batch_size=batch_size, pin_memory=device == "cuda",
                                  seed=seed, windows_per_epoch=steps * batch_size, **dargs)
            tr.fit(net, datamodule=dm)
        elapsed = timer.t1 - timer.t0
    timed = steps - warmup
    return {"loop": loop, "device": device, "steps": timed, "batch_size": batch_size, "elapsed_s": elapsed,
            "windows_per_s": timed * batch_size / elapsed, "ms_per_step": 1000 * elapsed / timed,
            "precision": trainer.get("precision"), "deterministic": bool(trainer.get("deterministic", False)),
            "threads": torch.get_num_threads()}


def encode_stage(device: str, data: dict, features: dict, window: dict, model: dict, pass_sizes: list[int],
                 n_windows: int = 8192, rounds: int = 5, seed: int = 0) -> dict:
    """Time per window of ``encode`` (eval mode, no gradients) in passes of each of ``pass_sizes``
    windows, over the same ``n_windows`` windows; the sizes interleaved in ``rounds`` rounds (the
    first not timed), medians reported. The default pass size is ``encode_batch_size``."""
    from market_regimes.model import RegimeAutoencoder
    from market_regimes.model.networks import encode, encode_batch_size

    market = load_market(data)
    ws, _ = build_windows(build_features(market.panel, FeatureConfig.from_dict(features)), WindowConfig.from_dict(window))
    a, t = ws.keys()
    pick = np.random.default_rng(seed).choice(len(a), min(n_windows, len(a)), replace=False)
    x = torch.from_numpy(np.ascontiguousarray(ws.gather(a[pick], t[pick]))).to(device)
    torch.manual_seed(seed)
    net = RegimeAutoencoder(n_features=len(ws.names), window=ws.length, **_model_args(model)[0]).encoder.to(device)
    times: dict[int, list[float]] = {int(b): [] for b in pass_sizes}
    for r in range(max(int(rounds), 2)):
        for b in times:
            _sync(device)
            t0 = time.perf_counter()
            encode(net, x, b)
            _sync(device)
            if r > 0:
                times[b].append(time.perf_counter() - t0)
    return {"device": device, "n_windows": len(x), "default_pass": encode_batch_size(device),
            "us_per_window": {str(b): 1e6 * statistics.median(v) / len(x) for b, v in times.items()},
            "threads": torch.get_num_threads()}


def _bare_loop(net, batches, device: str, warmup: int, clip: float | None, deterministic: bool) -> float:
    """The same training step without Lightning; returns seconds for the steps after ``warmup``."""
    torch.use_deterministic_algorithms(deterministic)
    net = net.to(device)
    net.train()
    opt = net.configure_optimizers()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    t0 = None
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        if device == "cuda":
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = net.losses(batch)["loss"]
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


class _StepTimer(L.Callback):
    """Clock from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int, steps: int, device: str):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.t0 = self.t1 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            _sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.steps:
            _sync(self.device)
            self.t1 = time.perf_counter()
