"""The project's own pipeline on benchmark data, as ``scripts/train.py`` would run it.

``project_config(overrides)`` composes ``config/train.yaml`` with the given overrides (the
project's defaults plus what a suite states: its feature horizons, window length, the variant
``model=features``, ...). ``run_project(cfg, panel, train_end)`` then runs the training job's
stages on an in-memory panel: causal features -> windows scaled by a scaler fitted up to
``train_end`` -> ``training.fit_stack`` (encoder trained on the training windows, or the
feature-only embedding; clusterer with its automatic number of regimes fitted on the training
latents) -> causal ``predict_online`` labels for every bar.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from market_regimes.data.panel import Panel

log = logging.getLogger(__name__)
# what a benchmark run never needs: plots, loggers, bundles, progress bars (results are unchanged)
QUIET = ["plots=false", "logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "bundle.update_latest=false"]


def config_dir() -> str:
    from market_regimes.benchmarks.output import repo_root

    return str(repo_root() / "config")


def project_config(overrides: list[str], run_dir: str | Path, config_name: str = "train") -> DictConfig:
    """``config/<config_name>.yaml`` composed with ``overrides`` (works inside or outside a Hydra app)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [*QUIET, *[str(o) for o in overrides], f"paths.run_dir={run_dir}"]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=overrides)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name, overrides=overrides)


@dataclass
class ProjectFit:
    """Causal labels (T, A) on the panel's grid (-1: no window ends there), K, seconds; and the
    fitted stack, so that another clusterer setting can reuse the same latents (``reselect``)."""

    labels: pd.DataFrame
    n_regimes: int
    seconds: float
    cfg: DictConfig
    fitted: object = None
    features: object = None

    def reselect(self, cluster: dict) -> "ProjectFit":
        """The same encoder and latents, clustered again with ``cluster`` merged into ``cfg.cluster``
        (e.g. another choice of K or of the jump penalty); a ``cluster`` naming another clusterer is
        merged into that clusterer's ``config/cluster/<name>.yaml`` instead."""
        from market_regimes.training import fit_regimes, label_frame, order_key

        t0 = time.perf_counter()
        name = cluster.get("name", self.cfg.cluster.name)
        base = self.cfg.cluster if name == self.cfg.cluster.name else OmegaConf.load(Path(config_dir()) / "cluster" / f"{name}.yaml")
        ccfg = OmegaConf.merge(base, OmegaConf.create(cluster))
        lat, windows = self.fitted.latents, self.fitted.windows
        key = order_key(self.features, lat)
        in_train = windows.index[lat.end_idx] <= windows.train_end
        if self.cfg.window.mode == "market":
            in_train &= lat.asset_idx == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clusterer, _ = fit_regimes(lat.select(in_train), key[in_train], ccfg, int(self.cfg.seed))
        labels = label_frame(windows.index, windows.symbols, lat, np.asarray(clusterer.predict_online(lat.z, lat.lengths)))
        return ProjectFit(labels, int(clusterer.n_regimes), time.perf_counter() - t0, self.cfg)


def run_project(cfg: DictConfig, panel: Panel, train_end: pd.Timestamp, run_dir: str | Path) -> ProjectFit:
    """Fit the project's stack on bars up to ``train_end`` and label every bar causally."""
    import lightning as L

    from market_regimes.features import FeatureConfig, build_features
    from market_regimes.training import fit_stack, label_frame
    from market_regimes.windows import WindowConfig, build_windows

    t0 = time.perf_counter()
    plain = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    features = build_features(panel, FeatureConfig.from_dict(plain(cfg.features)))
    wcfg = WindowConfig.from_dict({**plain(cfg.window), "train_end": str(train_end)})
    windows, scaler = build_windows(features, wcfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and small batches
        fitted = fit_stack(cfg, features, windows, scaler, Path(run_dir), loggers=False)
    labels = label_frame(windows.index, windows.symbols, fitted.latents, fitted.labels)
    return ProjectFit(labels, int(fitted.clusterer.n_regimes), time.perf_counter() - t0, cfg, fitted, features)
