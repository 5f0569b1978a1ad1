"""Embedded default data source: a simulated multi-asset regime-switching market with known truth.

The market has ``K`` regimes (``RegimeSpec``) and ``A`` assets on a regular UTC grid of ``T`` bars.

Regime path
    A sticky Markov chain. By default ``P[i, i] = 1 - 1/mean_duration_i`` and the leaving mass
    ``1/mean_duration_i`` is spread over the other regimes in proportion to their
    ``entry_weight`` (evenly when all weights are 1, the default). A full row-stochastic
    ``transition`` matrix replaces this (durations and weights are then unused). The first regime is drawn from the stationary
    distribution; the path is sampled run by run (the jump chain picks the next regime, the
    run length is geometric with mean ``1/(1 - P[i, i])``), so run lengths are exactly the
    geometric durations the specs ask for.

Returns, per bar ``t`` in regime ``k`` and asset ``i``::

    r[t, i] = beta_i * drift_k + s_i * vol_k * h[t] * (sqrt(corr_k) * f[t] + sqrt(1 - corr_k) * e[t, i])

    f, e   Student-t(tail_df) shocks scaled to unit variance (fat tails); f is the market factor.
    h      market-wide volatility clustering: h[t]^2 = (1 - a - b) + (a * f[t-1]^2 + b) * h[t-1]^2,
           a GARCH(1, 1) on the standardized factor shock with unconditional E[h^2] = 1. It is
           common to all assets, so it leaves the within-regime correlation at exactly corr_k, and
           it acts on standardized shocks, so a regime switch still changes vol by vol_k'/vol_k.
    s_i    the asset's vol scale, beta_i = s_i. ``asset_vol_scale`` overrides the defaults: by name
           BTC 1.0, ETH 1.25, BNB 1.4, SOL 1.6, ... LINK 2.2; other names 1.2-2.2 by position.

    Within regime k: std(r_i) ~ s_i * vol_k and corr(r_i, r_j) ~ corr_k.

Prices and volume
    ``close = p0_i * exp(cumsum r)``, ``open[t] = close[t-1]`` (the first open is ``p0_i``),
    ``high = max(open, close) * exp(|a|)``, ``low = min(open, close) * exp(-|b|)`` with a, b
    normal intrabar excursions of half the bar's vol, so ``low <= open, close <= high`` and all
    are positive. Volume (base-asset units) is lognormal around an asset base level, rising with
    the regime vol and with the bar's shock size ``|r - beta_i drift_k| / (s_i vol_k)``, plus a
    persistent AR(1) and a white log-noise, so it carries regime information only on average.

Scenario parameters are per hourly bar; for other intervals pass your own ``RegimeSpec`` list.
Everything is drawn from ``numpy.random.default_rng(seed)``: same seed, same market.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pyarrow as pa

from market_regimes.data.panel import interval_to_timedelta
from market_regimes.errors import ConfigError
from market_regimes.numerics import linear_recursion, transpose_into

_KNOWN_ASSETS: dict[str, tuple[float, float]] = {  # name -> (starting price, vol scale = beta)
    "BTCUSDT": (30000.0, 1.0), "ETHUSDT": (2000.0, 1.25), "BNBUSDT": (300.0, 1.4),
    "SOLUSDT": (40.0, 1.6), "XRPUSDT": (0.6, 1.7), "ADAUSDT": (0.5, 1.8), "DOGEUSDT": (0.08, 1.9),
    "AVAXUSDT": (20.0, 2.0), "DOTUSDT": (7.0, 2.1), "LINKUSDT": (8.0, 2.2),
}
_BASE_QUOTE_VOLUME = 5e7  # BTC's typical quote volume per bar; other assets get less


@dataclass(frozen=True)
class RegimeSpec:
    """One market regime, per bar: ``mean_duration`` (bars, > 1), ``drift`` (mean log return of
    the common factor), ``vol`` (std of a unit-scale asset's log return), ``corr`` (pairwise
    correlation of assets, in [0, 1)). ``entry_weight`` (>= 0) is the relative chance of
    entering this regime when another one ends (used only without an explicit transition matrix).
    """

    name: str
    mean_duration: float
    drift: float
    vol: float
    corr: float
    entry_weight: float = 1.0

    def __post_init__(self) -> None:
        where = f"regime {self.name!r}"
        if not np.isfinite(self.mean_duration) or self.mean_duration <= 1:
            raise ConfigError(f"{where}: mean_duration={self.mean_duration} must be > 1 bar")
        if not np.isfinite(self.drift):
            raise ConfigError(f"{where}: drift={self.drift} must be finite")
        if not np.isfinite(self.vol) or self.vol <= 0:
            raise ConfigError(f"{where}: vol={self.vol} must be > 0")
        if not 0 <= self.corr < 1:
            raise ConfigError(f"{where}: corr={self.corr} must be in [0, 1)")
        if not np.isfinite(self.entry_weight) or self.entry_weight < 0:
            raise ConfigError(f"{where}: entry_weight={self.entry_weight} must be >= 0")


def _spec(item: RegimeSpec | Mapping) -> RegimeSpec:
    if isinstance(item, RegimeSpec):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(f"a regime must be a RegimeSpec or a mapping, got {type(item).__name__}")
    allowed = {f.name for f in fields(RegimeSpec)}
    unknown = sorted(set(item) - allowed)
    missing = sorted({"name", "mean_duration", "drift", "vol", "corr"} - set(item))
    if unknown or missing:
        raise ConfigError(
            f"regime {dict(item)} has unknown keys {unknown} / lacks {missing}; "
            f"expected {sorted(allowed)}"
        )
    d = dict(item)
    return RegimeSpec(
        name=str(d.pop("name")), **{k: float(v) for k, v in d.items()}  # type: ignore[arg-type]
    )


_VOLATILITY = [
    RegimeSpec("calm", mean_duration=300, drift=0.00005, vol=0.003, corr=0.4),
    RegimeSpec("bull", mean_duration=200, drift=0.0004, vol=0.006, corr=0.5),
    RegimeSpec("bear", mean_duration=150, drift=-0.0006, vol=0.012, corr=0.8),
]
SCENARIOS: dict[str, list[RegimeSpec]] = {
    "volatility": _VOLATILITY,
    "correlation": [
        RegimeSpec("dispersed", mean_duration=250, drift=0.0001, vol=0.006, corr=0.1),
        RegimeSpec("herding", mean_duration=250, drift=0.0001, vol=0.006, corr=0.85),
    ],
    # entry_weight 0.45 makes ~1.5% of bars crash bars (stationary share of the chain)
    "crash": _VOLATILITY
    + [RegimeSpec("crash", mean_duration=18, drift=-0.004, vol=0.03, corr=0.9, entry_weight=0.45)],
}


def scenario(name: str) -> list[RegimeSpec]:
    """The regimes of a named scenario in ``SCENARIOS`` (values per hourly bar)."""
    try:
        return list(SCENARIOS[name])
    except KeyError:
        raise ConfigError(
            f"unknown synthetic scenario {name!r}; known: {', '.join(SCENARIOS)}"
        ) from None


def transition_matrix(
    regimes: Sequence[RegimeSpec], transition: Sequence[Sequence[float]] | None = None
) -> np.ndarray:
    """(K, K) row-stochastic matrix: the validated ``transition`` or the one built from the specs."""
    k = len(regimes)
    if transition is not None:
        p = np.asarray(transition, dtype=float)
        if p.shape != (k, k):
            raise ConfigError(f"transition matrix has shape {p.shape}; expected ({k}, {k}) for {k} regimes")
        if not np.isfinite(p).all() or (p < 0).any():
            raise ConfigError("transition matrix has negative or non-finite entries")
        bad = np.flatnonzero(np.abs(p.sum(axis=1) - 1) > 1e-8)
        if bad.size:
            raise ConfigError(
                f"transition matrix row {int(bad[0])} ({regimes[bad[0]].name}) sums to "
                f"{p[bad[0]].sum():.6g}, not 1"
            )
        return p / p.sum(axis=1, keepdims=True)
    if k == 1:
        return np.ones((1, 1))
    w = np.array([r.entry_weight for r in regimes])
    others = np.where(np.eye(k, dtype=bool), 0.0, w[None, :])  # (K, K): weight of j seen from i
    mass = others.sum(axis=1, keepdims=True)
    if (mass == 0).any():
        i = int(np.flatnonzero(mass[:, 0] == 0)[0])
        raise ConfigError(f"regime {regimes[i].name!r} has nowhere to go: all other entry_weights are 0")
    leave = 1.0 / np.array([r.mean_duration for r in regimes])
    return np.diag(1 - leave) + leave[:, None] * others / mass


def stationary_distribution(p: np.ndarray) -> np.ndarray:
    """(K,) solution of pi P = pi, sum(pi) = 1 (least squares, clipped for reducible chains)."""
    k = len(p)
    a = np.vstack([p.T - np.eye(k), np.ones((1, k))])
    b = np.r_[np.zeros(k), 1.0]
    pi = np.clip(np.linalg.lstsq(a, b, rcond=None)[0], 0, None)
    return pi / pi.sum()


def _regime_path(p: np.ndarray, n_bars: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) int regime ids: jump-chain states repeated by geometric run lengths."""
    k = len(p)
    stay = np.diag(p)
    jump = np.where(np.eye(k, dtype=bool), 0.0, p)
    absorbing = stay >= 1.0
    jump[absorbing, absorbing] = 1.0  # never leaves (its run lasts to the end)
    cum = np.cumsum(jump, axis=1).tolist()
    pi = stationary_distribution(p)
    state = int(rng.choice(k, p=pi))
    states, lengths, total = [], [], 0
    expected_runs = n_bars * float(pi @ (1 - stay))
    batch = int(1.2 * expected_runs) + 16
    while total < n_bars:
        u = rng.random(batch).tolist()
        chunk = []
        for x in u:  # the jump chain is inherently sequential; one bisect per run
            chunk.append(state)
            row = cum[state]
            state = min(bisect.bisect_right(row, x * row[-1]), k - 1)
        chunk_arr = np.array(chunk)
        leave = 1 - stay[chunk_arr]
        run = np.where(leave > 0, rng.geometric(np.where(leave > 0, leave, 1.0)), n_bars)
        states.append(chunk_arr)
        lengths.append(run)
        total += int(run.sum())
    return np.repeat(np.concatenate(states), np.concatenate(lengths))[:n_bars]


def _garch_multiplier(shock: np.ndarray, alpha: float, beta: float, block: int = 128) -> np.ndarray:
    """(T,) h with h[t]^2 = w + (alpha * shock[t-1]^2 + beta) * h[t-1]^2, w = 1 - alpha - beta.

    A linear recurrence with known coefficients, solved in closed form inside blocks of
    ``block`` bars (bounded cumulative products) and chained across blocks.
    """
    n = len(shock)
    omega = 1.0 - alpha - beta
    coef = np.empty(n)
    coef[0] = alpha + beta  # E[shock^2] = 1 before the first bar
    coef[1:] = alpha * shock[:-1] ** 2 + beta
    nb = -(-n // block)
    coef = np.pad(coef, (0, nb * block - n), constant_values=1.0).reshape(nb, block)
    log_c = np.cumsum(np.log(coef), axis=1)
    c = np.exp(log_c)  # (nb, B): product of coefs since block start
    s = c * np.cumsum(np.exp(-log_c), axis=1)  # (nb, B): sum over m of prod_{m<k<=j} coef
    start = np.empty(nb)  # h^2 just before each block
    prev = 1.0
    for b in range(nb):
        start[b] = prev
        prev = c[b, -1] * prev + omega * s[b, -1]
    h2 = c * start[:, None] + omega * s
    return np.sqrt(h2.ravel()[:n])


def _asset_defaults(symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(A,) starting prices and vol scales: known coins by name, others spread over
    prices 1-100 and scales 1.2-2.2 by position (deterministic, not seeded)."""
    levels = []
    for i, sym in enumerate(symbols):
        j = (i * 0.618034) % 1.0
        levels.append(_KNOWN_ASSETS.get(sym, (10 ** (2 * j), 1.2 + j)))
    p0, scale = np.array(levels).T
    return p0, scale


def default_symbols(n_assets: int) -> list[str]:
    names = list(_KNOWN_ASSETS)
    return names[:n_assets] + [f"SYN{i + 1:03d}USDT" for i in range(len(names), n_assets)]


def simulate_market(
    regimes: Sequence[RegimeSpec | Mapping],
    n_bars: int,
    symbols: Sequence[str] | None = None,
    n_assets: int = 3,
    interval: str = "1h",
    start: str = "2022-01-01",
    seed: int = 0,
    tail_df: float = 5.0,
    garch_alpha: float = 0.05,
    garch_beta: float = 0.90,
    asset_vol_scale: Sequence[float] | None = None,
    transition: Sequence[Sequence[float]] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Simulate the market described in the module docstring.

    Returns ``(ohlcv, truth)``: the canonical long table (timestamp UTC bar open, symbol, open,
    high, low, close, volume; sorted by symbol then timestamp) and the ``(T,)`` int Series
    ``regime`` of true regime ids (positions in ``regimes``) on the bar index ``timestamp``.
    """
    specs = [_spec(r) for r in regimes]
    if not specs:
        raise ConfigError("simulate_market needs at least one regime")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"regime names must be unique, got {names}")
    if int(n_bars) != n_bars or n_bars < 2:
        raise ConfigError(f"n_bars={n_bars} must be an integer >= 2")
    n_bars = int(n_bars)
    if symbols is not None:
        symbols = [str(s) for s in symbols]
        if not symbols or len(set(symbols)) != len(symbols):
            raise ConfigError(f"symbols={symbols} must be a non-empty list of distinct names")
    elif n_assets < 1:
        raise ConfigError(f"n_assets={n_assets} must be >= 1")
    symbols = symbols or default_symbols(int(n_assets))
    n = len(symbols)
    if not tail_df > 2:
        raise ConfigError(f"tail_df={tail_df} must be > 2 (finite variance); use inf for normal shocks")
    if garch_alpha < 0 or garch_beta < 0 or garch_alpha + garch_beta >= 1:
        raise ConfigError(
            f"garch_alpha={garch_alpha}, garch_beta={garch_beta}: need both >= 0 and a sum < 1"
        )
    p0, scale = _asset_defaults(symbols)
    if asset_vol_scale is not None:
        scale = np.asarray(asset_vol_scale, dtype=float)
        if scale.shape != (n,) or not (scale > 0).all():
            raise ConfigError(f"asset_vol_scale needs {n} positive values (one per symbol), got {list(scale)}")
    step = interval_to_timedelta(interval)
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    if t0.floor(step) != t0:
        raise ConfigError(f"start={start!r} is not on the {interval} bar grid")
    p = transition_matrix(specs, transition)
    rng = np.random.default_rng(seed)

    regime = _regime_path(p, n_bars, rng)  # (T,)
    drift, vol, corr = (np.array([getattr(s, a) for s in specs])[regime] for a in ("drift", "vol", "corr"))
    # The (T, A) arithmetic below runs in place on a few buffers (same operations in the same
    # order as the formulas in the module docstring, so the same numbers): at hundreds of assets
    # each fresh (T, A) temporary is hundreds of MB of first-touched memory.
    shocks = _student_t(rng, tail_df, (n_bars, n + 1))
    f, z = shocks[:, 0], shocks[:, 1:]  # (T,), (T, A): z holds e, then the standardized shock
    h = _garch_multiplier(f, garch_alpha, garch_beta) if garch_alpha > 0 else np.ones(n_bars)
    z *= np.sqrt(1 - corr)[:, None]
    z += (np.sqrt(corr) * f)[:, None]
    z *= h[:, None]
    bar_vol = np.multiply(vol[:, None], scale[None, :])  # (T, A): regime std of each asset's return
    close = np.multiply(bar_vol, z)  # the log return r, then its cumulative sum, then the close
    close += drift[:, None] * scale[None, :]
    np.cumsum(close, axis=0, out=close)
    np.exp(close, out=close)
    close *= p0[None, :]
    open_ = np.vstack([p0[None, :], close[:-1]])
    excursion = bar_vol
    excursion *= 0.5
    excursion *= h[:, None]
    high = _excursion(rng, excursion, np.maximum(open_, close), up=True)
    low = _excursion(rng, excursion, np.minimum(open_, close), up=False)
    del bar_vol, excursion
    vol_ref = np.exp(np.mean(np.log([s.vol for s in specs])))
    volume = _volume(rng, z, vol / vol_ref, p0)

    index = pd.date_range(t0, periods=n_bars, freq=step, name="timestamp")
    ohlcv = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    truth = pd.Series(regime.astype(np.int64), index=index, name="regime")
    return _long_table(index, symbols, ohlcv), truth


def _long_table(index: pd.DatetimeIndex, symbols: Sequence[str], ohlcv: dict[str, np.ndarray]) -> pd.DataFrame:
    """Canonical long table from (T, A) field arrays, rows sorted by symbol then time."""
    n_bars, order = len(index), np.argsort(symbols, kind="stable")
    codes = pa.array(np.repeat(np.arange(len(symbols), dtype=np.int32), n_bars))
    names = pa.array([symbols[i] for i in order], type=pa.string())
    # The float fields go straight into one (fields, rows) block, written (A, T) -> symbol-major
    # rows in place: pandas keeps it as the frame's float block instead of stacking copies; the
    # transpose goes in blocks of bars (numerics.transpose_into).
    block = np.empty((len(ohlcv), len(symbols) * n_bars))
    for row, a in zip(block, ohlcv.values()):
        transpose_into(row.reshape(len(symbols), n_bars), a, columns=order)
    frame = pd.DataFrame(block.T, columns=list(ohlcv), copy=False)
    frame.insert(0, "timestamp", index.take(np.tile(np.arange(n_bars), len(symbols))))
    # built through Arrow: a Python list of T * A names is slow at hundreds of assets
    frame.insert(1, "symbol", pd.Series(pa.DictionaryArray.from_arrays(codes, names).dictionary_decode().to_pandas(),
                                        dtype=str))
    return frame


def _student_t(rng: np.random.Generator, df: float, shape: tuple[int, int]) -> np.ndarray:
    """Student-t shocks with unit variance (standard normal for df = inf)."""
    if np.isinf(df):
        return rng.standard_normal(shape)
    x = rng.standard_t(df, shape)
    x *= np.sqrt((df - 2) / df)
    return x


def _excursion(rng: np.random.Generator, scale: np.ndarray, edge: np.ndarray, up: bool) -> np.ndarray:
    """``edge * exp(+-scale * |N(0, 1)|)`` in place in ``edge``, one (T, A) normal draw."""
    move = np.abs(rng.standard_normal(edge.shape))
    move *= scale
    if not up:
        np.negative(move, out=move)
    np.exp(move, out=move)
    edge *= move
    return edge


def _volume(
    rng: np.random.Generator, z: np.ndarray, rel_vol: np.ndarray, p0: np.ndarray
) -> np.ndarray:
    """(T, A) lognormal volume: base level x regime vol x shock size x persistent noise.

    ``z`` (T, A) standardized shocks, ``rel_vol`` (T,) regime vol over the regimes' geometric mean.
    """
    n_bars, n = z.shape
    base = _BASE_QUOTE_VOLUME * 0.7 ** np.minimum(np.arange(n), 10) / p0  # base-asset units
    level = np.abs(z)  # shock size, then the whole log level
    level -= 0.8  # E|z| ~ 0.8
    level *= 0.3
    level += 0.5 * np.log(rel_vol)[:, None]  # the regime's level
    noise = linear_recursion(rng.standard_normal((n_bars, n)), 0.95)  # persistent AR(1) ...
    noise *= np.sqrt(1 - 0.95**2) * 0.3
    white = rng.standard_normal((n_bars, n))  # ... plus white noise
    white *= 0.25
    noise += white
    del white
    level += noise
    np.exp(level, out=level)
    level *= base[None, :]
    return level


def simulate_grouped_market(
    group_sizes: Sequence[int] = (5, 5),
    n_independent: int = 1,
    n_bars: int = 500,
    interval: str = "1d",
    start: str = "2022-01-01",
    seed: int = 0,
    group_vol: Sequence[float] | None = None,
    group_drift: Sequence[float] | None = None,
    group_corr: Sequence[float] | None = None,
    independent_vol: float = 0.01,
    independent_drift: float = 0.0,
    tail_df: float = 5.0,
    symbols: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """A market with planted asset groups and no regimes (for the asset-clustering analysis).

    Block ``g`` (``group_sizes[g]`` assets) is driven by its own common factor ``f_g``, independent
    of the other blocks'; ``n_independent`` further assets have no common factor. Per bar of
    ``dt = interval / 1 day``::

        r[t, i] = drift_g * dt + vol_i * sqrt(dt) * (sqrt(corr_g) * f_g[t] + sqrt(1 - corr_g) * e[t, i])

    with Student-t(tail_df) unit-variance shocks, ``vol_i = group_vol[g] * (1 + 0.1 u_i)``,
    u_i ~ U(-1, 1). Parameters are per day: defaults ``group_vol[g] = 0.03 (g + 1)``,
    ``group_drift[g] = +0.001`` for even g and ``-0.001`` for odd g, ``group_corr[g] = 0.6``;
    independent assets use ``independent_vol`` / ``independent_drift``. Daily quote volume is
    ``1e8 * 0.2 ** g`` for block g and ``1e6`` for independent assets (times a per-asset and a per-bar
    lognormal factor). Symbols default to ``A1USDT, A2USDT, ..`` for block 0, ``B1USDT, ..`` for
    block 1, and ``I1USDT, ..`` for the independent assets.

    Returns ``(ohlcv, group)``: the canonical long table (as ``simulate_market``) and a Series
    ``group`` indexed by symbol, block id ``0..G-1`` or ``-1`` for an independent asset.
    """
    sizes = [int(s) for s in group_sizes]
    if any(s < 1 for s in sizes) or int(n_independent) < 0 or not sizes and not n_independent:
        raise ConfigError(f"group_sizes={list(group_sizes)} must be >= 1 each and n_independent={n_independent} >= 0")
    if int(n_bars) != n_bars or n_bars < 2:
        raise ConfigError(f"n_bars={n_bars} must be an integer >= 2")
    if not tail_df > 2:
        raise ConfigError(f"tail_df={tail_df} must be > 2 (finite variance); use inf for normal shocks")
    n_groups, n_ind = len(sizes), int(n_independent)

    def per_group(values, default, name):
        out = np.array([default(g) for g in range(n_groups)] if values is None else values, dtype=float)
        if out.shape != (n_groups,) or not np.isfinite(out).all():
            raise ConfigError(f"{name}={list(out)} needs {n_groups} finite values (one per block)")
        return out

    vol_g = per_group(group_vol, lambda g: 0.03 * (g + 1), "group_vol")
    drift_g = per_group(group_drift, lambda g: 0.001 if g % 2 == 0 else -0.001, "group_drift")
    corr_g = per_group(group_corr, lambda g: 0.6, "group_corr")
    if (vol_g <= 0).any() or independent_vol <= 0 or ((corr_g < 0) | (corr_g >= 1)).any():
        raise ConfigError("group_vol and independent_vol must be > 0 and group_corr in [0, 1)")
    group = np.concatenate([np.repeat(np.arange(n_groups), sizes), np.full(n_ind, -1)])  # (A,)
    n = len(group)
    if symbols is None:
        symbols = [f"{chr(65 + g)}{j + 1}USDT" for g, s in enumerate(sizes) for j in range(s)]
        symbols += [f"I{j + 1}USDT" for j in range(n_ind)]
    symbols = [str(s) for s in symbols]
    if len(symbols) != n or len(set(symbols)) != n:
        raise ConfigError(f"symbols={symbols} must be {n} distinct names (sum of group_sizes + n_independent)")

    step = interval_to_timedelta(interval)
    dt = step / pd.Timedelta("1D")
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    if t0.floor(step) != t0:
        raise ConfigError(f"start={start!r} is not on the {interval} bar grid")
    n_bars = int(n_bars)
    rng = np.random.default_rng(seed)
    member = group >= 0
    gi = np.where(member, group, 0)
    vol = np.where(member, vol_g[gi], independent_vol) * (1 + 0.1 * rng.uniform(-1, 1, n))  # (A,)
    drift = np.where(member, drift_g[gi], independent_drift)
    corr = np.where(member, corr_g[gi], 0.0)
    factors = _student_t(rng, tail_df, (n_bars, max(n_groups, 1)))  # (T, G)
    e = _student_t(rng, tail_df, (n_bars, n))  # (T, A)
    z = np.sqrt(corr)[None, :] * np.where(member, factors[:, gi], 0.0) + np.sqrt(1 - corr)[None, :] * e
    r = drift[None, :] * dt + vol[None, :] * np.sqrt(dt) * z  # (T, A)

    p0 = 10 ** rng.uniform(0, 3, n)
    close = p0[None, :] * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([p0[None, :], close[:-1]])
    excursion = 0.5 * vol[None, :] * np.sqrt(dt)
    high = np.maximum(open_, close) * np.exp(excursion * np.abs(rng.standard_normal((n_bars, n))))
    low = np.minimum(open_, close) * np.exp(-excursion * np.abs(rng.standard_normal((n_bars, n))))
    daily_quote = np.where(member, 1e8 * 0.2 ** gi, 1e6) * np.exp(0.3 * rng.standard_normal(n))
    volume = daily_quote[None, :] * dt / close * np.exp(0.4 * rng.standard_normal((n_bars, n)))

    index = pd.date_range(t0, periods=n_bars, freq=step, name="timestamp")
    ohlcv = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    planted = pd.Series(group.astype(np.int64), index=pd.Index(symbols, name="symbol"), name="group")
    return _long_table(index, symbols, ohlcv), planted
