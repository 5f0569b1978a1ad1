"""Established regime methods the project is measured against, each labelling causally.

Every anchor is an estimator with ``fit(X)`` on the training rows of one sequence (rows in time
order) and ``predict_online(X)``: the label of row t depends on rows <= t only.

* :class:`FilteredHMM`: Gaussian HMM fitted by EM with ``hmmlearn`` (best of ``n_init`` starts);
  labels are the argmax of the *forward filter* P(s_t | x_1..x_t) computed from the fitted
  start, transition and emission parameters (not the smoothed posterior, which looks ahead).
  Kept apart from the project's ``regimes.hmm.HMMRegimes`` on purpose: the anchor is the plain
  textbook method (EM's own start probabilities, unbounded memory), an independent reference.
* :class:`PackageJumpModel`: the statistical jump model of the ``jumpmodels`` package, labelled
  with its own ``predict_online``; inputs clipped at 3 standard deviations and standardised with
  the package's preprocessors fitted on the training rows (:func:`jumpmodels_preprocessor`), as
  in the package's examples.
* :func:`oracle_filter`: the forward filter with the true parameters (simulations only), a
  ceiling for causal labelling rather than a method.
* :class:`KMeansAnchor`: scikit-learn k-means on hand-made features; per row, hence causal.
* :class:`WassersteinKMeans`: Horvath, Issa and Muguruza (2021). Windows of ``window`` returns are
  sorted (their empirical quantile functions); the distance of two windows is the mean absolute
  difference of the sorted values (the 1-Wasserstein distance of equal-size empirical measures)
  and a cluster's barycentre is the per-quantile median. Fitted on training windows every
  ``step`` bars; bar t is labelled by the barycentre nearest to the window ending at t.

``jumpmodels`` is the optional extra ``benchmarks`` (``hmmlearn`` is a dependency of the package);
:func:`require` stops with a one-line message naming the install command when one is missing.
"""

from __future__ import annotations

import importlib

import numpy as np

from market_regimes.errors import ConfigError

INSTALL_HINT = 'pip install -e ".[benchmarks]"  (or: pip install jumpmodels)'


def require(package: str):
    """Import an anchor's package or stop with a ConfigError that says how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"the regime benchmark needs the package {package!r}, which is not installed: "
                          f"{INSTALL_HINT}") from None


def _as_2d(X) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    return arr[:, None] if arr.ndim == 1 else arr


class _Standardised:
    """Mean/std standardisation fitted on the training rows (zero spread -> scale 1)."""

    def _fit_scale(self, X: np.ndarray) -> np.ndarray:
        self.mean_, sd = X.mean(axis=0), X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        return self._scale(X)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_


# ----------------------------------------------------------------------------- Gaussian HMM
def forward_filter(log_emission: np.ndarray, start: np.ndarray, transmat: np.ndarray) -> np.ndarray:
    """(N, K) P(s_t | x_1..x_t) of an HMM from (N, K) emission log densities (normalised each step)."""
    emit = np.exp(log_emission - log_emission.max(axis=1, keepdims=True))
    out = np.empty_like(emit)
    prior = np.asarray(start, dtype=np.float64)
    for t in range(len(emit)):  # a recursion over time; K is small
        post = prior * emit[t]
        total = post.sum()
        post = post / total if total > 0 else np.full(len(post), 1.0 / len(post))
        out[t] = post
        prior = post @ transmat
    return out


def oracle_filter(returns, means, vols, transmat) -> np.ndarray:
    """(T,) labels of the forward filter with the *true* parameters of a Gaussian regime model,
    started from the stationary distribution: the best any causal labelling can do on average."""
    from market_regimes.data.synthetic import stationary_distribution

    r = np.asarray(returns, dtype=np.float64)[:, None]
    mu, sd = np.asarray(means)[None, :], np.asarray(vols)[None, :]
    log_e = -0.5 * ((r - mu) / sd) ** 2 - np.log(sd)
    A = np.asarray(transmat, dtype=np.float64)
    return forward_filter(log_e, stationary_distribution(A), A).argmax(axis=1)


class FilteredHMM(_Standardised):
    """hmmlearn ``GaussianHMM`` with forward-filter labels; see the module docstring."""

    def __init__(self, n_regimes: int = 2, covariance_type: str = "full", n_init: int = 5, n_iter: int = 200,
                 random_state: int = 0):
        self.n_regimes = n_regimes
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.n_iter = n_iter
        self.random_state = random_state

    def fit(self, X) -> "FilteredHMM":
        hmm = require("hmmlearn.hmm")
        Z = self._fit_scale(_as_2d(X))
        rng = np.random.default_rng(self.random_state)
        best = None
        for _ in range(max(int(self.n_init), 1)):
            model = hmm.GaussianHMM(self.n_regimes, covariance_type=self.covariance_type, n_iter=self.n_iter,
                                    tol=1e-4, random_state=int(rng.integers(2**31)))
            try:
                model.fit(Z)
                score = model.score(Z)
            except (ValueError, np.linalg.LinAlgError):  # degenerate start (e.g. an empty state)
                continue
            if np.isfinite(score) and (best is None or score > best[0]):
                best = (score, model)
        if best is None:
            raise ConfigError(f"hmmlearn could not fit a {self.n_regimes}-state HMM to {len(Z)} rows")
        self.model_ = best[1]
        return self

    def _log_emission(self, Z: np.ndarray) -> np.ndarray:
        """(N, K) Gaussian log densities of the fitted states (public ``means_`` / ``covars_``)."""
        m = self.model_
        out = np.empty((len(Z), self.n_regimes))
        for k in range(self.n_regimes):
            cov = np.atleast_2d(m.covars_[k])
            chol = np.linalg.cholesky(cov)
            sol = np.linalg.solve(chol, (Z - m.means_[k]).T)  # (D, N)
            out[:, k] = -0.5 * (sol**2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * Z.shape[1] * np.log(2 * np.pi)
        return out

    def predict_proba_online(self, X) -> np.ndarray:
        """(N, K) filtered probabilities P(s_t | x_1..x_t)."""
        return forward_filter(self._log_emission(self._scale(_as_2d(X))), self.model_.startprob_, self.model_.transmat_)

    def predict_online(self, X) -> np.ndarray:
        return self.predict_proba_online(X).argmax(axis=1)


# ----------------------------------------------------------------------------- jumpmodels
def jumpmodels_preprocessor(X_train):
    """Clip at 3 standard deviations and standardise (the package's ``DataClipperStd`` and
    ``StandardScalerPD``, as in its examples), fitted on the training rows; returns the transform."""
    pre = require("jumpmodels.preprocess")
    clipper = pre.DataClipperStd(mul=3.0).fit(_as_2d(X_train))
    scaler = pre.StandardScalerPD().fit(clipper.transform(_as_2d(X_train)))
    return lambda X: np.asarray(scaler.transform(clipper.transform(_as_2d(X))), dtype=np.float64)


class PackageJumpModel:
    """``jumpmodels.jump.JumpModel`` (discrete) on prepared inputs, labelled by its ``predict_online``.

    One sequence (``lengths`` is accepted and ignored, for the project's validation helpers). The
    package's loss is half the squared distance, so its ``jump_penalty`` is in those units.
    """

    def __init__(self, n_regimes: int = 2, jump_penalty: float = 50.0, n_init: int = 10, random_state: int = 0):
        self.n_regimes = n_regimes
        self.jump_penalty = jump_penalty
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X, lengths=None) -> "PackageJumpModel":
        jump = require("jumpmodels.jump")
        self.model_ = jump.JumpModel(n_components=self.n_regimes, jump_penalty=float(self.jump_penalty),
                                     n_init=self.n_init, random_state=self.random_state)
        self.model_.fit(_as_2d(X), sort_by=None)
        self.centroids_ = np.asarray(self.model_.centers_)
        return self

    def predict_online(self, X, lengths=None) -> np.ndarray:
        return np.asarray(self.model_.predict_online(_as_2d(X)), dtype=np.int64)


def package_penalty(X: np.ndarray, n_regimes: int, penalties, n_init: int = 10,
                    random_state: int = 0) -> tuple[float, list[dict]]:
    """The package model's penalty chosen from ``penalties`` by the project's own truth-free
    validation (``regimes.validation.choose_by_forecast``: held-out forecast error of the causal
    labels, the most persistent penalty within one standard error of the best). With too little
    held-out data, the project's 'auto' rule in the package's units (half the squared distance):
    ``AUTO_PENALTY_FACTOR / 2`` times the k-means within-regime variance per dimension."""
    from sklearn.cluster import KMeans

    from market_regimes.regimes.clusterers import AUTO_PENALTY_FACTOR
    from market_regimes.regimes.validation import choose_by_forecast

    X = _as_2d(X)
    sigma2 = KMeans(n_regimes, n_init=10, random_state=random_state).fit(X).inertia_ / X.size
    make = lambda lam: PackageJumpModel(n_regimes, lam, n_init, random_state)  # noqa: E731
    return choose_by_forecast(sorted((float(p) for p in penalties), reverse=True), make, X, np.array([len(X)]),
                              fallback=AUTO_PENALTY_FACTOR / 2 * sigma2)


# ----------------------------------------------------------------------------- k-means
class KMeansAnchor(_Standardised):
    """scikit-learn k-means on standardised hand-made features (per row, hence causal)."""

    def __init__(self, n_regimes: int = 2, n_init: int = 10, random_state: int = 0):
        self.n_regimes = n_regimes
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X) -> "KMeansAnchor":
        from sklearn.cluster import KMeans

        self.model_ = KMeans(self.n_regimes, n_init=self.n_init, random_state=self.random_state)
        self.model_.fit(self._fit_scale(_as_2d(X)))
        return self

    def predict_online(self, X) -> np.ndarray:
        return self.model_.predict(self._scale(_as_2d(X))).astype(np.int64)


# ----------------------------------------------------------------------------- Wasserstein k-means
def sorted_windows(returns: np.ndarray, window: int) -> np.ndarray:
    """(T - window + 1, window): the sorted values of every trailing window (row i ends at bar i + window - 1)."""
    from numpy.lib.stride_tricks import sliding_window_view

    return np.sort(sliding_window_view(np.asarray(returns, dtype=np.float64), window), axis=1)


def _w1(A: np.ndarray, B: np.ndarray, block: int = 4096) -> np.ndarray:
    """(N, K) 1-Wasserstein distances between sorted windows A (N, W) and barycentres B (K, W)."""
    out = np.empty((len(A), len(B)))
    for i in range(0, len(A), block):
        out[i : i + block] = np.abs(A[i : i + block, None, :] - B[None]).mean(axis=2)
    return out


class WassersteinKMeans:
    """WK-means on windows of a univariate return series; see the module docstring."""

    def __init__(self, n_regimes: int = 2, window: int = 35, step: int = 7, n_init: int = 10, max_iter: int = 100,
                 random_state: int = 0):
        self.n_regimes = n_regimes
        self.window = window
        self.step = step
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, returns) -> "WassersteinKMeans":
        S = sorted_windows(np.ravel(returns), int(self.window))[:: int(self.step)]
        if len(S) < self.n_regimes:
            raise ConfigError(f"WK-means: {len(S)} windows of {self.window} bars for {self.n_regimes} clusters")
        rng = np.random.default_rng(self.random_state)
        best = None
        for _ in range(max(int(self.n_init), 1)):
            centres = self._seed(S, rng)
            labels = None
            for _ in range(int(self.max_iter)):
                new = _w1(S, centres).argmin(axis=1)
                if labels is not None and np.array_equal(new, labels):
                    break
                labels = new
                for k in range(self.n_regimes):
                    members = S[labels == k]
                    centres[k] = np.median(members, axis=0) if len(members) else S[rng.integers(len(S))]
            cost = float(_w1(S, centres).min(axis=1).sum())
            if best is None or cost < best[0]:
                best = (cost, centres.copy())
        self.inertia_, self.centroids_ = best
        return self

    def _seed(self, S: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """k-means++ seeding under the W1 distance."""
        centres = [S[rng.integers(len(S))]]
        for _ in range(1, self.n_regimes):
            d = _w1(S, np.asarray(centres)).min(axis=1) ** 2
            p = d / d.sum() if d.sum() > 0 else None
            centres.append(S[rng.choice(len(S), p=p)])
        return np.array(centres)

    def predict_online(self, returns) -> np.ndarray:
        """(T,) labels; -1 for the first window - 1 bars, which no full window ends at."""
        r = np.ravel(returns)
        out = np.full(len(r), -1, dtype=np.int64)
        if len(r) >= self.window:
            out[self.window - 1 :] = _w1(sorted_windows(r, int(self.window)), self.centroids_).argmin(axis=1)
        return out
