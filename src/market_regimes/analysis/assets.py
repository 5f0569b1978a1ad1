"""The ``cluster_assets`` job: asset profiles -> groups (k-means, DBSCAN, Ward, affinity
propagation on the partial-correlation graph) -> names, picks, laggards, monthly membership moves,
maps and plots, all in the run directory.

Everything is computed from bars up to ``as_of`` (default: the data end); the monthly re-runs use
the same lookback ending at each month end before it. Their group ids are aligned to the final
run's, walking back month by month: each month is matched to the month after it by Hungarian
matching on shared members, so ``to_group`` ids in ``membership_moves.csv`` are those of
``groups.csv``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from market_regimes.analysis import asset_groups as ag
from market_regimes.analysis import asset_plots
from market_regimes.analysis.asset_profile import FEATURES, AssetProfile, ProfileConfig, asset_profile
from market_regimes.analysis.market_map import GraphResult, embed_assets, feature_maps, graph_groups
from market_regimes.data import Panel, load_market
from market_regimes.errors import ConfigError, DataError
from market_regimes.serialize import json_default

log = logging.getLogger(__name__)

METHODS = ("kmeans", "dbscan", "ward", "affinity")
MIN_ASSETS = 3


@dataclass
class Grouping:
    """The groups of one date: labels (A, method) with canonical ids, names per method."""

    profile: AssetProfile
    z: pd.DataFrame                    # (A, F) standardised clustering inputs
    labels: pd.DataFrame               # asset x method
    names: dict[str, dict[int, str]]
    choice: dict = field(default_factory=dict)
    k_table: pd.DataFrame | None = None
    dbscan_eps: float | None = None
    tree: np.ndarray | None = None
    graph: GraphResult | None = None


def options(cfg) -> dict:
    """The composed ``cluster_assets`` config as a plain dict (config/cluster_assets.yaml holds
    every option and its default), with ``primary`` checked."""
    opts = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if opts["primary"] not in METHODS:
        raise ConfigError(f"primary={opts['primary']!r}; use one of {', '.join(METHODS)}")
    return opts


def profile_config(opts: dict) -> ProfileConfig:
    return ProfileConfig(**{f.name: opts[f.name] for f in fields(ProfileConfig)})


def group_assets(panel: Panel, opts: dict, as_of=None, methods=METHODS) -> Grouping:
    """Profile the assets at ``as_of`` (None: the data end) and group them with each of ``methods``
    (k-means always runs: its k is also Ward's by default)."""
    pcfg = profile_config(opts)
    profile = asset_profile(panel, pcfg, as_of)
    n = len(profile.features)
    if n < MIN_ASSETS:
        raise DataError(f"only {n} asset(s) have enough history in the {pcfg.lookback_days}-day lookback to "
                        f"{profile.as_of} (need {MIN_ASSETS}); lower min_coverage or lookback_days")
    seed, km = int(opts["seed"]), opts["kmeans"]
    z = ag.standardise(profile.features, opts["cluster_features"] or FEATURES, opts["clip_z"])
    g = Grouping(profile, z, pd.DataFrame(index=z.index), {})
    g.k_table, fits = ag.kmeans_table(z.to_numpy(), km["k_min"], km["k_max"], km["n_init"], seed)
    total_ss = float(((z - z.mean()) ** 2).to_numpy().sum())
    g.choice = ag.select_k(g.k_table, total_ss, km["k_rule"], km["k_window"])
    raw = {"kmeans": fits[g.choice["k"]]}
    if "dbscan" in methods:
        raw["dbscan"], g.dbscan_eps = ag.dbscan_groups(z.to_numpy(), opts["dbscan"]["min_samples"])
    if "ward" in methods:
        raw["ward"], g.tree = ag.ward_groups(z.to_numpy(), min(int(opts["ward"]["n_clusters"] or g.choice["k"]), n))
    if "affinity" in methods:
        gr = opts["graph"]
        g.graph = graph_groups(profile.returns, gr["cv"], gr["max_iter"], seed, gr["preference"], gr["min_preference"])
        raw["affinity"] = g.graph.labels
    names_z = ag.standardise(profile.features, FEATURES, opts["clip_z"])
    for method, lab in raw.items():
        g.labels[method] = ag.canonical(lab, profile.features["ann_vol"])
        g.names[method] = ag.name_groups(names_z, g.labels[method], opts["naming"]["threshold"],
                                         opts["naming"]["max_tags"])
    return g


def month_ends(panel: Panel, as_of: pd.Timestamp, months: int) -> list[pd.Timestamp]:
    """The last bar time of each of the ``months`` calendar months ending before ``as_of``."""
    if months <= 0:
        return []
    after = pd.date_range(panel.index[0].normalize(), as_of, freq="ME") + pd.Timedelta("1D")  # next month's 00:00
    after = after[after <= as_of]
    return list(panel.index[panel.index.searchsorted(after[-months:], side="left") - 1])


def rolling_moves(panel: Panel, opts: dict, final: Grouping) -> tuple[pd.DataFrame, list, list]:
    """Re-cluster at each month end (primary method), align ids backwards from ``final``; returns
    (membership moves, [(date, n_groups)], skipped [(date, reason)])."""
    primary = opts["primary"]
    dates = month_ends(panel, final.profile.as_of, int(opts["rolling"]["months"]))
    history = [(final.profile.as_of, final.labels[primary], final.names[primary])]
    skipped = []
    for date in reversed(dates):
        try:
            g = group_assets(panel, opts, date, methods=(primary,))
        except DataError as err:
            log.info("monthly re-run at %s skipped: %s", date, err)
            skipped.append((date, str(err)))
            continue
        aligned = ag.align_labels(history[0][1], g.labels[primary])
        moved = {int(old): int(new) for old, new in zip(g.labels[primary], aligned)}
        history.insert(0, (date, aligned, {moved.get(k, k): v for k, v in g.names[primary].items()}))
    return ag.membership_moves(history), [(d, int(lab[lab >= 0].nunique())) for d, lab, _ in history], skipped


def _members(g: Grouping, method: str) -> dict:
    lab = g.labels[method]
    return {int(k): {"name": g.names[method][int(k)], "members": list(lab.index[lab == k])}
            for k in sorted(lab.unique())}


def _write_plots(run_dir: Path, g: Grouping, opts: dict) -> tuple[dict, dict]:
    """Every figure; returns (file name -> path, what the maps used)."""
    symbols, seed, primary = list(g.z.index), int(opts["seed"]), opts["primary"]
    prim, names = g.labels[primary].to_numpy(), g.names[primary]
    out = {"kselection.png": asset_plots.k_selection(run_dir / "kselection.png", g.k_table, g.choice),
           "dendrogram.png": asset_plots.dendrogram(run_dir / "dendrogram.png", g.tree, symbols,
                                                    int(g.labels["ward"].nunique()))}
    threshold = float(opts["graph"]["edge_threshold"])
    xy, layout = embed_assets(g.profile.returns, opts["graph"]["lle_neighbors"], seed)
    out["market_map.png"] = asset_plots.market_map(
        run_dir / "market_map.png", xy, symbols, g.labels["affinity"].to_numpy(), g.names["affinity"],
        g.graph.partial_corr, threshold,
        f"market map: affinity-propagation groups on graphical-lasso partial correlations (layout: {layout})")
    maps = feature_maps(g.z.to_numpy(), seed, opts["maps"]["tsne_perplexity"], opts["maps"]["umap"])
    ev = maps["pca_explained"]
    pc_axes = (*(f"PC {i + 1} ({v:.0%})" for i, v in enumerate(ev)), "", "")[:2]
    titles = {"pca": f"asset features, PCA ({primary} groups)",
              "tsne": f"asset features, t-SNE perplexity {maps['tsne_perplexity']:.1f} ({primary} groups)",
              "umap": f"asset features, UMAP ({primary} groups)"}
    for kind, title in titles.items():
        if kind in maps:
            out[f"{kind}_map.png"] = asset_plots.scatter_map(run_dir / f"{kind}_map.png", maps[kind], symbols, prim,
                                                             names, title, pc_axes if kind == "pca" else ("1", "2"))
    info = {"market_map_layout": layout, "tsne_perplexity": maps["tsne_perplexity"], "umap": "umap" in maps,
            "pca_explained_variance": [float(v) for v in ev],
            "edges": int(np.triu(np.abs(g.graph.partial_corr) > threshold, 1).sum())}
    return out, info


def report(g: Grouping, primary: str, picks: pd.DataFrame, lag: pd.DataFrame, moves: pd.DataFrame) -> str:
    """A few lines for a human: what was clustered and what the groups are."""
    p = g.profile
    lines = [f"{len(g.z)} assets, {len(p.excluded)} left out (too little history), lookback "
             f"{p.start_day.date()} .. {p.as_of}, reference {p.reference}",
             f"k-means k={g.choice['k']} (elbow {g.choice['k_elbow']}, best silhouette {g.choice['k_silhouette']}); "
             f"Ward {g.labels['ward'].nunique()} groups; affinity propagation {g.labels['affinity'].nunique()} groups; "
             f"DBSCAN eps={g.dbscan_eps:.2f}, noise: {', '.join(g.labels.index[g.labels['dbscan'] < 0]) or 'none'}",
             f"{primary} groups:"]
    for k, d in _members(g, primary).items():
        chosen = picks.loc[picks["group"] == k, "asset"].tolist()
        lines.append(f"  {k} {d['name']} ({len(d['members'])}): {', '.join(d['members'])}"
                     + (f"  | picks: {', '.join(chosen)}" if chosen else ""))
    lines.append("affinity groups: " + "; ".join(f"{d['name']}: {', '.join(d['members'])}"
                                                  for d in _members(g, "affinity").values()))
    lines.append(f"laggards: {', '.join(lag['asset']) or 'none'}; "
                 f"membership moves over the monthly re-runs: {len(moves)}")
    return "\n".join(lines)


def run_cluster_assets(cfg) -> tuple[dict[str, Path], str]:
    """The job: load data, group the assets, write every output to ``cfg.paths.run_dir``.

    Returns (file name -> path written, a short human summary).
    """
    opts = options(cfg)
    primary = opts["primary"]
    timings, t0 = {}, time.perf_counter()
    market = load_market(opts["data"])
    timings["data_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = group_assets(market.panel, opts, opts["as_of"])
    timings["groups_s"] = time.perf_counter() - t0
    for row in g.profile.excluded.itertuples():
        log.info("left out %s: %s", row.asset, row.reason)
    t0 = time.perf_counter()
    moves, months, skipped = rolling_moves(market.panel, opts, g)
    timings["rolling_s"] = time.perf_counter() - t0

    feats = g.profile.features
    lab = g.labels[primary]
    pk = ag.picks(feats, lab, g.names[primary], opts["picks"]["per_cluster"])
    lag = ag.laggards(feats, lab, g.names[primary], opts["laggards"]["margin"], opts["laggards"]["min_size"])
    groups = g.labels[list(METHODS)].copy()
    for m in METHODS:
        groups[f"{m}_name"] = groups[m].map(g.names[m])

    run_dir = Path(opts["paths"]["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = {"asset_features.csv": feats, "kmeans_k_table.csv": g.k_table, "groups.csv": groups,
              "picks.csv": pk, "laggards.csv": lag, "membership_moves.csv": moves,
              "excluded_assets.csv": g.profile.excluded}
    written = {}
    for name, table in tables.items():
        table.to_csv(run_dir / name, index=name in ("asset_features.csv", "kmeans_k_table.csv", "groups.csv"))
        written[name] = run_dir / name
    t0 = time.perf_counter()
    plots, map_info = _write_plots(run_dir, g, opts)
    timings["plots_s"] = time.perf_counter() - t0
    written.update(plots)

    p = g.profile
    summary = {
        "data": market.source, "as_of": p.as_of, "lookback_start_day": p.start_day, "reference": p.reference,
        "n_assets": len(feats), "assets": list(feats.index), "excluded": p.excluded.to_dict("records"),
        "clustering_features": list(g.z.columns), "primary": primary,
        "feature_parameters": {f.name: opts[f.name] for f in fields(ProfileConfig)},
        "kmeans": {**g.choice, "rule": opts["kmeans"]["k_rule"]},
        "dbscan": {"eps": g.dbscan_eps, "noise": list(lab.index[g.labels["dbscan"] < 0])},
        "graph": {"alpha": g.graph.alpha, "preference": g.graph.preference, "affinity_converged": g.graph.converged,
                  **map_info},
        "groups": {m: _members(g, m) for m in METHODS},
        "picks": pk.to_dict("records"), "laggards": lag.to_dict("records"),
        "rolling": {"months": [{"date": d, "n_groups": k} for d, k in months], "n_moves": len(moves),
                    "skipped": [{"date": d, "reason": r} for d, r in skipped]},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "files": sorted([*written, "summary.json"]),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default))
    written["summary.json"] = run_dir / "summary.json"
    return written, report(g, primary, pk, lag, moves)
