"""Torch access to windows: a batched Dataset and a LightningDataModule.

Batches are gathered in one vectorised call per batch (``__getitems__``), never sample by
sample, so the loader adds no per-sample Python work.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from market_regimes.windows import WindowSet


def _as_batch(batch):
    return batch


def _seed_worker(worker_id: int) -> None:
    """Give each loader worker its own stream of positive draws (copies start identical)."""
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng([info.dataset.seed, worker_id, info.seed % 2**32])


class WindowDataset(Dataset):
    """Windows selected by keys. Per-asset: ``keys=(asset_idx, end_idx)``; market: ``keys=end_idx``.

    A batch is ``{"x": (B, W, F) or (B, A, W, F) float32, "asset": (B,) long, "end": (B,) long}``
    (``asset`` is -1 in market mode). With ``positive_offset=k > 0`` it also holds ``"x_pos"``,
    the positive partner of the temporal objective: a window ending between ``positive_min_offset``
    (default: the window length, so the two share no bar) and ``k`` bars earlier, of a random asset
    (``positive="cross_asset"``, default) or of the same asset (``"same_asset"``). Sharing no bar and,
    across assets, no asset, the pair has little in common but the persistent market state, which
    is what the latent should hold. Where the drawn window is not valid, the sample itself is used.
    """

    def __init__(self, windows: WindowSet, keys, mode: str = "asset", positive_offset: int = 0, seed: int = 0,
                 positive: str = "cross_asset", positive_min_offset: int | None = None):
        self.windows = windows
        self.positive_min_offset = windows.length if positive_min_offset is None else int(positive_min_offset)
        self.mode = mode
        self.positive_offset = positive_offset
        self.positive = positive
        self.seed = seed
        self.rng = np.random.default_rng(seed)
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
        batch = {"x": self._gather(a, t), "asset": torch.from_numpy(a), "end": torch.from_numpy(t)}
        if self.positive_offset > 0:
            batch["x_pos"] = self._gather(*self._positives(a, t))
        return batch

    def _positives(self, a: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross = self.positive == "cross_asset" and self.mode == "asset"
        low = self.positive_min_offset
        t_pos = t - self.rng.integers(low, max(self.positive_offset, low) + 1, size=len(t))
        a_pos = self.rng.integers(0, len(self.windows.symbols), size=len(t)) if cross else a
        ok = t_pos >= 0
        ends = self.windows.ends
        if self.mode == "asset":
            ok[ok] = ends[a_pos[ok], t_pos[ok]]
        else:
            ok[ok] = ends[:, t_pos[ok]].all(axis=0)
        return np.where(ok, a_pos, a), np.where(ok, t_pos, t)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def _gather(self, a: np.ndarray, t: np.ndarray) -> torch.Tensor:
        x = self.windows.gather(a, t) if self.mode == "asset" else self.windows.gather_market(t)
        return torch.from_numpy(np.ascontiguousarray(x))



def time_split(windows: WindowSet, val_fraction: float = 0.15, mode: str = "asset"):
    """Split the training period's windows in time: the last ``val_fraction`` (by end bar) for
    validation, separated from the fitting windows by a purge of one window length so that no
    validation window shares a bar with a fitting window. Returns (fit_keys, val_keys)."""
    if mode == "asset":
        a, t = windows.keys(end=windows.train_end, strided=True)
    else:
        t = windows.market_keys(end=windows.train_end, strided=True)
        a = np.full_like(t, -1)
    if val_fraction > 0 and len(t):
        cut = np.quantile(t, 1.0 - val_fraction)
        fit, val = t <= cut - windows.length, t > cut
    else:
        fit, val = np.ones(len(t), dtype=bool), np.zeros(len(t), dtype=bool)
    if mode == "asset":
        return (a[fit], t[fit]), (a[val], t[val])
    return t[fit], t[val]


class WindowDataModule(L.LightningDataModule):
    """Fitting and validation loaders over a :class:`WindowSet` (batches built per batch)."""

    def __init__(self, windows: WindowSet, fit_keys, val_keys, mode: str = "asset", batch_size: int = 256,
                 num_workers: int = 0, pin_memory: bool = False, seed: int = 0, positive_offset: int = 0,
                 windows_per_epoch: int | None = None, positive: str = "cross_asset",
                 positive_min_offset: int | None = None):
        super().__init__()
        self.positive_min_offset = positive_min_offset
        self.positive = positive
        self.windows_per_epoch = windows_per_epoch
        self.positive_offset = positive_offset
        self.windows = windows
        self.fit_keys, self.val_keys = fit_keys, val_keys
        self.mode = mode
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed

    def _loader(self, keys, shuffle: bool) -> DataLoader:
        """Shuffled training loader draws ``windows_per_epoch`` windows (without replacement) per
        epoch: neighbouring windows overlap in W-1 bars, so a random subset per epoch covers the
        data at a fraction of the cost; None uses every window."""
        dataset = WindowDataset(self.windows, keys, self.mode, self.positive_offset, self.seed, self.positive,
                                self.positive_min_offset)
        gen = torch.Generator().manual_seed(self.seed)
        sampler = None
        if shuffle:
            n = len(dataset) if not self.windows_per_epoch else min(int(self.windows_per_epoch), len(dataset))
            sampler = RandomSampler(dataset, num_samples=n, generator=gen)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=_as_batch,
                          worker_init_fn=_seed_worker if self.num_workers > 0 else None,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.fit_keys, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_keys, shuffle=False)
