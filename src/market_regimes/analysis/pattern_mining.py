"""Run the pattern mining on one feature panel: events -> windows -> patterns (PCA + k-means)
-> hit and base rates.

The definitions (events, windows, split, matching, effective counts) are in
:mod:`market_regimes.analysis.patterns`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from market_regimes.analysis.patterns import (PatternConfig, PatternInputs, build_inputs, rate, split_points,
                                              thin_events)
from market_regimes.data.panel import Panel
from market_regimes.errors import DataError
from market_regimes.features import FeatureSet

log = logging.getLogger(__name__)


class PatternModel:
    """PCA of flattened event windows, then k-means (scikit-learn style).

    Fitted state: ``pca_``, ``centroids_`` (K, C) ordered by cluster size (0 = largest),
    ``labels_`` and ``distances_`` of the fitted events, ``radii_`` (K,) the ``match_quantile``
    quantile of each cluster's member distances, ``k_scores_`` {k: silhouette} when k was chosen.
    """

    def __init__(self, n_components: int = 8, n_clusters: int | None = None, k_range=(2, 8),
                 min_cluster_events: int = 5, match_quantile: float = 0.9, seed: int = 0):
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.min_cluster_events = min_cluster_events
        self.match_quantile = match_quantile
        self.seed = seed

    def fit(self, windows: np.ndarray) -> "PatternModel":
        """windows: (N, W, F) event windows."""
        # A few thousand points in a few dimensions: thread start-up and oversubscription of
        # shared cores cost more than the work (k-means measured ~30x slower with threads).
        with threadpool_limits(1):
            return self._fit(windows)

    def _fit(self, windows: np.ndarray) -> "PatternModel":
        Z = windows.reshape(len(windows), -1).astype(np.float64)
        n = len(Z)
        k_hi = min(self.k_range[1], n // self.min_cluster_events)
        need = max((self.n_clusters or self.k_range[0]) * self.min_cluster_events, 2)
        if n < need or (self.n_clusters is None and k_hi < self.k_range[0]):
            raise DataError(f"only {n} events with a valid window to fit patterns on; need at least {need} "
                            "(patterns.min_cluster_events per cluster): lower patterns.threshold, shorten "
                            "patterns.window or load more data")
        self.pca_ = PCA(min(self.n_components, n - 1, Z.shape[1]), random_state=self.seed).fit(Z)
        self.projection_ = self.pca_.components_.T.astype(np.float32)  # (D, C)
        self.offset_ = (self.pca_.mean_ @ self.pca_.components_.T).astype(np.float32)
        Y = self.transform(windows)
        self.k_scores_ = {}
        k = self.n_clusters
        if k is None:
            for kk in range(self.k_range[0], k_hi + 1):
                lab = KMeans(kk, n_init=10, random_state=self.seed).fit_predict(Y)
                if np.bincount(lab, minlength=kk).min() >= self.min_cluster_events:  # no splinter clusters
                    self.k_scores_[kk] = float(silhouette_score(Y, lab, sample_size=min(n, 4000),
                                                                random_state=self.seed))
            if self.k_scores_:
                k = max(self.k_scores_, key=self.k_scores_.get)
            else:
                log.info("no k in %s gives every cluster %d events: one pattern (the mean pre-move shape)",
                         list(self.k_range), self.min_cluster_events)
                k = 1
        km = KMeans(k, n_init=10, random_state=self.seed).fit(Y)
        order = np.argsort(-np.bincount(km.labels_, minlength=k), kind="stable")
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k)
        self.centroids_ = km.cluster_centers_[order]
        self.labels_ = rank[km.labels_]
        self.coords_ = Y
        self.distances_ = np.linalg.norm(Y - self.centroids_[self.labels_], axis=1)
        self.radii_ = np.array([np.quantile(self.distances_[self.labels_ == c], self.match_quantile)
                                for c in range(k)])
        return self

    @property
    def n_patterns(self) -> int:
        return len(self.centroids_)

    def transform(self, windows: np.ndarray) -> np.ndarray:
        """(B, W, F) windows -> (B, C) PCA coordinates."""
        if not hasattr(self, "pca_"):
            raise RuntimeError("PatternModel is not fitted")
        return windows.reshape(len(windows), -1).astype(np.float32, copy=False) @ self.projection_ - self.offset_

    def assign(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pattern id or -1 when outside the nearest pattern's radius, distance to nearest centroid)."""
        Y = self.transform(windows)
        dist_all = np.linalg.norm(Y[:, None, :] - self.centroids_[None, :, :], axis=2)  # (B, K)
        nearest = np.argmin(dist_all, axis=1)
        dist = dist_all[np.arange(len(Y)), nearest]
        return np.where(dist <= self.radii_[nearest], nearest, -1), dist


@dataclass
class PatternResult:
    """What a mining run found.

    events: one row per thinned event (asset, timestamp, bar, forward_return, threshold,
    sample fit|test|purged, has_window, window_start, window_end, cluster, distance);
    fit_windows: (N, W, F') windows of the events the patterns were fitted on, in the order of
    ``events[events.sample == "fit" & events.has_window]``; table: one row per (cluster, sample);
    base: {sample: base-rate dict}; split: where the hold-out starts and what the scaler saw.
    """

    config: PatternConfig
    inputs: PatternInputs
    model: PatternModel
    events: pd.DataFrame
    fit_windows: np.ndarray
    table: pd.DataFrame
    base: dict
    split: dict
    timings: dict

    def members(self, cluster: int) -> pd.DataFrame:
        """The fitted events of one pattern."""
        return self.events[(self.events["sample"] == "fit") & self.events["has_window"]
                           & (self.events["cluster"] == cluster)]


def scan(inputs: PatternInputs, model: PatternModel, asset_idx: np.ndarray, bar_idx: np.ndarray,
         chunk: int = 65536) -> np.ndarray:
    """Pattern id (or -1) of the window ending at each (asset, bar), built and matched per chunk."""
    out = np.empty(len(asset_idx), dtype=np.int64)
    for s in range(0, len(asset_idx), chunk):
        out[s : s + chunk] = model.assign(inputs.windows(asset_idx[s : s + chunk], bar_idx[s : s + chunk]))[0]
    return out


def populations(inputs: PatternInputs, test_idx: int, horizon: int, fitted: np.ndarray) -> dict[str, np.ndarray]:
    """(A, T) masks of the bars whose hit rates are measured in and out of sample.

    A bar counts when its window is valid and its outcome defined. In sample: its forward window
    ends before the hold-out, and it is not one of the fitted events (``fitted``, (A, T) bool).
    Out of sample: it is in the hold-out.
    """
    bar = np.arange(inputs.fwd.shape[1])
    labelled = inputs.ends & np.isfinite(inputs.fwd) & np.isfinite(inputs.thr)
    return {"in_sample": labelled & (bar + horizon < test_idx)[None, :] & ~fitted,
            "out_of_sample": labelled & (bar >= test_idx)[None, :]}


def mine_patterns(panel: Panel, features: FeatureSet, cfg: PatternConfig) -> PatternResult:
    """Find events, fit patterns on the events before the hold-out, measure hit and base rates."""
    timings = {}
    t0 = time.perf_counter()
    index, h = features.index, cfg.horizon
    T = len(index)
    test_idx, fit_end = split_points(index, cfg)
    inputs = build_inputs(panel, features, cfg, fit_end)
    ev_a, ev_t = thin_events(inputs.move, cfg.gap)
    has_window = inputs.ends[ev_a, ev_t]
    sample = np.where(ev_t + h < test_idx, "fit", np.where(ev_t >= test_idx, "test", "purged"))
    fit = has_window & (sample == "fit")
    test = has_window & (sample == "test")
    log.info("events: %d (%d with a valid window before the hold-out, %d in it)", len(ev_a), fit.sum(), test.sum())
    timings["events_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fit_windows = inputs.windows(ev_a[fit], ev_t[fit])  # (N, W, F')
    model = PatternModel(cfg.n_components, cfg.n_clusters, cfg.k_range, cfg.min_cluster_events,
                         cfg.match_quantile, cfg.seed).fit(fit_windows)
    cluster, distance = np.full(len(ev_a), -1), np.full(len(ev_a), np.nan)
    cluster[fit], distance[fit] = model.labels_, model.distances_
    if test.any():
        cluster[test], distance[test] = model.assign(inputs.windows(ev_a[test], ev_t[test]))
    timings["fit_s"] = time.perf_counter() - t0
    events = pd.DataFrame({
        "asset": np.asarray(inputs.symbols, dtype=object)[ev_a], "timestamp": index[ev_t], "bar": ev_t,
        "forward_return": inputs.fwd[ev_a, ev_t], "threshold": inputs.thr[ev_a, ev_t], "sample": sample,
        "has_window": has_window, "window_start": np.where(has_window, ev_t - cfg.window + 1, -1),
        "window_end": np.where(has_window, ev_t, -1), "cluster": cluster, "distance": distance,
    })

    t0 = time.perf_counter()
    fitted = np.zeros(inputs.ends.shape, dtype=bool)
    fitted[ev_a[fit], ev_t[fit]] = True
    rng = np.random.default_rng(cfg.seed)
    rows, base = [], {}
    for name, mask in populations(inputs, test_idx, h, fitted).items():
        a, t = np.nonzero(mask)
        if len(a) == 0:
            continue
        if cfg.scan_max is not None and len(a) > cfg.scan_max:
            pick = np.sort(rng.choice(len(a), cfg.scan_max, replace=False))
            a, t = a[pick], t[pick]
        pattern = scan(inputs, model, a, t, cfg.chunk)
        move = inputs.move[a, t]
        base[name] = {**rate(move, a, t, h, T), "start": str(index[t.min()]), "end": str(index[t.max()]),
                      "matched_share": float(np.mean(pattern >= 0))}
        event_sample = fit if name == "in_sample" else test
        for c in range(model.n_patterns):
            m = pattern == c
            r = rate(move[m], a[m], t[m], h, T)
            rows.append({
                "cluster": c, "sample": name, "n_events": int(np.sum(event_sample & (cluster == c))),
                "radius": float(model.radii_[c]), "n_matches": r["n"], "n_eff": r["n_eff"], "hits": r["hits"],
                "hit_rate": r["rate"], "hit_lo": r["lo"], "hit_hi": r["hi"], "base_rate": base[name]["rate"],
                "base_lo": base[name]["lo"], "base_hi": base[name]["hi"],
                "lift": r["rate"] / base[name]["rate"] if base[name]["rate"] > 0 else float("nan"),
                "ci_excludes_base": bool(r["n"] > 0 and not r["lo"] <= base[name]["rate"] <= r["hi"]),
            })
    timings["rates_s"] = time.perf_counter() - t0
    split = {"test_start": str(index[test_idx]) if test_idx < T else None, "fit_end": str(fit_end),
             "n_bars": T, "test_bars": T - test_idx,
             "test_events_matched_share": float(np.mean(cluster[test] >= 0)) if test.any() else None}
    return PatternResult(cfg, inputs, model, events, fit_windows, pd.DataFrame(rows), base, split, timings)


def result_summary(result: PatternResult) -> dict:
    """JSON-able summary of a mining run (counts, split, chosen k, rates, scaler)."""
    ev, model, inputs = result.events, result.model, result.inputs
    return {
        "config": asdict(result.config),
        "split": result.split,
        "indicators": inputs.names,
        "events": {
            "total": int(len(ev)),
            "by_sample": {str(k): int(v) for k, v in ev["sample"].value_counts().items()},
            "without_window": int((~ev["has_window"]).sum()),
            "per_asset": {str(k): int(v) for k, v in ev["asset"].value_counts().sort_index().items()},
        },
        "n_clusters": model.n_patterns,
        "silhouette_by_k": {str(k): round(v, 4) for k, v in model.k_scores_.items()},
        "pca_explained_variance": [round(float(v), 4) for v in model.pca_.explained_variance_ratio_],
        "radii": [round(float(r), 4) for r in model.radii_],
        "base_rates": result.base,
        "patterns": result.table.to_dict(orient="records"),
        "scaler": {**inputs.scaler.to_state(), "cum_ret_scale": inputs.cum_scale},
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
