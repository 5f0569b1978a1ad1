"""Regimes stage: cluster autoencoder latents into market regimes and keep their ids stable.

    latents (N, D) + sequence lengths -> clusterer (k-means | GMM | jump model | HMM) -> labels
    -> canonical_order / align_to_reference -> relabel, so regime ids mean the same across fits.

``clusterers`` holds the estimators, ``labels`` the id bookkeeping, ``selection`` the choice of K.
"""

from __future__ import annotations

from typing import Any

from market_regimes.errors import ConfigError
from market_regimes.regimes.clusterers import (
    GMMRegimes,
    JumpRegimes,
    KMeansRegimes,
    NotFittedError,
    RegimeClusterer,
)
from market_regimes.regimes.hmm import HMMRegimes
from market_regimes.regimes.labels import (
    align_centroids,
    align_to_reference,
    apply_mapping,
    canonical_order,
    relabel,
    sequence_lengths,
)

__all__ = [
    "CLUSTERERS",
    "GMMRegimes",
    "HMMRegimes",
    "JumpRegimes",
    "KMeansRegimes",
    "NotFittedError",
    "RegimeClusterer",
    "SelectionResult",
    "align_centroids",
    "align_to_reference",
    "apply_mapping",
    "canonical_order",
    "clusterer_from_state",
    "make_clusterer",
    "relabel",
    "select_n_regimes",
    "sequence_lengths",
]


CLUSTERERS: dict[str, type[RegimeClusterer]] = {
    c.kind: c for c in (KMeansRegimes, GMMRegimes, JumpRegimes, HMMRegimes)
}


def __getattr__(name: str):
    # model selection needs scikit-learn's metrics; imported on first use (inference never does)
    if name in ("SelectionResult", "select_n_regimes"):
        from market_regimes.regimes import selection

        return getattr(selection, name)
    raise AttributeError(name)


def make_clusterer(name: str, n_regimes: int, **params: Any) -> RegimeClusterer:
    """Unfitted clusterer by name ("kmeans", "gmm", "jump", "hmm") with ``n_regimes`` and extra params."""
    if name not in CLUSTERERS:
        raise ConfigError(f"unknown clusterer {name!r}; known: {', '.join(sorted(CLUSTERERS))}")
    try:
        return CLUSTERERS[name](n_regimes=n_regimes, **params)
    except TypeError as err:
        raise ConfigError(f"bad parameters for clusterer {name!r}: {err}") from None


def clusterer_from_state(state: dict[str, Any]) -> RegimeClusterer:
    """Fitted clusterer from any ``to_state()`` dict, dispatching on its ``kind``."""
    kind = state.get("kind")
    if kind not in CLUSTERERS:
        raise ConfigError(f"state has unknown clusterer kind {kind!r}; known: {', '.join(sorted(CLUSTERERS))}")
    return CLUSTERERS[kind].from_state(state)
