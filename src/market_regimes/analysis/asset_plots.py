"""PNG figures of the asset-groups analysis; each function saves one figure and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from market_regimes.plots import _colors, _save, plt


def _group_colors(labels: np.ndarray) -> tuple[list, dict]:
    """Colour per point and per group id; noise (-1) is grey."""
    ids = sorted(int(g) for g in np.unique(labels) if g >= 0)
    palette = dict(zip(ids, _colors(max(len(ids), 1))))
    palette[-1] = (0.6, 0.6, 0.6, 1.0)
    return [palette[int(g)] for g in labels], palette


def _legend(ax, palette: dict, names: dict, labels: np.ndarray) -> None:
    present = sorted(set(int(g) for g in labels))
    handles = [plt.Line2D([], [], marker="o", ls="", color=palette[g]) for g in present]
    ax.legend(handles, [f"{g}: {names.get(g, '')}" for g in present], fontsize=7, loc="best", framealpha=0.8)


def scatter_map(path: Path, xy: np.ndarray, symbols: list[str], labels, names: dict, title: str,
                axis: tuple[str, str] = ("1", "2")) -> Path:
    """Assets as labelled points in a 2-D map, coloured by group."""
    labels = np.asarray(labels)
    colors, palette = _group_colors(labels)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=60, edgecolors="black", linewidths=0.4, zorder=3)
    for (x, y), sym in zip(xy, symbols):
        ax.annotate(sym.removesuffix("USDT"), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    _legend(ax, palette, names, labels)
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title)
    return _save(fig, path)


def market_map(path: Path, xy: np.ndarray, symbols: list[str], labels, names: dict, partial_corr: np.ndarray,
               threshold: float, title: str) -> Path:
    """The partial-correlation network: an edge where |partial correlation| > threshold, its width
    and darkness growing with |partial correlation| (red: negative); nodes coloured by group."""
    from matplotlib.collections import LineCollection

    labels = np.asarray(labels)
    colors, palette = _group_colors(labels)
    fig, ax = plt.subplots(figsize=(10, 8))
    i, j = np.nonzero(np.triu(np.abs(partial_corr) > threshold, k=1))
    if len(i):
        w = np.abs(partial_corr[i, j])
        strength = w / w.max()
        edge_colors = [(0.8, 0.1, 0.1, 0.2 + 0.7 * s) if partial_corr[a, b] < 0 else (0.1, 0.1, 0.4, 0.2 + 0.7 * s)
                       for a, b, s in zip(i, j, strength)]
        segments = np.stack([xy[i], xy[j]], axis=1)
        ax.add_collection(LineCollection(segments, colors=edge_colors, linewidths=0.5 + 4 * strength, zorder=1))
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=140, edgecolors="black", linewidths=0.5, zorder=3)
    for (x, y), sym in zip(xy, symbols):
        ax.annotate(sym.removesuffix("USDT"), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0), zorder=4)
    _legend(ax, palette, names, labels)
    ax.set_title(f"{title}\n{len(i)} edges with |partial correlation| > {threshold:g}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.autoscale_view()
    return _save(fig, path)


def k_selection(path: Path, table: pd.DataFrame, choice: dict) -> Path:
    """Inertia (elbow marked), silhouette, Davies-Bouldin and Calinski-Harabasz against k."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, col, better in zip(axes, table.columns, ("elbow", "higher", "lower", "higher")):
        ax.plot(table.index, table[col], "o-", color="tab:blue")
        ax.axvline(choice["k"], color="tab:red", ls="--", label=f"chosen k={choice['k']}")
        if col == "inertia":
            ax.axvline(choice["k_elbow"], color="tab:green", ls=":", label=f"elbow k={choice['k_elbow']}")
        if col == "silhouette":
            ax.axvline(choice["k_silhouette"], color="tab:orange", ls=":", label=f"best k={choice['k_silhouette']}")
        ax.set_title(f"{col} ({better})")
        ax.set_xlabel("k")
        ax.legend(fontsize=7)
    return _save(fig, path)


def dendrogram(path: Path, tree: np.ndarray, symbols: list[str], k: int) -> Path:
    """Ward dendrogram, branches coloured below the height that cuts it into ``k`` groups."""
    from scipy.cluster.hierarchy import dendrogram as draw

    heights = tree[:, 2]
    cut = (heights[-k] + heights[-k + 1]) / 2 if 1 < k <= len(heights) else heights[-1] + 1
    fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(symbols)), 5))
    draw(tree, labels=[s.removesuffix("USDT") for s in symbols], color_threshold=cut, ax=ax, leaf_rotation=90)
    ax.axhline(cut, color="black", ls="--", lw=0.8)
    ax.set_ylabel("Ward linkage distance")
    ax.set_title(f"Ward dendrogram of standardised asset features, cut into {k} groups")
    return _save(fig, path)
