"""Feature-regime baseline: k-means regimes on a few hand-made market features, no autoencoder.

The regimes are exactly those of ``scripts/train.py experiment=feature_baseline``: the job builds
the same stack with ``training.fit_stack`` (data -> causal features -> windows with the robust
scaler fitted on the training rows only -> ``model=features`` embedding, i.e. the scaled inputs
of the window's end bar -> ``cluster=kmeans`` with its automatic K). On top it reports:

* the k table (``k_table``): k-means for every k in ``feature_regimes.k_range`` on the training
  embeddings, with the within-cluster sum of squares (WCSS), silhouette (on a seeded subsample of
  ``silhouette_samples`` rows, the same rows for every k), Davies-Bouldin and Calinski-Harabasz
  (all rows), joined with the stability columns of the pipeline's K selection when it ran;
* the chosen k (``choose_k``). ``k_rule=pipeline`` (default): the K the pipeline picks with
  ``cluster.selection`` over ``cluster.k_range`` (default ``stability``: the largest k whose worst
  regime is reproduced with matched Jaccard >= 0.8 by fits on random halves, see
  ``regimes/selection.py``) or ``cluster.n_regimes`` when fixed, so the analysed model is the one
  the walk-forward validates. ``elbow`` / ``silhouette`` / ``combined`` use the rules of
  ``analysis.asset_groups.select_k`` on the k table (knee of the WCSS curve over k = 1..k_max;
  best silhouette; best silhouette within one k of the knee); the three candidates are always
  recorded in ``summary.json``;
* the regime characteristics of one asset (``characteristics``; BTC by default), in sample
  (training period, prices after it unseen) and out of sample: share of time, mean duration,
  mean next-day log return, annualised volatility of next-bar returns, P(up next day) with its
  Wilson 95 % interval on the overlap-corrected count (``stats.regime_statistics``), and the mean
  of each input feature in its own units;
* a PCA scatter of the training embeddings by regime and a regime timeline over the price.

Labels are causal: k-means labels every bar on its own (nearest centroid to that bar's scaled
features; ``predict_online`` of a per-row model), the features use bars <= t and the scaler and
centroids come from the training period, so a bar's label depends on no later bar.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from market_regimes.data.panel import interval_to_timedelta
from market_regimes.errors import ConfigError, checked_options
from market_regimes.serialize import json_default

log = logging.getLogger(__name__)

K_RULES = ("pipeline", "elbow", "silhouette", "combined")


@dataclass(frozen=True)
class FeatureRegimeOptions:
    k_range: tuple[int, int] = (2, 10)
    k_rule: str = "pipeline"
    asset: str | None = None  # characteristics and timeline; None: features.reference_symbol, else the first
    silhouette_samples: int = 5000
    plot_points: int = 20000

    @classmethod
    def from_dict(cls, values) -> "FeatureRegimeOptions":
        values = checked_options(cls, values, "feature_regimes")
        if "k_range" in values:
            values["k_range"] = tuple(int(k) for k in values["k_range"])
        opts = cls(**values)
        lo, hi = opts.k_range if len(opts.k_range) == 2 else (0, -1)
        if not 2 <= lo <= hi:
            raise ConfigError(f"feature_regimes.k_range={list(opts.k_range)} must be [k_min, k_max] with 2 <= k_min <= k_max")
        if opts.k_rule not in K_RULES:
            raise ConfigError(f"feature_regimes.k_rule={opts.k_rule!r}; use one of {', '.join(K_RULES)}")
        return opts


def k_table(z: np.ndarray, k_range: tuple[int, int], n_init: int = 5, seed: int = 0,
            silhouette_samples: int = 5000) -> tuple[pd.DataFrame, float]:
    """(table indexed by k with wcss, silhouette, davies_bouldin, calinski_harabasz; the k = 1 WCSS).

    z: (N, D) training embeddings. k above N - 1 is skipped.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
    from threadpoolctl import threadpool_limits

    from market_regimes.regimes import make_clusterer

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(z), min(len(z), silhouette_samples), replace=False))
    rows = []
    for k in range(k_range[0], min(k_range[1], len(z) - 1) + 1):
        # a few dimensions: OpenMP threads cost more than they save (10x on a busy 2-core machine)
        with threadpool_limits(1, user_api="openmp"):
            km = make_clusterer("kmeans", k, n_init=n_init, random_state=seed).fit(z)
        lab = km.labels_
        ok = len(np.unique(lab)) > 1 and 1 < len(np.unique(lab[sample])) < len(sample)
        rows.append({"k": k, "wcss": km.inertia_,
                     "silhouette": silhouette_score(z[sample], lab[sample]) if ok else np.nan,
                     "davies_bouldin": davies_bouldin_score(z, lab) if ok else np.nan,
                     "calinski_harabasz": calinski_harabasz_score(z, lab) if ok else np.nan})
    if not rows:
        raise ConfigError(f"feature_regimes.k_range={list(k_range)}: only {len(z)} training rows")
    total_ss = float(((z - z.mean(axis=0)) ** 2).sum())
    return pd.DataFrame(rows).set_index("k"), total_ss


def choose_k(table: pd.DataFrame, total_ss: float, rule: str, pipeline_k: int) -> dict:
    """{'k', 'rule', 'k_pipeline', 'k_elbow', 'k_silhouette', 'k_combined'}; see the module docstring."""
    from market_regimes.analysis.asset_groups import select_k

    inertia = table.rename(columns={"wcss": "inertia"})
    other = {r: select_k(inertia, total_ss, r)["k"] for r in ("elbow", "silhouette", "combined")}
    k = pipeline_k if rule == "pipeline" else other[rule]
    return {"k": int(k), "rule": rule, "k_pipeline": int(pipeline_k), **{f"k_{r}": int(v) for r, v in other.items()}}


def bars_per(interval: str, period: str) -> int:
    """Whole bars of ``interval`` in ``period`` (at least 1): 24 hourly bars per day."""
    return max(int(pd.Timedelta(period) / interval_to_timedelta(interval)), 1)


def characteristics(close: pd.Series, labels: pd.Series, k: int, interval: str, inputs: pd.DataFrame | None = None,
                    sample: str = "in_sample") -> pd.DataFrame:
    """One row per regime for one asset: see the module docstring. ``close``/``labels``: (T,) on the
    bar grid (labels -1: none); ``inputs``: (T, C) raw input features averaged per regime."""
    from market_regimes.stats import POOLED, describe_regime, regime_statistics

    day = bars_per(interval, "1D")
    table = regime_statistics(close.to_frame(), labels.to_frame(), k, interval, horizons=(1, day))
    table = table[table["asset"] != POOLED].set_index("regime")
    year = np.sqrt(bars_per(interval, "365D"))
    out = pd.DataFrame({
        "sample": sample,
        "name": [describe_regime(table.loc[r]) for r in range(k)],
        "n_bars": table["n_bars"],
        "share_of_time": table["occupancy"],
        "mean_duration_bars": table["mean_duration_bars"],
        "mean_duration_hours": table["mean_duration_hours"],
        "n_runs": table["n_runs"],
        "mean_daily_return": table[f"mean_fwd_ret_{day}"],
        "annualised_vol": table["std_fwd_ret_1"] * year,
        "p_up_next_day": table[f"p_up_{day}"],
        "p_up_next_day_lo": table[f"p_up_{day}_lo"],
        "p_up_next_day_hi": table[f"p_up_{day}_hi"],
        "n_eff_next_day": table[f"n_eff_{day}"],
    }, index=pd.RangeIndex(k, name="regime"))
    if inputs is not None:
        lab = labels.to_numpy()
        means = inputs[lab >= 0].groupby(lab[lab >= 0]).mean().reindex(range(k))
        for col in inputs.columns:
            out[f"mean_{col}"] = means[col].to_numpy()
    return out


def input_frame(features, windows, columns: list[int], mode: str, asset: int = 0) -> pd.DataFrame:
    """The embedding's input columns in their own (unscaled) units, (T, C) on the bar grid.

    ``columns`` index the flattened ``A*F`` (market mode) or ``F`` axis of ``windows.names``; in
    per-asset mode they are read for asset number ``asset``."""
    F = len(windows.names)
    out = {}
    for c in columns:
        a, f = divmod(int(c), F) if mode == "market" else (asset, int(c))
        name = windows.names[f]
        key = f"{windows.symbols[a]}:{name}" if mode == "market" else name
        out[key] = features.values[a, :, features.names.index(name)].astype(np.float64)
    return pd.DataFrame(out, index=features.index)


@dataclass
class FeatureRegimeResult:
    run_dir: Path
    files: list[Path]
    summary: dict
    k_table: pd.DataFrame
    characteristics: pd.DataFrame
    labels: pd.DataFrame  # (T, A) causal labels, -1 where a bar has no valid window


def run_feature_regimes(cfg) -> FeatureRegimeResult:
    """The job for a composed ``feature_regimes`` config; writes everything to ``cfg.paths.run_dir``."""
    from threadpoolctl import threadpool_limits

    from market_regimes.pipeline import prepare
    from market_regimes.plots import latent_map, regimes_over_price, selection_curve
    from market_regimes.training import fit_regimes, fit_stack, label_frame, order_key, truth_agreement

    t_start = time.perf_counter()
    opts = FeatureRegimeOptions.from_dict(OmegaConf.to_container(cfg.feature_regimes, resolve=True))
    if cfg.model.encoder != "features":
        raise ConfigError(f"model={cfg.model.encoder}: the feature-regime baseline needs model=features "
                          "(e.g. experiment=feature_baseline)")
    seed, mode = int(cfg.seed), cfg.window.mode
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg)
    windows, features, panel = prep.windows, prep.features, prep.market.panel
    asset = opts.asset or (cfg.features.reference_symbol if cfg.features.reference_symbol in windows.symbols
                           else windows.symbols[0])
    if asset not in windows.symbols:
        raise ConfigError(f"feature_regimes.asset={asset} is not among the symbols {windows.symbols}")
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="openmp"):
        fitted = fit_stack(cfg, features, windows, prep.scaler, run_dir, loggers=False)
    lat = fitted.latents
    in_train = windows.index[lat.end_idx] <= windows.train_end
    if mode == "market":  # the market sequence is repeated per asset: one copy, as fit_stack fits
        in_train &= lat.asset_idx == 0
    z_train = lat.z[in_train]
    table, total_ss = k_table(z_train, opts.k_range, int(cfg.cluster.params.get("n_init", 5)), seed,
                              opts.silhouette_samples)
    if fitted.selection is not None:
        table = table.join(fitted.selection.table, how="left")
    choice = choose_k(table, total_ss, opts.k_rule, int(fitted.clusterer.n_regimes))
    k, clusterer = choice["k"], fitted.clusterer
    log.info("k table over k = %d..%d on %d training rows; k = %d by rule %s", *opts.k_range, len(z_train), k,
             opts.k_rule)
    if k != clusterer.n_regimes:
        fixed = {**OmegaConf.to_container(cfg.cluster, resolve=True), "n_regimes": k}
        with threadpool_limits(1, user_api="openmp"):
            clusterer, _ = fit_regimes(lat.select(in_train), order_key(features, lat)[in_train], fixed, seed)
    labels = np.asarray(clusterer.predict_online(lat.z, lat.lengths))
    cluster_s = time.perf_counter() - t0

    frame = label_frame(windows.index, windows.symbols, lat, labels)
    train_rows = np.asarray(windows.index <= windows.train_end)
    inputs = input_frame(features, windows, fitted.model.hparams["columns"], mode, windows.symbols.index(asset))
    close, lab = panel.close[asset], frame[asset]
    parts = [characteristics(close.where(train_rows), lab.where(train_rows, -1), k, panel.interval,
                             inputs, "in_sample")]
    if (lab.to_numpy()[~train_rows] >= 0).any():
        parts.append(characteristics(close, lab.where(~train_rows, -1), k, panel.interval, inputs, "out_of_sample"))
    chars = pd.concat(parts)
    names = dict(enumerate(parts[0]["name"]))

    files = [run_dir / "k_table.csv", run_dir / "characteristics.csv", run_dir / "regimes.csv"]
    table.to_csv(files[0])
    chars.to_csv(files[1])
    frame.to_csv(files[2])
    if cfg.get("plots", True):
        z_plot = z_train if z_train.shape[1] > 1 else np.c_[z_train, np.zeros(len(z_train))]  # PCA needs 2 axes
        files += [
            selection_curve(run_dir / "k_table.png", table[["wcss", "silhouette", "davies_bouldin", "calinski_harabasz"]],
                            f"chosen k = {k} by rule {opts.k_rule}"),
            latent_map(run_dir / "pca_scatter.png", z_plot, labels[in_train], k, opts.plot_points, seed),
            regimes_over_price(run_dir / "regime_timeline.png", panel.close[[asset]], frame[[asset]], k, names,
                               boundaries=[windows.train_end]),
        ]
    summary = {
        "k": choice, "asset": asset, "mode": mode, "train_end": str(windows.train_end),
        "inputs": list(inputs.columns), "n_training_rows": int(len(z_train)),
        "labels": ("causal: k-means labels each bar from that bar's scaled features alone (nearest centroid); "
                   if cfg.cluster.name == "kmeans" else f"causal: the {cfg.cluster.name} clusterer's online filter; ")
                  + "scaler and clusterer fitted on the training period",
        "regime_names": names, "centroids_scaled": clusterer.centroids_,
        "pipeline_selection": fitted.selection.criterion if fitted.selection is not None else "fixed",
        "data": prep.market.source,
        "timings_s": {**{n: round(v, 3) for n, v in prep.timings.items()}, "cluster_s": round(cluster_s, 3),
                      "total_s": round(time.perf_counter() - t_start, 3)},
    }
    if prep.market.truth is not None:
        with warnings.catch_warnings():  # a part may lack a true regime that the labels use
            warnings.simplefilter("ignore", UserWarning)
            summary["truth"] = {part: truth_agreement(prep.market.truth, frame, rows) for part, rows in
                                (("all", None), ("train", train_rows), ("test", ~train_rows))}
    files.append(run_dir / "summary.json")
    summary["files"] = [f.name for f in files]
    files[-1].write_text(json.dumps(summary, indent=2, default=json_default))
    return FeatureRegimeResult(run_dir, files, summary, table, chars, frame)


def format_report(result: FeatureRegimeResult) -> str:
    """Short text: the k table, the chosen k, the characteristics and (synthetic data) the truth."""
    s = result.summary
    c = s["k"]
    lines = [f"inputs {', '.join(s['inputs'])}; {s['n_training_rows']} training rows up to {s['train_end']}",
             result.k_table[["wcss", "silhouette", "davies_bouldin", "calinski_harabasz"]].round(3).to_string(),
             f"chosen k = {c['k']} (rule {c['rule']}; pipeline {c['k_pipeline']}, elbow {c['k_elbow']}, "
             f"silhouette {c['k_silhouette']}, combined {c['k_combined']})",
             f"regimes of {s['asset']} (labels are causal; out_of_sample = after the training period):"]
    ch = result.characteristics.reset_index()
    cols = ["sample", "regime", "name", "share_of_time", "mean_duration_hours", "mean_daily_return",
            "annualised_vol", "p_up_next_day", "p_up_next_day_lo", "p_up_next_day_hi"]
    lines.append(ch[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for part, t in (s.get("truth") or {}).items():
        if t.get("n"):
            lines.append(f"planted regimes [{part}]: ARI {t['ari']:.3f}, NMI {t['nmi']:.3f}, "
                         f"{t['n_found_regimes']} found / {t['n_true_regimes']} true")
    return "\n".join(lines)
