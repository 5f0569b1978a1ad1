"""Making regime ids mean the same thing across fits.

A mapping is an int array ``perm`` with ``perm[old_label] = new_label``. ``canonical_order`` sorts
regimes by a key (realised volatility: regime 0 is the calmest); ``align_to_reference`` and
``align_centroids`` match a new fit to an earlier one (walk-forward refits, drift checks) with the
Hungarian algorithm; ``relabel`` applies a mapping to a fitted clusterer so that its predictions
come out in the new ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from market_regimes.errors import DataError


def _labels(labels: Any, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name} must be a 1-D integer array, got dtype {arr.dtype} and shape {arr.shape}")
    return arr.astype(np.intp, copy=False)


def _n_labels(labels: np.ndarray, n: int | None, name: str) -> int:
    top = int(labels.max()) + 1 if labels.size else 0
    if n is None:
        return top
    if top > n:
        raise DataError(f"{name} contains label {top - 1} but n_regimes is {n}")
    return int(n)


def canonical_order(labels: Any, key: Any, n_regimes: int) -> np.ndarray:
    """``perm`` ordering regimes by ascending mean of ``key`` over their rows (regime 0: lowest).

    labels, key: (N,) aligned per row; labels < 0 and non-finite keys are ignored. Regimes without
    any counted row go last, in their old order.
    """
    lab = _labels(labels, "labels")
    k = _n_labels(lab, n_regimes, "labels")
    key = np.asarray(key, dtype=np.float64)
    if key.shape != lab.shape:
        raise DataError(f"key has shape {key.shape}, labels {lab.shape}: they must be aligned per row")
    ok = (lab >= 0) & np.isfinite(key)
    sums = np.bincount(lab[ok], weights=key[ok], minlength=k)
    counts = np.bincount(lab[ok], minlength=k)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    order = np.argsort(means, kind="stable")  # old labels, calmest first
    perm = np.empty(k, dtype=np.intp)
    perm[order] = np.arange(k)
    return perm


def apply_mapping(labels: Any, perm: Any) -> np.ndarray:
    """New labels ``perm[labels]``; labels < 0 (unlabelled) are kept as they are."""
    lab = _labels(labels, "labels")
    perm = np.asarray(perm, dtype=np.intp)
    if lab.size and lab.max() >= len(perm):
        raise DataError(f"label {int(lab.max())} has no entry in a mapping of length {len(perm)}")
    out = lab.copy()
    known = lab >= 0
    out[known] = perm[lab[known]]
    return out


def relabel(estimator: Any, perm: Any) -> Any:
    """Permute a fitted clusterer in place (``perm[old] = new``) and return it.

    perm must be a permutation of 0..K-1; afterwards every ``predict*`` gives ``perm[old output]``
    (probability columns move accordingly).
    """
    return estimator.permute_(perm)


def _matching_to_perm(new_ids: np.ndarray, ref_ids: np.ndarray, n_new: int, n_ref: int) -> np.ndarray:
    """Matched new labels take their reference id; the rest take the unused ids in ascending order."""
    perm = np.full(n_new, -1, dtype=np.intp)
    perm[new_ids] = ref_ids
    unmatched = np.flatnonzero(perm < 0)
    free = np.setdiff1d(np.arange(max(n_new, n_ref)), ref_ids)
    perm[unmatched] = free[: unmatched.size]
    return perm


def align_to_reference(ref_labels: Any, new_labels: Any, n_regimes: int | None = None,
                       n_ref_regimes: int | None = None) -> np.ndarray:
    """``perm`` for the new labelling that maximises its overlap with the reference labelling.

    Both label the same N rows; rows where either is < 0 are ignored. ``n_regimes`` (new) and
    ``n_ref_regimes`` default to max label + 1. With more new regimes than reference ones the
    unmatched new regimes get the ids ``n_ref_regimes, ...``; with fewer, the result maps into the
    reference ids (not a permutation of 0..n_regimes-1, so it cannot ``relabel`` an estimator).
    """
    ref, new = _labels(ref_labels, "ref_labels"), _labels(new_labels, "new_labels")
    if ref.shape != new.shape:
        raise DataError(f"ref_labels {ref.shape} and new_labels {new.shape} must label the same rows")
    n_new = _n_labels(new, n_regimes, "new_labels")
    n_ref = _n_labels(ref, n_ref_regimes, "ref_labels")
    both = (ref >= 0) & (new >= 0)
    overlap = np.bincount(new[both] * n_ref + ref[both], minlength=n_new * n_ref).reshape(n_new, n_ref)
    from scipy.optimize import linear_sum_assignment  # here, not at import: keeps inference start-up fast

    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return _matching_to_perm(rows, cols, n_new, n_ref)


def align_centroids(ref_centroids: Any, new_centroids: Any) -> np.ndarray:
    """``perm`` for new centroids (K_new, D) minimising the total Euclidean distance to the
    reference centroids (K_ref, D); unmatched regimes as in ``align_to_reference``."""
    ref = np.asarray(ref_centroids, dtype=np.float64)
    new = np.asarray(new_centroids, dtype=np.float64)
    if ref.ndim != 2 or new.ndim != 2 or ref.shape[1] != new.shape[1]:
        raise DataError(f"centroids must be (K, D) with the same D, got {ref.shape} and {new.shape}")
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rows, cols = linear_sum_assignment(cdist(new, ref))
    return _matching_to_perm(rows, cols, len(new), len(ref))


def sequence_lengths(asset_idx: np.ndarray, end_idx: np.ndarray, step: int = 1) -> np.ndarray:
    """Run lengths of keys (sorted by asset, then time) that follow each other by ``step`` bars."""
    if len(end_idx) == 0:
        return np.zeros(0, dtype=np.int64)
    brk = np.ones(len(end_idx), dtype=bool)
    brk[1:] = (asset_idx[1:] != asset_idx[:-1]) | (end_idx[1:] - end_idx[:-1] != step)
    starts = np.flatnonzero(brk)
    return np.diff(np.append(starts, len(end_idx)))
