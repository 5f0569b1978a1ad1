"""Torch access to windows: a batched Dataset and a LightningDataModule.

Batches are gathered in one vectorised call per batch (``__getitems__``), never sample by
sample, so the loader adds no per-sample Python work.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from market_regimes.windows import WindowSet


def _as_batch(batch):
    return batch


class WindowDataset(Dataset):
    """Windows selected by keys. Per-asset: ``keys=(asset_idx, end_idx)``; market: ``keys=end_idx``.

    A batch is ``{"x": (B, W, F) or (B, A, W, F) float32, "asset": (B,) long, "end": (B,) long}``
    (``asset`` is -1 in market mode).
    """

    def __init__(self, windows: WindowSet, keys, mode: str = "asset"):
        self.windows = windows
        self.mode = mode
        if mode == "asset":
            self.asset_idx, self.end_idx = (np.asarray(k, dtype=np.int64) for k in keys)
        else:
            self.end_idx = np.asarray(keys, dtype=np.int64)
            self.asset_idx = np.full_like(self.end_idx, -1)

    def __len__(self) -> int:
        return len(self.end_idx)

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        a, t = self.asset_idx[idx], self.end_idx[idx]
        x = self.windows.gather(a, t) if self.mode == "asset" else self.windows.gather_market(t)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "asset": torch.from_numpy(a), "end": torch.from_numpy(t)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}


def time_split(windows: WindowSet, val_fraction: float = 0.15, mode: str = "asset"):
    """Split the training period's windows in time: the last ``val_fraction`` (by end bar) for
    validation, separated from the fitting windows by a purge of one window length so that no
    validation window shares a bar with a fitting window. Returns (fit_keys, val_keys)."""
    if mode == "asset":
        a, t = windows.keys(end=windows.train_end)
        ends = t
    else:
        t = windows.market_keys(end=windows.train_end)
        ends = t
    if len(ends) == 0:
        return ((a, t) if mode == "asset" else t), ((a[:0], t[:0]) if mode == "asset" else t[:0])
    cut = np.quantile(ends, 1.0 - val_fraction) if val_fraction > 0 else ends.max() + 1
    fit = ends <= cut - windows.length
    val = ends > cut
    if mode == "asset":
        return (a[fit], t[fit]), (a[val], t[val])
    return t[fit], t[val]


class WindowDataModule(L.LightningDataModule):
    """Fitting and validation loaders over a :class:`WindowSet` (batches built per batch)."""

    def __init__(self, windows: WindowSet, fit_keys, val_keys, mode: str = "asset", batch_size: int = 256,
                 num_workers: int = 0, pin_memory: bool = False, seed: int = 0):
        super().__init__()
        self.windows = windows
        self.fit_keys, self.val_keys = fit_keys, val_keys
        self.mode = mode
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed

    def _loader(self, keys, shuffle: bool) -> DataLoader:
        dataset = WindowDataset(self.windows, keys, self.mode)
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, generator=gen,
                          collate_fn=_as_batch, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.fit_keys, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_keys, shuffle=False)
