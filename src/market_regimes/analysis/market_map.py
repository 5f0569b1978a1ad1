"""The graph view of the market: sparse partial correlations, groups found on them, 2-D layouts.

``graph_groups``: daily log returns, each asset standardised (a missing day counts as the asset's
mean, i.e. 0 after standardising), go into ``GraphicalLassoCV``, which picks the sparsity penalty
by cross-validation. Its sparse precision matrix P gives the partial correlations
``-P_ij / sqrt(P_ii P_jj)`` (the network edges); affinity propagation runs on the matching
regularised correlation matrix (``covariance_``), so the number of groups is not preset. Its
preference (how readily an asset is its own exemplar) is ``preference`` if given, else the median
similarity (scikit-learn's default) floored at ``min_preference``. An asset whose regularised
correlation with every other asset stays below the preference then ends up as its own exemplar, so
in a market of a few correlated blocks plus unrelated assets (median correlation ~0) the unrelated
ones are not absorbed into a block by sampling noise; on real coins the median (0.25-0.4) is above
the floor and decides.

``embed_assets``: the market map's 2-D layout, ``LocallyLinearEmbedding`` of the assets' return
series; with fewer than 4 assets, or when LLE fails or collapses, PCA of the same series.
``feature_maps``: PCA, t-SNE (perplexity min(configured, (A - 1) / 3), at least 1) and UMAP when
``umap-learn`` is importable, of the standardised features.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class GraphResult:
    labels: np.ndarray         # (A,) affinity-propagation groups
    covariance: np.ndarray     # (A, A) regularised correlation of standardised returns
    partial_corr: np.ndarray   # (A, A) from the sparse precision; diagonal 0
    alpha: float               # penalty chosen by cross-validation
    preference: float          # affinity-propagation preference used
    converged: bool


def standardised_returns(returns: pd.DataFrame) -> np.ndarray:
    """(D, A) returns scaled to zero mean and unit variance per asset; missing days -> 0."""
    x = returns.to_numpy(dtype=float)
    sd = np.nanstd(x, axis=0)
    x = (x - np.nanmean(x, axis=0)) / np.where(sd > 0, sd, 1.0)
    return np.nan_to_num(x, nan=0.0)


def partial_correlations(precision: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(precision))
    pc = -precision / np.outer(d, d)
    np.fill_diagonal(pc, 0.0)
    return pc


def graph_groups(returns: pd.DataFrame, cv: int = 5, max_iter: int = 200, seed: int = 0,
                 preference: float | None = None, min_preference: float = 0.2) -> GraphResult:
    """Sparse inverse covariance (GraphicalLassoCV) and affinity-propagation groups (module docstring)."""
    from sklearn.cluster import AffinityPropagation
    from sklearn.covariance import GraphicalLasso, GraphicalLassoCV
    from sklearn.exceptions import ConvergenceWarning

    x = standardised_returns(returns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # -inf CV scores of too-small penalties (those are not chosen)
        try:
            model = GraphicalLassoCV(cv=min(cv, len(x)), max_iter=max_iter).fit(x)
            alpha = float(model.alpha_)
        except (FloatingPointError, ValueError) as err:  # ill-conditioned: fall back to a firm penalty
            log.warning("GraphicalLassoCV failed (%s); using GraphicalLasso(alpha=0.5)", err)
            model, alpha = GraphicalLasso(alpha=0.5, max_iter=max_iter).fit(x), 0.5
        sim = model.covariance_
        if preference is None:
            preference = max(float(np.median(sim)), min_preference)
        labels, converged = None, False
        for damping in (0.5, 0.9):
            ap = AffinityPropagation(affinity="precomputed", damping=damping, max_iter=1000, preference=preference,
                                     random_state=seed)
            labels = ap.fit(sim).labels_
            converged = bool((labels >= 0).all()) and ap.n_iter_ < 1000
            if converged:
                break
    if not (labels >= 0).all():
        log.warning("affinity propagation did not converge; every asset put in one group")
        labels = np.zeros(len(labels), dtype=np.intp)
    return GraphResult(np.asarray(labels, dtype=np.intp), sim, partial_correlations(model.precision_),
                       alpha, float(preference), converged)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    xy = u[:, :2] * s[:2]
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def embed_assets(returns: pd.DataFrame, n_neighbors: int = 6, seed: int = 0) -> tuple[np.ndarray, str]:
    """(A, 2) layout of the assets for the market map and the method that made it."""
    from sklearn.manifold import LocallyLinearEmbedding

    x = standardised_returns(returns).T  # (A, D): one row per asset
    if len(x) < 4:
        return _pca_2d(x), "pca (fewer than 4 assets)"
    k = int(min(n_neighbors, len(x) - 1))
    try:
        xy = LocallyLinearEmbedding(n_components=2, n_neighbors=k, eigen_solver="dense",
                                    random_state=seed).fit_transform(x)
        if np.isfinite(xy).all() and (xy.std(axis=0) > 1e-9 * max(np.abs(xy).max(), 1e-300)).all():
            return xy, f"lle (n_neighbors={k})"
        reason = "collapsed layout"
    except (ValueError, np.linalg.LinAlgError) as err:
        reason = str(err).splitlines()[0]
    log.info("LocallyLinearEmbedding not usable (%s); market map laid out by PCA", reason)
    return _pca_2d(x), f"pca (lle: {reason})"


def feature_maps(z: np.ndarray, seed: int = 0, perplexity: float = 30.0, use_umap: bool = True) -> dict:
    """name -> (A, 2) map of standardised features: 'pca', 'tsne' and, if importable, 'umap'."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(z)
    out = {"pca": _pca_2d(z)}
    explained = PCA(n_components=min(2, *z.shape)).fit(z).explained_variance_ratio_
    out["pca_explained"] = explained
    perp = float(max(1.0, min(perplexity, (n - 1) / 3)))
    with threadpool_limits(1, user_api="openmp"):  # a few dozen points: thread start-up costs more than the work
        out["tsne"] = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)
    out["tsne_perplexity"] = perp
    if use_umap:
        try:
            import umap  # optional extra: pip install umap-learn
        except ImportError:
            log.info("umap-learn is not installed; skipping the UMAP map (pip install umap-learn)")
        else:
            out["umap"] = umap.UMAP(n_neighbors=int(min(15, n - 1)), random_state=seed).fit_transform(z)
    return out
