"""Choosing the number of regimes K from the latents.

``select_n_regimes`` fits ``make_estimator(k)`` for every k in ``k_range`` (inclusive) on at most
``max_samples`` rows (random contiguous blocks of the sequences, so the jump model still sees
sequences) and scores each k. The rules, one per ``criterion``:

* ``"bic"``: Gaussian-mixture BIC (the estimator's own ``bic`` if it has one, else a full-covariance
  ``GMMRegimes``). Not plain argmin, which on real data keeps falling with k: the choice is the
  smallest k whose further improvement ``bic(k) - bic(k+1)`` is below ``BIC_ELBOW_FRACTION`` (5 %)
  of the total improvement ``bic(k_min) - min bic``; the argmin if that comes earlier.
* ``"silhouette"``: silhouette of the estimator's ``predict`` labels on a subsample of at most
  ``SILHOUETTE_SAMPLES`` rows; highest wins.
* ``"stability"``: ``n_repeats`` times, the contiguous blocks are split at random into two halves,
  the estimator is fitted on each half and both predict the whole sample. The two labellings are
  matched (Hungarian) and compared per regime by Jaccard overlap; ``stability`` is the mean over
  repeats of the *worst* regime's overlap (every regime must be reproducible), ``ari`` the mean
  adjusted Rand index; both with standard errors. Merging true regimes is as reproducible as
  finding them, so "most stable" would favour k = 2; the rule, as in Ben-Hur et al. (2002) and
  Tibshirani & Walther's prediction strength (2005), is the *largest* k with ``stability >=
  STABLE_AGREEMENT`` (0.8). Splitting a true regime makes the worst overlap collapse (the halves
  split it differently) while ARI barely moves, hence the worst-regime score. When no k is that
  stable, the k with the highest ARI wins, near-ties (within one standard error of the best)
  going to the smallest k; when even that ARI is below ``MIN_STRUCTURE_ARI`` (0.5) there is no
  reproducible structure and the answer is ``k_min``, with a warning.
* ``"combined"``: computes all three; k is the stability choice when some k reaches
  ``STABLE_AGREEMENT``, otherwise the BIC elbow.
* ``"forecast"``: each k is fitted once on the first 70 % of every sequence and scored by how
  well its causal labels forecast the latent ``horizon`` rows ahead on the held-out rest
  (``regimes/validation.py``); the smallest k within one standard error of the best wins, and
  ``k_min`` when the held-out rest is too short to compare. One fit per k instead of
  ``2 * n_repeats``, and it does not reward splitting a regime into reproducible but
  unpredictive levels, which stability does on one-dimensional inputs.

No rule picks the top of the range merely because a score keeps improving; if the choice is
``k_max`` anyway a warning suggests widening the range.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, silhouette_score

from market_regimes.errors import ConfigError, DataError
from market_regimes.regimes.clusterers import GMMRegimes, as_matrix, check_lengths
from market_regimes.regimes.labels import align_to_reference, apply_mapping
from market_regimes.regimes.validation import FORECAST_HORIZON, choose_by_forecast

CRITERIA = ("bic", "silhouette", "stability", "combined", "forecast")
BIC_ELBOW_FRACTION = 0.05
STABLE_AGREEMENT = 0.8
MIN_STRUCTURE_ARI = 0.5
SILHOUETTE_SAMPLES = 4000
_N_BLOCKS = 40  # contiguous blocks per split (subsampling and stability halves)


@dataclass
class SelectionResult:
    """``best_k``; ``table``: one row per k (index ``k``), one column per computed score."""

    best_k: int
    table: pd.DataFrame
    criterion: str


def select_n_regimes(
    X: Any,
    lengths: Any,
    make_estimator: Callable[[int], Any],
    k_range: tuple[int, int] = (2, 8),
    criterion: str = "stability",
    random_state: int = 0,
    max_samples: int = 20000,
    n_repeats: int = 5,
    horizon: int = FORECAST_HORIZON,
) -> SelectionResult:
    """Choose the number of regimes in ``k_range`` (inclusive) by ``criterion``, see module doc.

    X: (N, D) latents as the concatenation of sequences with the given ``lengths`` (None: one).
    make_estimator(k) must return an unfitted clusterer with ``fit(X, lengths)`` and
    ``predict(X, lengths)``; a ``random_state`` parameter, if any, is reseeded per fit.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    k_min, k_max = (int(k) for k in k_range)
    if not 2 <= k_min <= k_max:
        raise ConfigError(f"k_range must be (k_min, k_max) with 2 <= k_min <= k_max, got {k_range}")
    arr = as_matrix(X)
    lens = check_lengths(lengths, len(arr))
    rng = np.random.default_rng(random_state)
    arr, lens = _subsample(arr, lens, max_samples, rng)
    ks = np.arange(k_min, k_max + 1)
    table = pd.DataFrame(index=pd.Index(ks, name="k"))

    if criterion in ("bic", "combined"):
        table["bic"] = [_unless_unfittable(_bic, np.inf, make_estimator, k, arr, lens, rng) for k in ks]
    if criterion in ("silhouette", "combined"):
        table["silhouette"] = [_unless_unfittable(_silhouette, np.nan, make_estimator, k, arr, lens, rng) for k in ks]
    if criterion in ("stability", "combined"):
        stab = np.array([_unless_unfittable(_stability, (np.nan,) * 4, make_estimator, k, arr, lens, n_repeats, rng)
                         for k in ks])
        for i, column in enumerate(("stability", "stability_se", "ari", "ari_se")):
            table[column] = stab[:, i]

    if criterion == "forecast":
        seed = int(rng.integers(2**31))

        def seeded(k):
            est = make_estimator(int(k))
            if hasattr(est, "get_params") and "random_state" in est.get_params():
                est.set_params(random_state=seed)
            return est

        best, scores = choose_by_forecast(list(ks), seeded, arr, lens, horizon=horizon)
        if scores:
            table["forecast_error"] = [r["forecast_error"] for r in scores]
            table["forecast_excess_se"] = [r["excess_se"] for r in scores]
    elif criterion == "bic":
        best = _bic_elbow(table["bic"])
    elif criterion == "silhouette":  # NaN where a fit used a single regime
        scores = table["silhouette"].dropna()
        best = int(scores.idxmax()) if len(scores) else k_min
    elif criterion == "stability" or (table["stability"] >= STABLE_AGREEMENT).any():
        best = _stable_choice(table)
    else:
        best = _bic_elbow(table["bic"])
    if best == k_max and k_max > k_min:
        warnings.warn(f"chose K={best}, the top of k_range {k_range}: consider widening the range", stacklevel=2)
    return SelectionResult(best_k=int(best), table=table, criterion=criterion)


def _unless_unfittable(score, failed, make_estimator, k, *args):
    """``score(make_estimator, k, *args)``, or ``failed`` (the worst value) with a warning when a
    fit with k regimes is impossible on this sample (a DataError from the estimator, e.g. an HMM
    whose every start collapses a state): that k is then never chosen, the others still are."""
    try:
        return score(make_estimator, k, *args)
    except DataError as err:
        warnings.warn(f"K={k} cannot be fitted on the selection sample ({err}); scored as the worst", stacklevel=3)
        return failed


def _bic_elbow(bic: pd.Series) -> int:
    """Smallest k whose next improvement is < BIC_ELBOW_FRACTION of the total; at most argmin.
    Ks that could not be fitted (infinite BIC) are left out."""
    bic = bic[np.isfinite(bic)]
    if bic.empty:
        raise DataError("no number of regimes in k_range could be fitted on the selection sample")
    k_best = int(bic.idxmin())
    total = bic.iloc[0] - bic.min()
    gains = bic.to_numpy()[:-1] - bic.to_numpy()[1:]  # gains[i]: bic(k_i) - bic(k_i+1)
    small = np.flatnonzero(gains < BIC_ELBOW_FRACTION * total)
    if total > 0 and small.size:
        return min(int(bic.index[small[0]]), k_best)
    return k_best


def _stable_choice(table: pd.DataFrame) -> int:
    stable = table.index[table["stability"] >= STABLE_AGREEMENT]  # NaN (an unfittable K) is never stable
    if len(stable):
        return int(stable.max())
    ari = table["ari"].dropna()
    if ari.empty:
        raise DataError("no number of regimes in k_range could be fitted on the selection sample")
    k_top = ari.idxmax()
    if ari[k_top] < MIN_STRUCTURE_ARI:
        warnings.warn(
            f"no reproducible regimes: best stability ARI {ari[k_top]:.2f} < {MIN_STRUCTURE_ARI};"
            f" returning k_min={ari.index[0]}",
            stacklevel=3,
        )
        return int(ari.index[0])
    near = ari.index[ari >= ari[k_top] - np.nan_to_num(table["ari_se"][k_top])]
    return int(near.min())


def _blocks(lengths: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, sizes) of contiguous blocks of about N / n_blocks rows, never crossing sequences."""
    size = max(1, int(np.ceil(lengths.sum() / n_blocks)))
    seq_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    per_seq = -(-lengths // size)
    starts = np.repeat(seq_starts, per_seq) + size * (np.arange(per_seq.sum()) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq))
    ends = np.minimum(starts + size, np.repeat(seq_starts + lengths, per_seq))
    return starts, ends - starts


def _take(X: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(starts)
    starts, sizes = starts[order], sizes[order]
    rows = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
    return X[rows], sizes


def _subsample(X: np.ndarray, lengths: np.ndarray, max_samples: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_samples`` rows as random contiguous blocks (each block becomes a sequence)."""
    if len(X) <= max_samples:
        return X, lengths
    starts, sizes = _blocks(lengths, max(_N_BLOCKS, int(np.ceil(len(X) / max(max_samples // _N_BLOCKS, 1)))))
    pick = rng.permutation(len(starts))
    keep = pick[: int(np.searchsorted(np.cumsum(sizes[pick]), max_samples, side="right"))]
    return _take(X, starts[keep], sizes[keep])


def _fit(est, X: np.ndarray, lengths: np.ndarray, rng):
    if hasattr(est, "get_params") and "random_state" in est.get_params():
        est.set_params(random_state=int(rng.integers(2**31)))
    return est.fit(X, lengths)


def _bic(make_estimator, k, X, lengths, rng) -> float:
    est = make_estimator(int(k))
    if not hasattr(est, "bic"):
        est = GMMRegimes(int(k))
    return float(_fit(est, X, lengths, rng).bic(X, lengths))


def _silhouette(make_estimator, k, X, lengths, rng) -> float:
    labels = np.asarray(_fit(make_estimator(int(k)), X, lengths, rng).predict(X, lengths))
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(X, labels, sample_size=min(len(X), SILHOUETTE_SAMPLES),
                                  random_state=int(rng.integers(2**31))))


def _stability(make_estimator, k, X, lengths, n_repeats, rng) -> tuple[float, float, float, float]:
    """Worst-regime overlap and ARI (means, standard errors) between fits on two random halves."""
    starts, sizes = _blocks(lengths, _N_BLOCKS)
    scores = []
    for _ in range(n_repeats):
        order = rng.permutation(len(starts))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        a, b = (
            np.asarray(_fit(make_estimator(int(k)), *_take(X, starts[h], sizes[h]), rng).predict(X, lengths))
            for h in halves
        )
        scores.append((_worst_overlap(a, b, int(k)), adjusted_rand_score(a, b)))
    scores = np.asarray(scores)
    means = scores.mean(axis=0)
    se = scores.std(axis=0, ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else np.full(2, np.nan)
    return float(means[0]), float(se[0]), float(means[1]), float(se[1])


def _worst_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Min over regimes of |A_r & B_r| / |A_r | B_r| once b is matched to a (regimes empty in both skipped)."""
    b = apply_mapping(b, align_to_reference(a, b, k, k))
    inter = np.bincount(a[a == b], minlength=k)
    union = np.bincount(a, minlength=k) + np.bincount(b, minlength=k) - inter
    return float((inter[union > 0] / union[union > 0]).min())
