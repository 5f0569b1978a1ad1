"""Gaussian hidden Markov model on latent sequences, labelled by its causal forward filter.

Regimes are hidden states with a Gaussian emission each (mean and covariance, so two regimes
may share a centre and differ in spread, which the centroid-based k-means and jump model cannot
tell apart) and a Markov transition matrix (persistence is learned, not a penalty to choose).
Fitting is EM (Baum-Welch) by ``hmmlearn`` over the sequences, on inputs standardised with the
training rows' mean and standard deviation, best of ``n_init`` starts by log-likelihood.

``persistence`` = w in [0, 1) makes the chain sticky: every M-step's transition estimate is
shrunk towards staying, ``P <- (1 - w) P + w I`` (rows renormalised), i.e. that step's switching
probabilities are (1 - w) times what the E-step's counts say. Per M-step this is the estimate
under a Dirichlet prior whose self-transition pseudo-counts are w / (1 - w) times the state's
expected number of transitions (a sticky HMM in the sense of Fox et al., 2011, Ann. Appl. Stat.
5, with the prior scaled to the data and renewed at every step). It acts inside EM, not only on
the final matrix: the E-step's posteriors are smoothed, so states are fitted to persistent
stretches rather than to single bars, which maximum likelihood on hourly returns favours
(Nystrup, Lindstrom and Madsen, 2020, Expert Syst. Appl. 150, on HMMs' too-frequent switching).
The effect compounds over the iterations: the fitted chain switches less than (1 - w) times the
maximum-likelihood chain (about 0.01 x for w = 0.9 on the tests' bursts data). There is then no
objective EM increases, so a step may lower the likelihood: EM stops when the likelihood changes
by less than ``tol`` per row in either direction (or at ``n_iter``), and the best start is the
one with the highest likelihood of its final parameters.

Labels come from the **forward filter** ``P(s_t | x_1..x_t)`` computed here from the fitted
parameters (numpy, no ``hmmlearn`` at inference), never the smoothed posterior: the label of row
t depends on rows <= t of its own sequence only. With ``online_memory=M`` the filter of row t
starts afresh at row ``max(sequence start, t - M + 1)`` from ``startprob_``, so a label is
reproducible from a bounded stretch of history (exact, fast inference); a filter forgets its
start geometrically, so M of a few hundred rows changes next to nothing.

Interface as the other clusterers (``clusterers.py``): ``predict`` = ``predict_online``;
``predict_proba_online`` = the filtered probabilities, started from the stationary distribution of
the fitted chain; ``score`` the mean log-likelihood per row;
``bic`` for model selection; ``centroids_`` the state means in input units.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import numpy as np

from market_regimes.errors import ConfigError, DataError
from market_regimes.regimes.clusterers import RegimeClusterer, _check_perm, _like_input, _Lockstep, restart_window

COVARIANCE_TYPES = ("full", "diag")


def _filter_step(prior: np.ndarray, emit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One forward step for rows of (n, K): normalised posterior and log of its normaliser. A row
    whose every reachable state has a zero density (an outlier far from them all) restarts from
    the emissions alone instead of dividing by zero."""
    post = prior * emit
    total = post.sum(axis=1, keepdims=True)
    lost = total[:, 0] <= 0
    if lost.any():
        post[lost] = emit[lost]
        total[lost] = emit[lost].sum(axis=1, keepdims=True)
    return post / total, np.log(total[:, 0])


def _propagate(post: np.ndarray, transmat: np.ndarray) -> np.ndarray:
    """(n, K) one-step-ahead state probabilities ``post @ transmat``, as K explicit products so
    that a row's value never depends on how many rows are computed with it (a BLAS product may
    round differently for different shapes, and the finite-memory filter relies on equality)."""
    out = post[:, :1] * transmat[0]
    for j in range(1, len(transmat)):
        out += post[:, j : j + 1] * transmat[j]
    return out


def _emissions(log_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) emission densities scaled by each row's largest and (N,) the log of that scale."""
    shift = log_e.max(axis=1)
    return np.exp(log_e - shift[:, None]), shift


def _stationary(transmat: np.ndarray) -> np.ndarray:
    """(K,) stationary distribution pi = pi P of a row-stochastic matrix (least squares with sum 1;
    for a reducible chain one of its stationary distributions)."""
    k = len(transmat)
    A = np.vstack([transmat.T - np.eye(k), np.ones((1, k))])
    pi = np.linalg.lstsq(A, np.r_[np.zeros(k), 1.0], rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _sticky_hmm_class(persistence: float):
    """hmmlearn's ``GaussianHMM``, or for ``persistence`` > 0 a subclass whose M-step shrinks the
    transition estimate towards the identity (module docstring)."""
    from hmmlearn.base import ConvergenceMonitor
    from hmmlearn.hmm import GaussianHMM

    if persistence <= 0.0:
        return GaussianHMM

    class TwoSidedMonitor(ConvergenceMonitor):
        """Converged when the likelihood moves by less than ``tol`` either way: hmmlearn's own
        test (a rise below ``tol``) would stop at the first step that lowers it."""

        @property
        def converged(self):
            return self.iter == self.n_iter or (len(self.history) >= 2 and abs(self.history[-1] - self.history[-2]) < self.tol)

    class StickyGaussianHMM(GaussianHMM):
        def _init(self, X, lengths=None):  # called by fit before EM starts
            super()._init(X, lengths)
            self.monitor_ = TwoSidedMonitor(self.tol, self.n_iter, self.verbose)

        def _do_mstep(self, stats):
            super()._do_mstep(stats)
            if "t" in self.params:
                sticky = (1.0 - persistence) * self.transmat_ + persistence * np.eye(self.n_components)
                self.transmat_ = sticky / sticky.sum(axis=1, keepdims=True)  # a row EM left at zero

    return StickyGaussianHMM


@contextmanager
def _quiet_hmmlearn():
    """hmmlearn logs a warning whenever an EM step lowers the likelihood by rounding noise."""
    log = logging.getLogger("hmmlearn.base")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class HMMRegimes(RegimeClusterer):
    """Gaussian HMM regimes; see the module docstring.

    ``tol``: EM stops once an iteration raises the log-likelihood by less than ``tol`` per row
    (at most ``n_iter`` iterations); ``stay``: the self-transition probability EM starts from;
    ``min_covar``: floor added to the covariances' diagonal (standardised units); ``persistence``:
    the shrinkage w of every transition estimate towards staying (module docstring)."""

    kind = "hmm"
    sequential = True
    _state_arrays = ("startprob_", "transmat_", "means_", "covars_", "offset_", "scale_")
    _state_scalars = ("temperature_",)

    def __init__(self, n_regimes: int = 4, covariance_type: str = "full", n_init: int = 3, n_iter: int = 100,
                 tol: float = 1e-4, min_covar: float = 1e-3, stay: float = 0.95, random_state: int | None = None,
                 online_memory: int | None = None, persistence: float = 0.0):
        self.n_regimes = n_regimes
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.n_iter = n_iter
        self.tol = tol
        self.min_covar = min_covar
        self.stay = stay
        self.random_state = random_state
        self.online_memory = online_memory
        self.persistence = persistence

    # ------------------------------------------------------------------ fit
    def _fit(self, X: np.ndarray, lengths: np.ndarray) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ConfigError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {self.covariance_type!r}")
        if not 0.0 <= float(self.stay) < 1.0:
            raise ConfigError(f"stay (initial self-transition probability) must be in [0, 1), got {self.stay}")
        if not 0.0 <= float(self.persistence) < 1.0:
            raise ConfigError(f"persistence (shrinkage of transitions towards staying) must be in [0, 1), got {self.persistence}")
        GaussianHMM = _sticky_hmm_class(float(self.persistence))  # fitting only: filtering needs numpy alone
        from threadpoolctl import threadpool_limits

        self.offset_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = (X - self.offset_) / self.scale_
        k = int(self.n_regimes)
        trans = np.full((k, k), (1.0 - self.stay) / max(k - 1, 1)) if k > 1 else np.ones((1, 1))
        np.fill_diagonal(trans, self.stay if k > 1 else 1.0)
        rng = np.random.default_rng(self.random_state)
        best = None
        # A start whose state collapses onto a few rows is dropped; if every start does, the
        # covariance floor is raised tenfold (twice) before giving up. One BLAS/OpenMP thread: the
        # matrices are D x D, and on a busy machine idle threads spin (a 4,000 x 3 fit took 17-21 s
        # with the default threads beside two other jobs, 0.8-1.3 s with one).
        with threadpool_limits(1):
            for floor in float(self.min_covar) * np.array([1.0, 10.0, 100.0]):
                for _ in range(max(int(self.n_init), 1)):
                    run = self._fit_one(GaussianHMM, Z, lengths, trans, floor, int(rng.integers(2**31)))
                    if run is not None and (best is None or run[0] > best[0]):
                        best = run
                if best is not None:
                    break
        if best is None:
            raise DataError(f"the HMM could not be fitted with {k} states on {len(X)} rows; try fewer regimes")
        model = best[1]
        self.transmat_ = np.asarray(model.transmat_, dtype=np.float64)
        # The filter starts (at a sequence's first row, and at every finite-memory restart) from
        # the chain's stationary distribution, not from EM's start probabilities, which would be
        # fitted to the few first rows of the training sequences (one row in market mode).
        self.startprob_ = _stationary(self.transmat_)
        self.means_ = np.asarray(model.means_, dtype=np.float64)
        self.covars_ = np.asarray(model.covars_, dtype=np.float64)  # (K, D, D) for every covariance type
        self.temperature_ = 1.0  # energies are -log posteriors: softmax(-energy) is the posterior
        self.converged_ = bool(model.monitor_.converged)
        self._restore()
        self.labels_ = self._posteriors(X, lengths).argmax(axis=1).astype(np.intp)

    def _fit_one(self, GaussianHMM, Z, lengths, trans, min_covar: float, seed: int):
        """(log-likelihood, model) of one EM run, or None for a degenerate one."""
        k = len(trans)
        model = GaussianHMM(k, covariance_type=self.covariance_type, n_iter=int(self.n_iter), tol=float(self.tol) * len(Z),
                            min_covar=min_covar, random_state=seed, init_params="mc", params="tmc",
                            implementation="scaling")
        model.startprob_ = np.full(k, 1.0 / k)  # fixed during EM (params has no "s"), see _fit
        model.transmat_ = trans.copy()
        try:
            with _quiet_hmmlearn():
                model.fit(Z, lengths)
            score = model.score(Z, lengths)
            np.linalg.cholesky(model.covars_)  # a state collapsed onto a few rows leaves no density
        except (ValueError, np.linalg.LinAlgError):
            return None
        return (score, model) if np.isfinite(score) and np.isfinite(model.transmat_).all() else None

    def _restore(self) -> None:
        chol = np.linalg.cholesky(self.covars_)  # (K, D, D)
        d = self.means_.shape[1]
        self._whiten = np.linalg.inv(chol)  # (K, D, D): L^-1, so that ||L^-1 (z - m)||^2 is the Mahalanobis term
        self._whitened_means = np.einsum("ked,kd->ke", self._whiten, self.means_)
        self._log_norm = -np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1) - 0.5 * d * np.log(2 * np.pi)

    @property
    def centroids_(self) -> np.ndarray:
        """(K, D) state means in input units."""
        return self.means_ * self.scale_ + self.offset_

    # ------------------------------------------------------------------ filtering
    def _log_emission(self, X: np.ndarray) -> np.ndarray:
        """(N, K) Gaussian log densities of the standardised rows under each state. Written with
        ``einsum`` (no BLAS call) so that a row's value does not depend on the other rows."""
        Z = (X - self.offset_) / self.scale_
        y = np.einsum("nd,ked->nke", Z, self._whiten) - self._whitened_means[None]  # (N, K, D)
        return -0.5 * np.einsum("nke,nke->nk", y, y) + self._log_norm[None]

    def _filter(self, emit: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, K) filtered posteriors and (N,) log normalisers of the scaled emissions ``emit``,
        all sequences in lockstep (``clusterers._Lockstep``)."""
        plan = _Lockstep(lengths)
        emit_tm = emit[plan.rows]
        post = np.empty_like(emit_tm)
        log_c = np.empty(len(emit_tm))
        ptr = plan.ptr
        post[: ptr[1]], log_c[: ptr[1]] = _filter_step(self.startprob_[None, :], emit_tm[: ptr[1]])
        for t in range(1, plan.n_steps):
            a, b, prev = ptr[t], ptr[t + 1], ptr[t - 1]
            post[a:b], log_c[a:b] = _filter_step(_propagate(post[prev : prev + b - a], self.transmat_), emit_tm[a:b])
        out, lc = np.empty_like(post), np.empty_like(log_c)
        out[plan.rows], lc[plan.rows] = post, log_c
        return out, lc

    def _filter_window(self, emit: np.ndarray, lengths: np.ndarray, full: np.ndarray, memory: int) -> np.ndarray:
        """Posteriors with a finite memory: row t's filter restarted from ``startprob_`` at
        max(sequence start, t - memory + 1) (``clusterers.restart_window``)."""
        return restart_window(lambda e: _filter_step(self.startprob_[None, :], e)[0],
                              lambda cur, e: _filter_step(_propagate(cur, self.transmat_), e)[0],
                              emit, lengths, full, memory)

    def _posteriors(self, X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        emit, _ = _emissions(self._log_emission(X))
        post, _ = self._filter(emit, lengths)
        if self.online_memory:
            post = self._filter_window(emit, lengths, post, int(self.online_memory))
        return post

    def _energy(self, X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -np.log(self._posteriors(X, lengths))

    def predict_proba_online(self, X: Any, lengths: Any = None) -> Any:
        """(N, K) filtered probabilities P(s_t | rows <= t of its sequence)."""
        arr, lens = self._inputs(X, lengths)
        return _like_input(X, self._posteriors(arr, lens))

    # ------------------------------------------------------------------ model selection
    def score(self, X: Any, lengths: Any = None) -> float:
        """Mean log-likelihood per row of the inputs (higher is better)."""
        arr, lens = self._inputs(X, lengths)
        emit, shift = _emissions(self._log_emission(arr))
        _, log_c = self._filter(emit, lens)
        return float((log_c.sum() + shift.sum() - len(arr) * np.log(self.scale_).sum()) / len(arr))

    def n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = k * d * (d + 1) // 2 if self.covariance_type == "full" else k * d
        return k * (k - 1) + k * d + cov  # transitions, means, covariances (the start is derived)

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion on X (lower is better)."""
        n = len(self._inputs(X, lengths)[0])
        return float(-2.0 * self.score(X, lengths) * n + self.n_parameters() * np.log(n))

    # ------------------------------------------------------------------ relabelling
    def permute_(self, perm: Any) -> "HMMRegimes":
        super().permute_(perm)  # startprob_, means_, covars_ and the rows of transmat_
        inverse = np.argsort(_check_perm(perm, self.n_regimes))
        self.transmat_ = self.transmat_[:, inverse]
        self._restore()
        return self

    def _per_regime_arrays(self) -> tuple[str, ...]:
        return ("startprob_", "transmat_", "means_", "covars_")
