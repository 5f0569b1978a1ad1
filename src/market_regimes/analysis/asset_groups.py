"""Clustering assets by their behavioural profile, naming the groups, and what to do with them.

Input is the (A, F) table of ``asset_profile``; clusterers see it standardised (``standardise``).

Choosing k for k-means (``select_k``). The elbow is the knee of the inertia curve over
k = 1..k_max: with k and inertia both scaled to [0, 1], the k whose point lies farthest below the
straight line from the first to the last point. Rule ``combined`` (default): the elbow sets the
scale and the silhouette refines it, k = the best silhouette among elbow - k_window .. elbow +
k_window (a knee on a smooth curve is only located to about one k). ``elbow`` and ``silhouette``
(the best over the whole range, which on real coins tends to be k = 2: one outlier group against
the rest) use one criterion alone.

DBSCAN's eps (``dbscan_groups``) comes from the k-distance heuristic: each asset's distance to its
``min_samples``-th nearest asset (itself counted, as scikit-learn counts ``min_samples``), sorted
ascending; eps is the distance at the knee of that curve (same knee rule), or the median
k-distance when the curve has no knee. Assets labelled -1 are noise.

Group ids of every clusterer are put in a canonical order: 0 is the group with the lowest mean
annualised volatility. Names (``name_groups``) are data-driven: a group's profile is the mean of
its members' standardised features; a tag applies when every feature it needs is beyond
``threshold`` in its direction (score = the smallest such margin). Two-feature tags are taken
first, then one-feature tags by score, skipping any tag that reuses a feature already described,
up to ``max_tags`` tags; no tag gives "market-average". Duplicate names get one more tag, then a
" #n" suffix in group order, so names are unique and deterministic.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from market_regimes.analysis.asset_profile import FEATURES
from market_regimes.errors import ConfigError
from market_regimes.regimes.labels import align_to_reference, apply_mapping, canonical_order

log = logging.getLogger(__name__)

LOG_FEATURES = frozenset({"quote_volume"})  # clustered as log10: volumes span orders of magnitude

TAGS: tuple[tuple[str, dict[str, int]], ...] = (  # name, {feature: +1 high / -1 low}
    ("high-beta", {"ann_vol": 1, "corr_ref": 1}),
    ("blue-chip", {"quote_volume": 1, "ann_vol": -1}),
    ("defensive", {"ann_vol": -1, "max_drawdown": -1}),
    ("decorrelated", {"corr_ref": -1}),
    ("high-correlation", {"corr_ref": 1}),
    ("momentum leaders", {"momentum": 1}),
    ("momentum laggards", {"momentum": -1}),
    ("high-vol", {"ann_vol": 1}),
    ("low-vol", {"ann_vol": -1}),
    ("liquid", {"quote_volume": 1}),
    ("illiquid", {"quote_volume": -1}),
    ("high-Sharpe", {"sharpe": 1}),
    ("low-Sharpe", {"sharpe": -1}),
    ("fat-tailed", {"kurtosis": 1}),
    ("trending", {"trend_r2": 1}),
    ("deep-drawdown", {"max_drawdown": 1}),
)


def standardise(features: pd.DataFrame, names=FEATURES, clip: float | None = 3.0) -> pd.DataFrame:
    """(A, F) z-scores across assets (ddof 0) of the named columns; ``LOG_FEATURES`` as log10 first.

    A missing value takes the column median; a constant column is all 0; values clipped to +-clip.
    """
    unknown = [n for n in names if n not in features.columns]
    if unknown:
        raise ConfigError(f"unknown asset feature(s) {unknown}; known: {list(FEATURES)}")
    x = features[list(names)].astype(float).copy()
    for col in LOG_FEATURES.intersection(x.columns):
        x[col] = np.log10(x[col].clip(lower=1e-12))
    missing = x.isna()
    if missing.any().any():
        log.info("filled %d missing feature value(s) with the column median", int(missing.sum().sum()))
        x = x.fillna(x.median()).fillna(0.0)
    sd = x.std(ddof=0)
    z = (x - x.mean()) / sd.where(sd > 1e-12, np.inf)
    return z.clip(-clip, clip) if clip else z


def knee_index(y) -> int | None:
    """Index of the point farthest below the chord from the first to the last point of a convex
    curve (decreasing like inertia, or increasing like sorted k-distances); None if none lies below."""
    y = np.asarray(y, dtype=float)
    if len(y) < 3 or np.ptp(y) <= 0:
        return None
    x = np.linspace(0.0, 1.0, len(y))
    yn = (y - y.min()) / np.ptp(y)
    chord = yn[0] + (yn[-1] - yn[0]) * x
    gap = chord - yn
    i = int(np.argmax(gap))
    return i if gap[i] > 1e-9 else None


def kmeans_table(z: np.ndarray, k_min: int, k_max: int, n_init: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """k-means for k = k_min..min(k_max, A - 1): inertia, silhouette, Davies-Bouldin and
    Calinski-Harabasz per k (table indexed by k) and the labels of each fit."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
    from threadpoolctl import threadpool_limits

    top = min(k_max, len(z) - 1)
    if top < max(k_min, 2):
        raise ConfigError(f"k-means needs 2 <= k_min <= k_max < n_assets; got k_min={k_min}, "
                          f"k_max={k_max} with {len(z)} assets")
    rows, labels = [], {}
    for k in range(max(k_min, 2), top + 1):
        with threadpool_limits(1, user_api="openmp"):  # one row per asset: OpenMP start-up costs 10x the work
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)
        lab = km.labels_
        labels[k] = lab
        distinct = len(np.unique(lab)) > 1
        rows.append({"k": k, "inertia": float(km.inertia_),
                     "silhouette": silhouette_score(z, lab) if distinct else np.nan,
                     "davies_bouldin": davies_bouldin_score(z, lab) if distinct else np.nan,
                     "calinski_harabasz": calinski_harabasz_score(z, lab) if distinct else np.nan})
    return pd.DataFrame(rows).set_index("k"), labels


def select_k(table: pd.DataFrame, total_ss: float, rule: str = "combined", window: int = 1) -> dict:
    """{'k', 'k_elbow', 'k_silhouette'} from a ``kmeans_table``; ``total_ss`` is the k = 1 inertia."""
    if rule not in ("combined", "elbow", "silhouette"):
        raise ConfigError(f"kmeans.k_rule={rule!r}; use combined, elbow or silhouette")
    ks = [1, *table.index]
    knee = knee_index([total_ss, *table["inertia"]])
    k_elbow = int(ks[knee]) if knee is not None else int(table.index[0])
    sil = table["silhouette"]
    k_sil = int(sil.idxmax()) if sil.notna().any() else k_elbow
    near = sil[(sil.index >= k_elbow - window) & (sil.index <= k_elbow + window)]
    k = {"elbow": k_elbow, "silhouette": k_sil,
         "combined": int(near.idxmax()) if near.notna().any() else k_elbow}[rule]
    return {"k": k, "k_elbow": k_elbow, "k_silhouette": k_sil}


def dbscan_groups(z: np.ndarray, min_samples: int) -> tuple[np.ndarray, float]:
    """DBSCAN labels (-1 = noise) and the eps the k-distance heuristic chose."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    m = int(min(max(min_samples, 2), len(z)))
    kdist = np.sort(NearestNeighbors(n_neighbors=m).fit(z).kneighbors(z)[0][:, -1])
    knee = knee_index(kdist)
    eps = max(float(kdist[knee] if knee is not None else np.median(kdist)), 1e-9)
    return DBSCAN(eps=eps, min_samples=m).fit_predict(z), eps


def ward_groups(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ward hierarchical clustering cut into ``k`` groups: (labels 0..k-1, scipy linkage matrix)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(z, method="ward")
    return fcluster(tree, t=k, criterion="maxclust") - 1, tree


def canonical(labels, ann_vol) -> np.ndarray:
    """Labels renumbered so that group 0 has the lowest mean ``ann_vol``; -1 (noise) stays."""
    lab = np.asarray(labels, dtype=np.intp)
    if not (lab >= 0).any():
        return lab
    perm = canonical_order(lab, np.asarray(ann_vol, dtype=float), int(lab.max()) + 1)
    return apply_mapping(lab, perm)


def name_groups(z: pd.DataFrame, labels, threshold: float = 0.5, max_tags: int = 2) -> dict[int, str]:
    """Group id -> unique name from its profile (rule in the module docstring); -1 -> "noise"."""
    lab = np.asarray(labels)
    ids = sorted(int(g) for g in np.unique(lab) if g >= 0)
    tags = {}
    for g in ids:
        profile = z[lab == g].mean()
        found = []
        for name, need in TAGS:
            if all(f in profile.index for f in need):
                score = min(sign * profile[f] for f, sign in need.items())
                if score > threshold:
                    found.append((-len(need), -score, name, set(need)))
        chosen, used = [], set()
        for _, _, name, feats in sorted(found, key=lambda t: (t[0], t[1])):
            if not feats & used:
                chosen.append(name)
                used |= feats
        tags[g] = chosen
    names = {g: ", ".join(tags[g][:max_tags]) or "market-average" for g in ids}

    def duplicated() -> list[int]:
        counts = pd.Series(names, dtype=object).value_counts()
        return [g for g in ids if counts[names[g]] > 1]

    for g in duplicated():
        names[g] = ", ".join(tags[g][: max_tags + 1]) or names[g]
    base = {g: names[g] for g in duplicated()}
    for g, name in base.items():
        names[g] = f"{name} #{[h for h in base if base[h] == name].index(g) + 1}"
    if (lab < 0).any():
        names[-1] = "noise"
    return names


def group_table(groups: pd.Series, names: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame({"group": groups.to_numpy(), "group_name": groups.map(names).to_numpy(),
                         "asset": groups.index})


def picks(features: pd.DataFrame, groups: pd.Series, names: dict[int, str], per_group: int = 2) -> pd.DataFrame:
    """Up to ``per_group`` assets per group (noise skipped): the best mean of within-group
    percentile ranks of Sharpe and of quote volume (ties: higher Sharpe)."""
    df = group_table(groups, names).join(features[["sharpe", "quote_volume"]], on="asset")
    df = df[df["group"] >= 0]
    by = df.groupby("group")
    df["score"] = (by["sharpe"].rank(pct=True) + by["quote_volume"].rank(pct=True)) / 2
    df = df.sort_values(["group", "score", "sharpe", "asset"], ascending=[True, False, False, True])
    return df.groupby("group").head(per_group).reset_index(drop=True)


def laggards(features: pd.DataFrame, groups: pd.Series, names: dict[int, str], margin: float = 0.05,
             min_size: int = 3) -> pd.DataFrame:
    """Members of groups with >= ``min_size`` assets whose momentum is below the group median by
    more than ``margin`` (log return); gap = momentum - group median."""
    df = group_table(groups, names).join(features[["momentum"]], on="asset")
    df = df[df["group"] >= 0]
    by = df.groupby("group")["momentum"]
    df["group_median"] = by.transform("median")
    df["gap"] = df["momentum"] - df["group_median"]
    keep = (by.transform("size") >= min_size) & (df["gap"] < -margin)
    return df[keep].sort_values(["group", "gap"]).reset_index(drop=True)


def align_labels(reference: pd.Series, new: pd.Series) -> pd.Series:
    """``new`` (asset -> group) renumbered to overlap most with ``reference`` on their common assets
    (Hungarian matching on membership counts); unmatched groups get unused ids; -1 stays -1."""
    new_arr = new.to_numpy(dtype=np.intp)
    if not (new_arr >= 0).any():
        return new.copy()
    ref_arr = reference.reindex(new.index).fillna(-1).to_numpy(dtype=np.intp)
    n_ref = int(max(ref_arr.max(), reference.max(), -1)) + 1
    perm = align_to_reference(ref_arr, new_arr, int(new_arr.max()) + 1, max(n_ref, 1))
    return pd.Series(apply_mapping(new_arr, perm), index=new.index, name=new.name)


def membership_moves(history: list[tuple[pd.Timestamp, pd.Series, dict[int, str]]]) -> pd.DataFrame:
    """Assets whose (aligned) group changes between consecutive dates of ``history``
    [(date, asset -> group, group names)], counting assets present at both dates."""
    rows = []
    for (_, prev, prev_names), (date, cur, cur_names) in zip(history[:-1], history[1:]):
        common = prev.index.intersection(cur.index)
        moved = common[prev[common].to_numpy() != cur[common].to_numpy()]
        rows += [{"month": date, "asset": a, "from_group": int(prev[a]), "to_group": int(cur[a]),
                  "from_name": prev_names.get(int(prev[a]), ""), "to_name": cur_names.get(int(cur[a]), "")}
                 for a in moved]
    return pd.DataFrame(rows, columns=["month", "asset", "from_group", "to_group", "from_name", "to_name"])
