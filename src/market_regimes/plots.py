"""PNG plots of a training run: regimes over price, latent map, model selection, transitions,
forward-return distributions. Each function saves one figure and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from market_regimes.stats import forward_log_return  # noqa: E402

MAX_ASSETS_PLOTTED = 6


def _colors(k: int):
    cmap = plt.get_cmap("viridis" if k > 10 else "tab10")
    return [cmap(i / max(k - 1, 1)) if k > 10 else cmap(i) for i in range(k)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def regimes_over_price(path: Path, close: pd.DataFrame, labels: pd.DataFrame, k: int, names=None,
                       boundaries=None) -> Path:
    """Each asset's log price with its regime as coloured background (one image strip per asset,
    so the cost does not grow with the number of regime switches); ``boundaries``: times drawn as
    dashed vertical lines (walk-forward fold starts)."""
    from matplotlib.colors import ListedColormap
    import matplotlib.dates as mdates

    symbols = list(labels.columns[:MAX_ASSETS_PLOTTED])
    fig, axes = plt.subplots(len(symbols), 1, figsize=(12, 2.4 * len(symbols)), sharex=True, squeeze=False)
    colors = _colors(k)
    cmap = ListedColormap(colors)
    x0, x1 = mdates.date2num(close.index[0]), mdates.date2num(close.index[-1])
    for ax, sym in zip(axes[:, 0], symbols):
        lab = np.ma.masked_less(labels[sym].to_numpy(), 0)
        logp = np.log(close[sym])
        lo, hi = np.nanmin(logp), np.nanmax(logp)
        pad = 0.05 * (hi - lo if hi > lo else 1.0)
        ax.imshow(lab[None, :], aspect="auto", cmap=cmap, vmin=-0.5, vmax=k - 0.5, alpha=0.35,
                  extent=(x0, x1, lo - pad, hi + pad), interpolation="nearest", origin="lower")
        ax.plot(close.index, logp, color="black", lw=0.7)
        ax.set_xlim(x0, x1)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(f"{sym}\nlog price")
        for b in boundaries or []:
            ax.axvline(mdates.date2num(pd.Timestamp(b)), color="gray", ls="--", lw=0.8)
    axes[-1, 0].xaxis_date()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i], alpha=0.4) for i in range(k)]
    axes[0, 0].legend(handles, [f"{i}: {names[i]}" if names and i in names else str(i) for i in range(k)],
                      loc="upper left", fontsize=8, ncol=min(k, 4))
    return _save(fig, path)


def latent_map(path: Path, z: np.ndarray, labels: np.ndarray, k: int, max_points: int = 20000, seed: int = 0) -> Path:
    """First two principal components of the latents, coloured by regime."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z), size=min(len(z), max_points), replace=False)
    zc = z[idx] - z[idx].mean(axis=0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    xy = zc @ vt[:2].T
    if xy.shape[1] < 2:  # one-dimensional embedding: a strip
        xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
    fig, ax = plt.subplots(figsize=(6, 5))
    colors = np.array(_colors(k))
    ax.scatter(xy[:, 0], xy[:, 1], c=colors[labels[idx]], s=3, alpha=0.5)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("latent space by regime (PCA)")
    return _save(fig, path)


def selection_curve(path: Path, table: pd.DataFrame, criterion: str) -> Path:
    """Model-selection scores against the number of regimes."""
    table = table.reset_index() if "k" not in table.columns else table
    cols = [c for c in table.columns if c != "k" and pd.api.types.is_numeric_dtype(table[c])]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, c in zip(axes[0], cols):
        ax.plot(table["k"], table[c], marker="o")
        ax.set_xlabel("number of regimes")
        ax.set_title(c)
    fig.suptitle(f"model selection (criterion: {criterion})")
    return _save(fig, path)


def transition_heatmap(path: Path, P: np.ndarray) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(P, vmin=0, vmax=1, cmap="Blues")
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            if np.isfinite(P[i, j]):
                ax.text(j, i, f"{P[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if P[i, j] > 0.6 else "black")
    ax.set_xlabel("to regime")
    ax.set_ylabel("from regime")
    ax.set_title("transition matrix (in-sample)")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def forward_return_distributions(path: Path, close: pd.DataFrame, labels: pd.DataFrame, k: int, h: int) -> Path:
    """Per-regime distribution of the h-bar forward log return, pooled over assets."""
    fwd = forward_log_return(close, h).to_numpy()
    lab = labels.to_numpy()
    data = [fwd[(lab == i) & np.isfinite(fwd)] for i in range(k)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
    ax.set_xticks(range(1, k + 1), [str(i) for i in range(k)])
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("regime")
    ax.set_ylabel(f"forward {h}-bar log return")
    return _save(fig, path)


def save_training_plots(run_dir: Path, prep, frame: pd.DataFrame, latents, labels: np.ndarray, selection, stats: dict,
                        k: int) -> list[Path]:
    """All training plots into ``run_dir/plots``; returns the files written."""
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    close = prep.market.panel.close
    names = {int(i): n for i, n in (stats["in_sample"].get("regime_names") or {}).items()}
    files = [regimes_over_price(out / "regimes_over_price.png", close, frame, k, names)]
    if len(latents.z):
        files.append(latent_map(out / "latent_map.png", latents.z, labels, k))
    if selection is not None:
        files.append(selection_curve(out / "model_selection.png", selection.table, selection.criterion))
    P = np.asarray(stats["in_sample"]["transition_matrix"]["pooled"], dtype=float)
    files.append(transition_heatmap(out / "transition_matrix.png", P))
    h = max(stats["in_sample"].get("horizons", [24]))
    files.append(forward_return_distributions(out / "forward_returns.png", close, frame, k, h))
    return files


def save_walk_forward_plots(run_dir: Path, close: pd.DataFrame, test_frames: list[pd.DataFrame], folds: list[dict],
                            k: int) -> list[Path]:
    """Walk-forward plots into ``run_dir/plots``: out-of-sample regimes over price with the fold
    boundaries, label stability per fold, drift per fold."""
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    labels = pd.concat(test_frames).groupby(level=0).max().reindex(close.index, fill_value=-1)
    timeline = regimes_over_price(out / "fold_timeline.png", close, labels, k,
                                  boundaries=[f["test_start"] for f in folds])
    fig, axes = plt.subplots(1, 1, figsize=(12, 2.2))
    for f in folds:
        t0, t1 = pd.Timestamp(f["train_start"]), pd.Timestamp(f["train_end"])
        s0, s1 = pd.Timestamp(f["test_start"]), pd.Timestamp(f["test_end"])
        axes.barh(f["fold"], (t1 - t0).total_seconds() / 86400, left=mdates_num(t0), color="lightgray")
        axes.barh(f["fold"], (s1 - s0).total_seconds() / 86400, left=mdates_num(s0), color="tab:blue")
    axes.xaxis_date()
    axes.set_ylabel("fold")
    axes.set_title("training (grey) and out-of-sample test (blue) slices")
    folds_png = _save(fig, out / "folds.png")

    idx = [f["fold"] for f in folds]
    fig, ax = plt.subplots(figsize=(6, 3))
    ari = [np.nan if f["stability_ari"] is None else f["stability_ari"] for f in folds]
    ax.bar(idx, ari, color="tab:green")
    ax.set_ylim(0, 1)
    ax.set_xlabel("fold")
    ax.set_ylabel("ARI vs previous fold's model")
    ax.set_title("label stability")
    stability_png = _save(fig, out / "stability.png")

    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    share = [f["drift"].get("features", {}).get("share_drifted", np.nan) for f in folds]
    mmd = [f["drift"]["latent_mmd"].get("mmd2") or np.nan for f in folds]
    thr = [f["drift"]["latent_mmd"].get("threshold") or np.nan for f in folds]
    tv = [f["drift"]["occupancy"]["total_variation"] for f in folds]
    axes[0].bar(idx, share, color="tab:orange")
    axes[0].set_title("share of features with PSI above threshold")
    axes[1].bar(idx, mmd, color="tab:red", label="MMD^2")
    axes[1].plot(idx, thr, "k_", markersize=20, label="block-permutation threshold")
    axes[1].legend(fontsize=7)
    axes[1].set_title("latent MMD^2")
    axes[2].bar(idx, tv, color="tab:purple")
    axes[2].set_title("occupancy shift (total variation)")
    for a in axes:
        a.set_xlabel("fold")
    drift_png = _save(fig, out / "drift.png")
    return [timeline, folds_png, stability_png, drift_png]


def mdates_num(ts: pd.Timestamp) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(ts))
