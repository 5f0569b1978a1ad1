"""Standard regime simulations for the regime benchmark (suites 1 and 2) and their OHLCV panels.

* :func:`two_state_returns`: the two-state Gaussian daily model with Hardy's parameters as used
  by Nystrup et al. (means 0.000615 / -0.000785, volatilities 0.007759 / 0.01740, transition
  matrix [[0.9979, 0.0021], [0.0120, 0.9880]]). The regime chain and the returns come from the
  project's generator (:func:`market_regimes.data.synthetic.simulate_market` with one asset,
  Gaussian shocks, no GARCH and the given transition matrix), so ``r_t = mu_s + sigma_s e_t``.
* :func:`switching_path`: regime-switching geometric Brownian motion or Merton jump-diffusion as
  in Horvath, Issa and Muguruza (2021): ``years`` years of ``252 * steps_per_day`` steps with
  ``n_episodes`` non-overlapping bear episodes of ``episode_years`` each at random positions,
  bull otherwise. Parameters are annual; per step ``dt = 1 / (252 * steps_per_day)``:
  ``r = (mu - sigma^2 / 2 - lam * kappa) dt + sigma sqrt(dt) Z + sum_{i <= N} J_i`` with
  ``N ~ Poisson(lam dt)``, ``J_i ~ N(gamma, delta^2)`` and ``kappa = exp(gamma + delta^2 / 2) - 1``
  (``lam = 0`` is gBm).
* :func:`returns_panel`: a univariate return series as a one-asset :class:`Panel` the project's
  feature stage can read: ``close = exp(cumsum r)``, ``open`` the previous close, ``high`` /
  ``low`` the larger / smaller of the two (a return series has no intrabar range), and a volume
  of i.i.d. log-normal noise (it has no volume either; the suites leave the volume features out
  of the model inputs).

Truth is 0 (bull) / 1 (bear) per bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel, interval_to_timedelta
from market_regimes.data.synthetic import RegimeSpec, simulate_market
from market_regimes.errors import ConfigError

HARDY_MEANS = (0.000615, -0.000785)
HARDY_VOLS = (0.007759, 0.01740)
HARDY_TRANSITION = ((0.9979, 0.0021), (0.0120, 0.9880))


def two_state_returns(n_bars: int, seed: int, means=HARDY_MEANS, vols=HARDY_VOLS,
                      transition=HARDY_TRANSITION) -> tuple[np.ndarray, np.ndarray]:
    """(returns (T,), states (T,)) of the two-state daily model; the first state is drawn from
    the stationary distribution."""
    p = np.asarray(transition, dtype=float)
    specs = [RegimeSpec(name, mean_duration=1.0 / (1.0 - p[i, i]), drift=float(means[i]), vol=float(vols[i]), corr=0.0)
             for i, name in enumerate(("bull", "bear"))]
    long, truth = simulate_market(specs, n_bars, symbols=["SIM"], interval="1d", seed=seed, tail_df=np.inf,
                                  garch_alpha=0.0, garch_beta=0.0, asset_vol_scale=[1.0], transition=p)
    close = long["close"].to_numpy()
    returns = np.diff(np.log(close), prepend=np.log(long["open"].to_numpy()[0]))
    return returns, truth.to_numpy()


@dataclass(frozen=True)
class PathRegime:
    """Annual drift ``mu`` and volatility ``sigma``; Merton jumps: intensity ``lam`` per year,
    log jump size N(``gamma``, ``delta``^2). ``lam = 0``: geometric Brownian motion."""

    mu: float
    sigma: float
    lam: float = 0.0
    gamma: float = 0.0
    delta: float = 0.0


SWITCHING_MODELS: dict[str, tuple[PathRegime, PathRegime]] = {  # (bull, bear)
    "gbm": (PathRegime(0.02, 0.2), PathRegime(-0.02, 0.3)),
    "merton": (PathRegime(0.05, 0.2, 5.0, 0.02, 0.0125), PathRegime(-0.05, 0.4, 10.0, -0.04, 0.1)),
}


def episode_mask(n_steps: int, n_episodes: int, episode_steps: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) bool: ``n_episodes`` non-overlapping runs of ``episode_steps`` at uniformly random
    positions (the free steps between them are split by a uniform random composition)."""
    free = n_steps - n_episodes * episode_steps
    if free < 0:
        raise ConfigError(f"{n_episodes} episodes of {episode_steps} steps do not fit in {n_steps} steps")
    # c_i - i (sorted distinct draws minus their rank) is the number of free steps before episode i
    starts = np.sort(rng.choice(free + n_episodes, n_episodes, replace=False)) + np.arange(n_episodes) * (episode_steps - 1)
    mask = np.zeros(n_steps, dtype=bool)
    for s in starts:
        mask[s : s + episode_steps] = True
    return mask


def switching_path(model: str, seed: int, years: float = 20.0, steps_per_day: int = 7, n_episodes: int = 10,
                   episode_years: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(log returns (T,), states (T,), 1 = bear) of one regime-switching path, see the module doc."""
    if model not in SWITCHING_MODELS:
        raise ConfigError(f"unknown switching model {model!r}; known: {', '.join(SWITCHING_MODELS)}")
    per_year = 252 * int(steps_per_day)
    n_steps, dt = int(round(years * per_year)), 1.0 / per_year
    rng = np.random.default_rng(seed)
    state = episode_mask(n_steps, int(n_episodes), int(round(episode_years * per_year)), rng).astype(np.int64)
    params = SWITCHING_MODELS[model]
    get = lambda name: np.array([getattr(r, name) for r in params])[state]  # noqa: E731
    mu, sigma, lam, gamma, delta = (get(n) for n in ("mu", "sigma", "lam", "gamma", "delta"))
    kappa = np.exp(gamma + 0.5 * delta**2) - 1.0
    n_jumps = rng.poisson(lam * dt)
    jumps = gamma * n_jumps + delta * np.sqrt(n_jumps) * rng.standard_normal(n_steps)
    r = (mu - 0.5 * sigma**2 - lam * kappa) * dt + sigma * np.sqrt(dt) * rng.standard_normal(n_steps) + jumps
    return r, state


def returns_panel(returns: np.ndarray, interval: str = "1d", start: str = "2000-01-03", seed: int = 0,
                  symbol: str = "SIM") -> Panel:
    """A one-asset panel whose close-to-close log returns are ``returns`` (see the module doc)."""
    r = np.asarray(returns, dtype=np.float64)
    index = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=len(r), freq=interval_to_timedelta(interval),
                          name="timestamp")
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    volume = np.exp(np.random.default_rng(seed).normal(0.0, 0.3, len(r)))
    frame = lambda x: pd.DataFrame({symbol: x}, index=index).rename_axis(columns="symbol")  # noqa: E731
    return Panel(open=frame(open_), high=frame(np.maximum(open_, close)), low=frame(np.minimum(open_, close)),
                 close=frame(close), volume=frame(volume), interval=interval)
