"""Clusterers that turn latent vectors into regime labels: k-means, Gaussian mixture, jump model
(and, in ``hmm.py``, the Gaussian HMM).

All share one interface (scikit-learn style, sequences passed like hmmlearn):

* ``X``: (N, D) latent vectors, the concatenation of per-asset sequences, each in time order;
  a ``pd.DataFrame`` works too and the outputs then carry its index.
* ``lengths``: ints summing to N, one per sequence (``None``: one sequence). Rows of a sequence
  are consecutive bars; the caller splits sequences at gaps.
* ``predict``: the best labelling of whole sequences. Only the jump model uses the sequence: its
  ``predict`` is the smoothed Viterbi path, which looks at *future* rows of the sequence
  (non-causal, for analysis only).
* ``predict_online`` / ``predict_proba_online``: causal, the output at row t depends on rows <= t
  of its own sequence only. Use these for anything that trades or is evaluated out of sample.
* ``centroids_``: (K, D) regime centres (GMM: component means).
* ``permute_(perm)``: relabel in place, ``perm[old] = new`` (see ``labels.relabel``).
* ``to_state()`` / ``from_state(state)``: plain dict of JSON-able values and numpy arrays, no pickle.

Soft assignments are Gaussian posteriors throughout. With ``sigma2`` the pooled within-regime
variance per dimension learned at fit (mean squared distance to the own centroid divided by D), the
k-means and jump-model probabilities are ``softmax(-energy / temperature_)`` with
``temperature_ = 2 * sigma2``: for k-means that is the posterior of an equal-weight isotropic
Gaussian mixture, for the jump model the energy is the forward (max-product) cost of the best path
ending in each regime, of which the jump penalty is the log transition cost in the same units.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from market_regimes.errors import ConfigError, DataError

#: ``jump_penalty="auto"`` is this many times sigma2, the k-means within-regime variance per
#: dimension. 8 = 2 * 4: for isotropic Gaussian regimes the penalty is then the MAP cost of a switch
#: with probability exp(-4) ~ 1/55 per row, i.e. regimes lasting ~55 rows on average.
AUTO_PENALTY_FACTOR = 8.0
#: ``jump_penalty="forecast"`` tries these multiples of sigma2, most persistent first, and keeps the
#: first whose held-out forecast error is within one standard error of the best (validation.py).
PENALTY_FACTORS = (32.0, 16.0, 8.0, 4.0, 2.0)
_MIN_TEMPERATURE = 1e-12


# ----------------------------------------------------------------------------- input handling
def as_matrix(X: Any) -> np.ndarray:
    """(N, D) float64 array from an array or DataFrame; raises DataError naming the problem."""
    arr = np.asarray(X.to_numpy() if isinstance(X, pd.DataFrame) else X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"latent matrix must be 2-D (N, D) with N > 0, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(
            f"latent matrix has {int(bad.sum())} rows with NaN/inf (first: row {int(np.argmax(bad))});"
            " drop them and split the sequence there"
        )
    return arr


def check_lengths(lengths: Any, n_rows: int) -> np.ndarray:
    """Validated int array of sequence lengths summing to ``n_rows`` (``None``: one sequence)."""
    if lengths is None:
        return np.array([n_rows], dtype=np.intp)
    lens = np.asarray(lengths, dtype=np.intp).reshape(-1)
    if lens.size == 0 or (lens <= 0).any() or int(lens.sum()) != n_rows:
        raise DataError(
            f"lengths must be positive ints summing to the {n_rows} rows of X,"
            f" got {lens.size} lengths summing to {int(lens.sum()) if lens.size else 0}"
        )
    return lens


def _like_input(X: Any, values: np.ndarray) -> Any:
    """Pandas in, pandas out on the input's index; numpy otherwise."""
    if not isinstance(X, pd.DataFrame):
        return values
    if values.ndim == 1:
        return pd.Series(values, index=X.index, name="regime")
    return pd.DataFrame(values, index=X.index, columns=pd.RangeIndex(values.shape[1], name="regime"))


def _sq_dists(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, K) squared Euclidean distances."""
    d = (X * X).sum(1)[:, None] - 2.0 * X @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def _softmax_neg(energy: np.ndarray, temperature: float) -> np.ndarray:
    z = -(energy - energy.min(axis=1, keepdims=True)) / temperature
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _check_perm(perm: Any, k: int) -> np.ndarray:
    p = np.asarray(perm, dtype=np.intp)
    if p.shape != (k,) or not np.array_equal(np.sort(p), np.arange(k)):
        raise ConfigError(f"perm must be a permutation of 0..{k - 1}, got {p.tolist()}")
    return p


# ----------------------------------------------------------------------------- common base
class NotFittedError(ValueError, AttributeError):
    """A clusterer was used before ``fit`` (same bases as scikit-learn's NotFittedError)."""


def check_is_fitted(est: Any) -> None:
    """Raise NotFittedError unless ``est`` has a learned attribute (a name ending in ``_``)."""
    if not any(k.endswith("_") and not k.startswith("__") for k in vars(est)):
        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit first")


class _Params:
    """scikit-learn's parameter protocol (``get_params``/``set_params``, so ``sklearn.base.clone``
    works) without importing scikit-learn, which keeps inference start-up fast; the scikit-learn
    estimators used for fitting are imported when a fit needs them."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return sorted(p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs"))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "_Params":
        for name, value in params.items():
            if name not in self._param_names():
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class RegimeClusterer(_Params):
    """Shared interface; subclasses define ``_fit``, ``_energy`` and their state arrays."""

    kind: ClassVar[str] = ""
    #: labels filter the sequence (a row's label depends on earlier rows, up to ``online_memory``)
    sequential: ClassVar[bool] = False
    _state_arrays: ClassVar[tuple[str, ...]] = ()
    _state_scalars: ClassVar[tuple[str, ...]] = ()

    def fit(self, X: Any, lengths: Any = None) -> "RegimeClusterer":
        """Fit on (N, D) latents made of sequences of the given lengths; returns self."""
        if int(self.n_regimes) < 1:
            raise ConfigError(f"n_regimes must be >= 1, got {self.n_regimes}")
        arr = as_matrix(X)
        lens = check_lengths(lengths, len(arr))
        if len(arr) < self.n_regimes:
            raise DataError(f"need at least n_regimes={self.n_regimes} rows to fit, got {len(arr)}")
        self._fit(arr, lens)
        self.n_features_in_ = arr.shape[1]
        return self

    def _inputs(self, X: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self)
        arr = as_matrix(X)
        if arr.shape[1] != self.n_features_in_:
            raise DataError(f"X has {arr.shape[1]} columns, the clusterer was fitted on {self.n_features_in_}")
        return arr, check_lengths(lengths, len(arr))

    def predict(self, X: Any, lengths: Any = None) -> Any:
        """(N,) labels; per-row (causal) except for the jump model, see its docstring."""
        return self.predict_online(X, lengths)

    def predict_online(self, X: Any, lengths: Any = None) -> Any:
        """(N,) causal labels: row t uses rows <= t of its sequence only."""
        arr, lens = self._inputs(X, lengths)
        return _like_input(X, self._energy(arr, lens).argmin(axis=1))

    def predict_proba_online(self, X: Any, lengths: Any = None) -> Any:
        """(N, K) causal regime probabilities, rows sum to 1."""
        arr, lens = self._inputs(X, lengths)
        return _like_input(X, _softmax_neg(self._energy(arr, lens), self.temperature_))

    def permute_(self, perm: Any) -> "RegimeClusterer":
        """Relabel in place so that a row formerly labelled ``old`` is now labelled ``perm[old]``."""
        check_is_fitted(self)
        p = _check_perm(perm, self.n_regimes)
        inverse = np.argsort(p)  # inverse[new] = old
        for name in self._per_regime_arrays():
            setattr(self, name, getattr(self, name)[inverse])
        if hasattr(self, "labels_"):
            self.labels_ = p[self.labels_]
        return self

    def _per_regime_arrays(self) -> tuple[str, ...]:
        return self._state_arrays

    def to_state(self) -> dict[str, Any]:
        """Fitted state as JSON-able values plus numpy arrays (save arrays with np.savez)."""
        check_is_fitted(self)
        params = self.get_params()
        if not (params.get("random_state") is None or isinstance(params["random_state"], int)):
            raise ConfigError("to_state needs random_state to be an int or None")
        state: dict[str, Any] = {"kind": self.kind, "params": params, "n_features_in": self.n_features_in_}
        state.update({name: float(getattr(self, name)) for name in self._state_scalars})
        state.update({name: np.asarray(getattr(self, name)) for name in self._state_arrays})
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RegimeClusterer":
        """Rebuild a fitted clusterer from ``to_state()`` output without refitting."""
        if state.get("kind") != cls.kind:
            raise ConfigError(f"state kind {state.get('kind')!r} does not match clusterer kind {cls.kind!r}")
        est = cls(**state["params"])
        for name in cls._state_scalars:
            setattr(est, name, float(state[name]))
        for name in cls._state_arrays:
            setattr(est, name, np.asarray(state[name]))
        est.n_features_in_ = int(state["n_features_in"])
        est._restore()
        return est

    def _restore(self) -> None:
        """Hook for subclasses that derive more state after ``from_state``."""


# ----------------------------------------------------------------------------- k-means
class KMeansRegimes(RegimeClusterer):
    """k-means on latents (sklearn ``KMeans``); every prediction is per row, hence causal.

    ``predict_proba_online``: softmax of negative squared distances / ``temperature_``, see the
    module docstring. ``score``: minus the mean squared distance to the nearest centroid.
    """

    kind = "kmeans"
    _state_arrays = ("centroids_",)
    _state_scalars = ("temperature_",)

    def __init__(self, n_regimes: int = 4, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
                 random_state: int | None = None):
        self.n_regimes = n_regimes
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _fit(self, X: np.ndarray, lengths: np.ndarray) -> None:
        from sklearn.cluster import KMeans

        km = KMeans(self.n_regimes, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                    random_state=self.random_state).fit(X)
        self.centroids_ = km.cluster_centers_.copy()
        self.labels_ = km.labels_.astype(np.intp)
        self.inertia_ = float(km.inertia_)
        self.temperature_ = max(2.0 * self.inertia_ / X.size, _MIN_TEMPERATURE)

    def _energy(self, X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return _sq_dists(X, self.centroids_)

    def score(self, X: Any, lengths: Any = None) -> float:
        """Minus the mean squared distance to the nearest centroid (higher is better)."""
        arr, lens = self._inputs(X, lengths)
        return -float(self._energy(arr, lens).min(axis=1).mean())


# ----------------------------------------------------------------------------- Gaussian mixture
class GMMRegimes(RegimeClusterer):
    """Gaussian mixture on latents (sklearn ``GaussianMixture``); per-row posteriors, causal.

    ``score``: mean log-likelihood per row (higher is better); ``bic(X)`` for model selection.
    """

    kind = "gmm"
    _state_arrays = ("weights_", "means_", "covariances_", "precisions_cholesky_")

    def __init__(self, n_regimes: int = 4, covariance_type: str = "full", reg_covar: float = 1e-4,
                 n_init: int = 3, max_iter: int = 200, tol: float = 1e-3, random_state: int | None = None):
        self.n_regimes = n_regimes
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    @property
    def centroids_(self) -> np.ndarray:
        return self.means_

    def _fit(self, X: np.ndarray, lengths: np.ndarray) -> None:
        if self.covariance_type not in ("full", "tied", "diag", "spherical"):
            raise ConfigError(f"covariance_type must be full, tied, diag or spherical, got {self.covariance_type!r}")
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(self.n_regimes, covariance_type=self.covariance_type, reg_covar=self.reg_covar,
                             n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                             random_state=self.random_state).fit(X)
        for name in self._state_arrays:
            setattr(self, name, getattr(gm, name))
        self.labels_ = gm.predict(X).astype(np.intp)
        self.converged_ = bool(gm.converged_)
        self._restore()

    def _restore(self) -> None:
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(self.n_regimes, covariance_type=self.covariance_type, reg_covar=self.reg_covar)
        for name in self._state_arrays:
            setattr(gm, name, getattr(self, name))
        chol = self.precisions_cholesky_
        if self.covariance_type == "full":
            gm.precisions_ = chol @ np.swapaxes(chol, 1, 2)
        elif self.covariance_type == "tied":
            gm.precisions_ = chol @ chol.T
        else:
            gm.precisions_ = chol**2
        gm.n_features_in_ = self.means_.shape[1]
        self.gmm_ = gm

    def _per_regime_arrays(self) -> tuple[str, ...]:
        if self.covariance_type == "tied":  # one covariance shared by all regimes
            return ("weights_", "means_")
        return self._state_arrays

    def permute_(self, perm: Any) -> "GMMRegimes":
        super().permute_(perm)
        self._restore()
        return self

    def predict_online(self, X: Any, lengths: Any = None) -> Any:
        arr, _ = self._inputs(X, lengths)
        return _like_input(X, self.gmm_.predict(arr).astype(np.intp))

    def predict_proba_online(self, X: Any, lengths: Any = None) -> Any:
        arr, _ = self._inputs(X, lengths)
        return _like_input(X, self.gmm_.predict_proba(arr))

    def score(self, X: Any, lengths: Any = None) -> float:
        """Mean log-likelihood per row (higher is better)."""
        arr, _ = self._inputs(X, lengths)
        return float(self.gmm_.score(arr))

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion on X (lower is better)."""
        arr, _ = self._inputs(X, lengths)
        return float(self.gmm_.bic(arr))


# ----------------------------------------------------------------------------- jump model
class _Lockstep:
    """Runs a recursion over time for all sequences at once.

    Rows are put in time-major order (step 0 of every sequence, then step 1, ...), with sequences
    ranked by decreasing length, so the sequences still running at step t are a prefix and their
    rows one contiguous slice ``ptr[t]:ptr[t + 1]``. The Python loop is over time steps of the
    longest sequence, each step a numpy operation over the sequences.
    """

    def __init__(self, lengths: np.ndarray):
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        order = np.argsort(-lengths, kind="stable")
        n_steps = int(lengths.max())
        n_active = len(lengths) - np.cumsum(np.bincount(lengths, minlength=n_steps + 1))[:n_steps]
        ptr = np.concatenate([[0], np.cumsum(n_active)])
        step = np.repeat(np.arange(n_steps), n_active)
        rank = np.arange(ptr[-1]) - ptr[step]
        self.rows = starts[order][rank] + step  # time-major position -> original row
        self.ptr = ptr.tolist()
        self.n_steps = n_steps
        self.is_last = np.zeros(ptr[-1], dtype=bool)  # last row of its sequence, original order
        self.is_last[starts + lengths - 1] = True


def _forward(loss: np.ndarray, plan: _Lockstep, penalty: float) -> np.ndarray:
    """Forward costs of the jump model, causal: (N, K) with V[t, k] = min over label paths of the
    sequence up to t ending in k of sum ||x - mu||^2 + penalty * jumps, minus its row minimum.

    V_t(k) = loss_t(k) + min(V_{t-1}(k), min_j V_{t-1}(j) + penalty); normalising each row to a
    minimum of 0 keeps the recursion O(K) per step and the numbers small.
    """
    loss_tm = loss[plan.rows]
    V = np.empty_like(loss_tm)
    ptr = plan.ptr
    first = loss_tm[: ptr[1]]
    V[: ptr[1]] = first - first.min(axis=1, keepdims=True)
    for t in range(1, plan.n_steps):
        a, b, prev = ptr[t], ptr[t + 1], ptr[t - 1]
        cur = V[a:b]
        np.minimum(V[prev : prev + b - a], penalty, out=cur)
        cur += loss_tm[a:b]
        cur -= cur.min(axis=1, keepdims=True)
    out = np.empty_like(V)
    out[plan.rows] = V
    return out


def restart_window(first, step, inputs: np.ndarray, lengths: np.ndarray, full: np.ndarray, memory: int) -> np.ndarray:
    """A causal recursion with a finite memory: row t's value is the recursion started afresh at
    row ``max(sequence start, t - memory + 1)``, for every row at once.

    ``first(inputs[rows])`` gives the value at a start row, ``step(value, inputs[rows])`` the next
    one (both row-wise); ``full`` is the recursion run from each sequence's first row. A row less
    than ``memory`` rows into its sequence restarts at the sequence's start, so its value is
    ``full``'s. The recursion is deterministic given its last value, so once a restarted one
    equals (bit for bit) the full one at some row, the two agree at every later row: each row
    runs only until it meets ``full`` (the same operations in the same order, so the result equals
    running all ``memory`` steps). The loop is over offsets from the start, each step vectorised
    over the rows still running.
    """
    out = full.copy()
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    act = np.flatnonzero(np.arange(len(inputs)) - starts >= memory)  # rows not yet met
    if len(act) == 0:
        return out
    cur = first(inputs[act - (memory - 1)])  # their values at row t - o
    for o in range(memory - 1, -1, -1):
        if o < memory - 1:
            cur = step(cur, inputs[act - o])
        met = (cur == full[act - o]).all(axis=1)
        if met.any():
            act, cur = act[~met], cur[~met]
            if len(act) == 0:
                break
    out[act] = cur
    return out


def _forward_window(loss: np.ndarray, lengths: np.ndarray, penalty: float, memory: int) -> np.ndarray:
    """Forward costs with a finite memory: row t's costs come from the recursion of
    :func:`_forward` started afresh at row ``max(sequence start, t - memory + 1)``
    (:func:`restart_window`), so the label of a row depends on the last ``memory`` rows only and
    can be reproduced exactly from a bounded stretch of history (fast inference)."""
    if len(loss) == 0:
        return np.empty_like(loss)

    def first(x):
        return x - x.min(axis=1, keepdims=True)

    def step(cur, x):
        cur = np.minimum(cur, penalty) + x
        cur -= cur.min(axis=1, keepdims=True)
        return cur

    full = _forward(loss, _Lockstep(np.asarray(lengths)), penalty)
    return restart_window(first, step, loss, np.asarray(lengths), full, memory)


def _backtrack(V: np.ndarray, plan: _Lockstep, penalty: float) -> np.ndarray:
    """Viterbi labels from the forward costs, by pointer doubling instead of a loop over time.

    Row t maps the label at t+1 to its best predecessor: keep k if V_t(k) <= penalty (staying is
    no worse than jumping from the best state, ties stay), else argmin V_t; the last row of a
    sequence maps everything to its own argmin. Composing these maps from the end of each
    sequence (log2(length) rounds of gathers) gives every row's label.
    """
    n, k = V.shape
    best = V.argmin(axis=1)
    maps = np.where(V <= penalty, np.arange(k), best[:, None])
    maps[plan.is_last] = best[plan.is_last, None]
    nxt = np.arange(1, n + 1)
    nxt[plan.is_last] = np.flatnonzero(plan.is_last)
    for _ in range(int(np.ceil(np.log2(plan.n_steps))) if plan.n_steps > 1 else 0):
        maps = np.take_along_axis(maps, maps[nxt], axis=1)
        nxt = nxt[nxt]
    return maps[:, 0].astype(np.intp)


def _viterbi(loss: np.ndarray, plan: _Lockstep, penalty: float) -> tuple[np.ndarray, float]:
    """Optimal labels for (N, K) losses and the objective they reach."""
    labels = _backtrack(_forward(loss, plan, penalty), plan, penalty)
    n_jumps = ((labels[1:] != labels[:-1]) & ~plan.is_last[:-1]).sum()
    return labels, float(loss[np.arange(len(labels)), labels].sum() + penalty * n_jumps)


class JumpRegimes(RegimeClusterer):
    """Statistical jump model (Nystrup et al. 2020; Bemporad et al. 2018) on latent sequences.

    Fit minimises, over centroids mu and labels s, within each sequence,
    ``sum_t ||x_t - mu_{s_t}||^2 + jump_penalty * [s_t != s_{t-1}]`` by alternating an exact
    dynamic-programming (Viterbi) label step and a centroid step, from ``n_init`` starts (the
    k-means solution and k-means++ seeds); the lowest objective wins. A regime left empty is
    re-seeded at the worst-fitted row.

    ``jump_penalty="auto"``: ``AUTO_PENALTY_FACTOR * sigma2`` = 8 * sigma2, where sigma2 is the mean
    squared distance from a row to its nearest k-means centroid (k = n_regimes) divided by D. It
    scales with the data (x -> c x gives c^2 times the penalty) and, being per dimension, does not
    grow with D when only a few latent dimensions separate regimes. Reading the objective as an
    isotropic Gaussian HMM with variance sigma2, it is the MAP cost of a switch probability of
    exp(-4) ~ 1/55 per row. ``jump_penalty="forecast"``: the multiple of sigma2 in
    ``PENALTY_FACTORS`` chosen by held-out forecast validation (``regimes/validation.py``; the
    scores are kept in ``penalty_validation_``). The value used is ``jump_penalty_``.

    ``predict`` is the Viterbi path of each sequence: *non-causal*, a label can change when later
    rows arrive. ``predict_online`` is causal: argmin of the forward cost V_t(k) (best path of
    rows <= t ending in k) at each row, without backtracking. With ``online_memory=M`` the path
    only covers the last M rows, so a label is reproducible from M rows of history. ``predict_proba_online``:
    ``softmax(-(V_t - min V_t) / temperature_)`` with ``temperature_ = 2 * sigma2`` of the fitted
    regimes (module docstring), so the penalty costs ``penalty / temperature_`` in log-odds.
    ``score``: minus the objective per row on the Viterbi path (higher is better).
    """

    kind = "jump"
    sequential = True
    _state_arrays = ("centroids_",)
    _state_scalars = ("temperature_", "jump_penalty_")

    def __init__(self, n_regimes: int = 4, jump_penalty: float | str = "auto", n_init: int = 10,
                 max_iter: int = 100, random_state: int | None = None, online_memory: int | None = None):
        self.n_regimes = n_regimes
        self.jump_penalty = jump_penalty
        self.online_memory = online_memory
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, X: np.ndarray, lengths: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        from sklearn.cluster import KMeans, kmeans_plusplus

        km = KMeans(self.n_regimes, n_init=min(self.n_init, 10), random_state=int(rng.integers(2**31))).fit(X)
        if isinstance(self.jump_penalty, str) and self.jump_penalty == "forecast":
            self.jump_penalty_ = self._validated_penalty(X, lengths, km.inertia_ / X.size, int(rng.integers(2**31)))
        else:
            self.jump_penalty_ = self._resolve_penalty(km.inertia_ / X.size)
        plan = _Lockstep(lengths)
        x_sq = (X * X).sum(1)
        best = None
        for i in range(max(int(self.n_init), 1)):
            if i == 0:
                init = km.cluster_centers_
            else:
                init, _ = kmeans_plusplus(X, self.n_regimes, x_squared_norms=x_sq,
                                          random_state=int(rng.integers(2**31)))
            run = self._fit_one(X, plan, init)
            if best is None or run[0] < best[0]:
                best = run
        objective, self.centroids_, self.labels_, self.n_iter_ = best
        self.objective_ = float(objective)
        misfit = _sq_dists(X, self.centroids_)[np.arange(len(X)), self.labels_].mean()
        self.temperature_ = max(2.0 * float(misfit) / X.shape[1], _MIN_TEMPERATURE)

    def _resolve_penalty(self, sigma2: float) -> float:
        if isinstance(self.jump_penalty, str):
            if self.jump_penalty != "auto":
                raise ConfigError(f"jump_penalty must be a number >= 0, 'auto' or 'forecast', got {self.jump_penalty!r}")
            return AUTO_PENALTY_FACTOR * float(sigma2)
        if not np.isfinite(self.jump_penalty) or self.jump_penalty < 0:
            raise ConfigError(f"jump_penalty must be a number >= 0, 'auto' or 'forecast', got {self.jump_penalty!r}")
        return float(self.jump_penalty)

    def _validated_penalty(self, X: np.ndarray, lengths: np.ndarray, sigma2: float, seed: int) -> float:
        """The factor of ``PENALTY_FACTORS`` (times sigma2) whose causal labels forecast best on
        held-out data, most persistent first (``regimes/validation.py``). The candidates are
        fitted from the k-means start only (``n_init=1``): validation ranks penalties, the final
        fit with the chosen one uses every start. Too little held-out data: the 'auto' factor."""
        from market_regimes.regimes.validation import choose_by_forecast

        params = {**self.get_params(), "random_state": seed, "n_init": 1}  # a ranking: the k-means start suffices
        make = lambda f: JumpRegimes(**{**params, "jump_penalty": f * float(sigma2)})  # noqa: E731
        factor, self.penalty_validation_ = choose_by_forecast(list(PENALTY_FACTORS), make, X, lengths,
                                                              fallback=AUTO_PENALTY_FACTOR)
        return float(factor) * float(sigma2)

    def _fit_one(self, X: np.ndarray, plan: _Lockstep, centroids: np.ndarray):
        centroids = np.array(centroids, dtype=np.float64)
        labels, rows = None, np.arange(len(X))
        for it in range(1, int(self.max_iter) + 1):
            loss = _sq_dists(X, centroids)
            new, objective = _viterbi(loss, plan, self.jump_penalty_)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            fitted_centroids = centroids
            centroids = self._update_centroids(X, labels, loss[rows, labels], centroids)
        else:  # not converged: report the centroids the last labels were computed with
            centroids = fitted_centroids
        return objective, centroids, labels, it

    def _update_centroids(self, X, labels, misfit, old):
        counts = np.bincount(labels, minlength=self.n_regimes)
        new = old.copy()
        for k in np.flatnonzero(counts):
            new[k] = X[labels == k].mean(axis=0)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            new[empty] = X[np.argsort(misfit)[::-1][: empty.size]]
        return new

    def _energy(self, X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        loss = _sq_dists(X, self.centroids_)
        if self.online_memory:
            return _forward_window(loss, lengths, self.jump_penalty_, int(self.online_memory))
        return _forward(loss, _Lockstep(lengths), self.jump_penalty_)

    def predict(self, X: Any, lengths: Any = None) -> Any:
        """(N,) Viterbi labels per sequence. NON-CAUSAL: uses later rows of the sequence."""
        arr, lens = self._inputs(X, lengths)
        return _like_input(X, _viterbi(_sq_dists(arr, self.centroids_), _Lockstep(lens), self.jump_penalty_)[0])

    def score(self, X: Any, lengths: Any = None) -> float:
        """Minus the jump-model objective per row on the Viterbi path (higher is better)."""
        arr, lens = self._inputs(X, lengths)
        return -_viterbi(_sq_dists(arr, self.centroids_), _Lockstep(lens), self.jump_penalty_)[1] / len(arr)

