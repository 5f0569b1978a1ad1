"""The ``mine_patterns`` job: config -> data -> features -> patterns, then events.csv,
patterns.csv, summary.json and PNG plots in the run directory, and a short printed table."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from market_regimes.analysis.pattern_mining import PatternResult, mine_patterns, result_summary
from market_regimes.analysis.patterns import PatternConfig
from market_regimes.data import load_market
from market_regimes.features import FeatureConfig, build_features
from market_regimes.plots import _colors, _save  # also selects the Agg backend
from market_regimes.serialize import json_default

log = logging.getLogger(__name__)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- plots
def _gather(values: np.ndarray, asset_idx: np.ndarray, start_idx: np.ndarray, length: int) -> np.ndarray:
    """(B, length, ...) slices ``values[a, s : s + length]`` of an (A, T, ...) array."""
    view = np.lib.stride_tricks.sliding_window_view(values, length, axis=1)  # (A, T-L+1, ..., L)
    return np.moveaxis(view[asset_idx, start_idx], -1, 1)


def _asset_idx(result: PatternResult, events) -> np.ndarray:
    return pd.Index(result.inputs.symbols).get_indexer(events["asset"])


def _band(ax, x, paths: np.ndarray, color, label: str, style: str = "-") -> None:
    q25, q75 = np.nanquantile(paths, [0.25, 0.75], axis=0)
    ax.fill_between(x, q25, q75, color=color, alpha=0.25, lw=0)
    ax.plot(x, np.nanmean(paths, axis=0), style, color=color, lw=1.6, label=label)


def _rate_text(row) -> str:
    return (f"{row.hit_rate:.3f} [{row.hit_lo:.3f}, {row.hit_hi:.3f}] vs base {row.base_rate:.3f}, "
            f"lift {row.lift:.2f}")


def pattern_profile(path: Path, result: PatternResult, c: int) -> Path:
    """Mean and interquartile band of every indicator over the W bars up to the event, and of
    the cumulative return before the event and (marked as the outcome) over the N bars after it."""
    inputs, cfg = result.inputs, result.config
    mem = result.members(c)
    a, t = _asset_idx(result, mem), mem["bar"].to_numpy()
    W, h = cfg.window, cfg.horizon
    raw = _gather(inputs.raw, a, t - W + 1, W)[:, :, inputs.columns]  # (n, W, F)
    before = _gather(inputs.logc, a, t - W + 1, W) - inputs.logc[a, t][:, None]  # (n, W)
    after = _gather(inputs.logc, a, t, h + 1) - inputs.logc[a, t][:, None]  # (n, h + 1)
    names = inputs.indicators
    ncols = 3
    nrows = (len(names) + 1 + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    x = np.arange(-W + 1, 1)
    for j, name in enumerate(names):
        ax = axes.flat[j]
        _band(ax, x, raw[:, :, j], "C0", "mean, IQR band")
        ax.axhline(inputs.scaler.center_[j], color="grey", ls=":", lw=1, label="median of all bars (fit period)")
        ax.set_title(name, fontsize=9)
        ax.axvline(0, color="black", lw=0.6)
    ax = axes.flat[len(names)]
    _band(ax, x, before, "C0", "before the event (input)")
    _band(ax, np.arange(0, h + 1), after, "C3", f"after the event: outcome over {h} bars", "--")
    ax.axvspan(0, h, color="C3", alpha=0.06)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_title("cumulative log return vs close of the event bar", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    axes.flat[0].legend(fontsize=7)
    for ax in axes.flat[len(names) + 1:]:
        ax.axis("off")
    for ax in axes.flat[: len(names) + 1]:
        ax.set_xlabel("bars relative to the event bar", fontsize=8)
    lines = [f"pattern {c}: {len(mem)} events"]
    for row in result.table[result.table["cluster"] == c].itertuples():
        lines.append(f"{row.sample}: hit rate {_rate_text(row)}, {row.n_matches} matches")
    fig.suptitle("\n".join(lines), fontsize=9)
    return _save(fig, path)


def pattern_map(path: Path, result: PatternResult) -> Path:
    """Fitted events on the first two principal components, coloured by pattern."""
    model = result.model
    k = model.n_patterns
    xy = model.coords_
    ev = result.events[(result.events["sample"] == "test") & result.events["has_window"]]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    colors = np.array(_colors(k))
    second = xy[:, 1] if xy.shape[1] > 1 else np.zeros(len(xy))
    ax.scatter(xy[:, 0], second, c=colors[model.labels_], s=10, alpha=0.7)
    if len(ev):
        test_xy = model.transform(result.inputs.windows(_asset_idx(result, ev), ev["bar"].to_numpy()))
        ax.scatter(test_xy[:, 0], test_xy[:, 1] if xy.shape[1] > 1 else 0 * test_xy[:, 0], s=8, c="grey",
                   marker="x", alpha=0.6, label="held-out events")
        ax.legend(fontsize=8)
    for c in range(k):
        cy = model.centroids_[c, 1] if xy.shape[1] > 1 else 0.0
        ax.scatter(model.centroids_[c, 0], cy, marker="X", s=160, color=colors[c], edgecolor="black")
        ax.annotate(str(c), (model.centroids_[c, 0], cy), fontsize=11, weight="bold")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("event windows by pattern (PCA)")
    return _save(fig, path)


def hit_rate_chart(path: Path, result: PatternResult) -> Path:
    """Hit rate of each pattern with its 95 % interval against the base rate band, in and out of sample."""
    fig, ax = plt.subplots(figsize=(1.2 * result.model.n_patterns + 3, 4))
    for i, (sample, color) in enumerate([("in_sample", "C0"), ("out_of_sample", "C3")]):
        rows = result.table[result.table["sample"] == sample]
        if rows.empty:
            continue
        x = rows["cluster"].to_numpy() + (i - 0.5) * 0.3
        y = rows["hit_rate"].to_numpy()
        err = np.vstack([y - rows["hit_lo"].to_numpy(), rows["hit_hi"].to_numpy() - y])
        ax.errorbar(x, y, yerr=err, fmt="o", color=color, capsize=3, label=f"hit rate, {sample}")
        b = result.base[sample]
        ax.axhspan(b["lo"], b["hi"], color=color, alpha=0.15)
        ax.axhline(b["rate"], color=color, ls="--", lw=1, label=f"base rate, {sample}")
    ax.set_xticks(range(result.model.n_patterns))
    ax.set_xlabel("pattern")
    ax.set_ylabel("P(move follows)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def umap_map(path: Path, result: PatternResult) -> Path | None:
    """2-D UMAP of the fitted event windows (only when umap-learn is installed)."""
    try:
        import umap
    except ImportError:
        log.info("umap-learn is not installed: skipping the UMAP map (pip install umap-learn to get it)")
        return None
    Z = result.fit_windows.reshape(len(result.fit_windows), -1)
    xy = umap.UMAP(n_components=2, random_state=result.config.seed).fit_transform(Z)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=np.array(_colors(result.model.n_patterns))[result.model.labels_], s=10)
    ax.set_title("event windows by pattern (UMAP)")
    return _save(fig, path)


def save_plots(run_dir: Path, result: PatternResult) -> list[Path]:
    files = [pattern_profile(run_dir / f"pattern_{c}.png", result, c) for c in range(result.model.n_patterns)]
    files.append(pattern_map(run_dir / "patterns_pca.png", result))
    files.append(hit_rate_chart(run_dir / "patterns_hit_rates.png", result))
    if result.config.umap:
        files.append(umap_map(run_dir / "patterns_umap.png", result))
    return [f for f in files if f is not None]


# --------------------------------------------------------------------------- job
def format_table(result: PatternResult) -> str:
    head = f"{'cluster':>7} {'sample':<14} {'events':>6} {'matches':>8} {'n_eff':>6}  {'hit rate [95% CI]':<22} " \
           f"{'base rate [95% CI]':<22} {'lift':>5}"
    lines = [head]
    for r in result.table.itertuples():
        lines.append(f"{r.cluster:>7} {r.sample:<14} {r.n_events:>6} {r.n_matches:>8} {r.n_eff:>6}  "
                     f"{r.hit_rate:.3f} [{r.hit_lo:.3f}, {r.hit_hi:.3f}]   {r.base_rate:.3f} [{r.base_lo:.3f}, "
                     f"{r.base_hi:.3f}]   {r.lift:>5.2f}{' *' if r.ci_excludes_base else ''}")
    return "\n".join(lines)


def run_mine_patterns(cfg) -> Path:
    """Mine pre-move patterns for a composed ``mine_patterns`` config; returns the run directory."""
    t_start = time.perf_counter()
    pcfg = PatternConfig.from_dict(_plain(cfg.patterns))
    t0 = time.perf_counter()
    market = load_market(_plain(cfg.data))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    features = build_features(market.panel, FeatureConfig.from_dict(_plain(cfg.features)), market.sentiment)
    features_s = time.perf_counter() - t0
    result = mine_patterns(market.panel, features, pcfg)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plots = save_plots(run_dir, result) if pcfg.plots else []
    result.timings.update(data_s=load_s, features_s=features_s, plots_s=time.perf_counter() - t0)
    cols = ["asset", "timestamp", "forward_return", "cluster", "sample", "threshold", "distance", "bar",
            "window_start", "window_end", "has_window"]
    files = [_write(run_dir / "events.csv", result.events[cols].to_csv(index=False)),
             _write(run_dir / "patterns.csv", result.table.to_csv(index=False))]
    result.timings["total_s"] = time.perf_counter() - t_start
    summary = {**result_summary(result), "data": market.source,
               "files": [p.name for p in [*files, run_dir / "summary.json", *plots]]}
    files.append(_write(run_dir / "summary.json", json.dumps(summary, indent=2, default=json_default)))
    ev = result.events
    print(f"{len(ev)} events ({', '.join(f'{k} {v}' for k, v in summary['events']['by_sample'].items())}); "
          f"{result.model.n_patterns} pattern(s); hold-out from {result.split['test_start']}; "
          f"* = 95 % interval excludes the base rate")
    print(format_table(result))
    print(f"wrote {', '.join(summary['files'])} to {run_dir}")
    return run_dir
