"""Agreement of causal labels with known regimes, and summaries over seeds.

Labels are matched to the true regimes one to one (Hungarian matching on the scored bars, as
``training.truth_agreement`` does); a found regime without a partner counts as wrong for every
bar it labels, so choosing too many regimes costs accuracy. Labels < 0 (no label yet) and bars
outside the mask are not scored.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from market_regimes.regimes import align_to_reference


def agreement(truth: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, per-true-regime recall and ARI of ``labels`` vs ``truth``.

    truth: (T,) ints; labels: (T,) or (T, A) ints (a market-wide truth is compared with every
    asset's labels); mask: (T,) bars to score. ``balanced_accuracy`` is None when the scored
    bars hold a single true regime (it would only be that regime's recall).
    """
    lab = np.asarray(labels)
    lab = lab[:, None] if lab.ndim == 1 else lab
    tru = np.broadcast_to(np.asarray(truth)[:, None], lab.shape)
    ok = lab >= 0
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)[:, None]
    y, p = tru[ok].astype(np.int64), lab[ok].astype(np.int64)
    if len(y) == 0:
        return {"n": 0}
    k_true = int(y.max()) + 1
    perm = align_to_reference(y, p, int(p.max()) + 1, k_true)
    hit = perm[p] == y
    present = np.flatnonzero(np.bincount(y, minlength=k_true))
    recall = {int(k): float(hit[y == k].mean()) for k in present}
    return {"n": int(len(y)), "accuracy": float(hit.mean()),
            "balanced_accuracy": float(np.mean(list(recall.values()))) if len(present) > 1 else None,
            "recall": recall, "ari": float(adjusted_rand_score(y, p)),
            "n_true": int(len(present)), "n_found": int(len(np.unique(p)))}


def summarize(values) -> dict:
    """Mean, standard error and count of the finite values (None ignored)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "se": None, "n": 0}
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se, "n": int(len(v))}
