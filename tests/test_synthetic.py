"""The synthetic regime-switching market: canonical output, determinism, and the statistics it promises."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from market_regimes.data.panel import CANONICAL_COLUMNS, to_panel
from market_regimes.data.synthetic import (
    SCENARIOS,
    RegimeSpec,
    _asset_defaults,
    _garch_multiplier,
    _regime_path,
    default_symbols,
    simulate_market,
    scenario,
    stationary_distribution,
    transition_matrix,
)
from market_regimes.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def _returns(long: pd.DataFrame) -> pd.DataFrame:
    """(T-1, A) close-to-close log returns, bar index, symbol columns."""
    close = long.pivot(index="timestamp", columns="symbol", values="close")
    return np.log(close).diff().iloc[1:]


def _runs(truth: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(state, length) of each complete run; the first and last runs are cut by the sample ends."""
    x = truth.to_numpy()
    cuts = np.flatnonzero(np.diff(x)) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(x)]
    return x[starts][1:-1], (ends - starts)[1:-1]


@pytest.fixture(scope="module")
def long_volatility():
    """A long simulation of the volatility scenario shared by the statistical tests."""
    return simulate_market(scenario("volatility"), n_bars=150_000, n_assets=3, seed=11)


def test_canonical_long_table_and_truth():
    long, truth = simulate_market(scenario("volatility"), n_bars=500, n_assets=4, interval="4h",
                                  start="2023-03-01", seed=3)
    assert list(long.columns) == list(CANONICAL_COLUMNS)
    for col in ("open", "high", "low", "close", "volume"):
        assert long[col].dtype == np.float64
    assert str(long["timestamp"].dt.tz) == "UTC"
    assert pd.api.types.is_string_dtype(long["symbol"])
    assert sorted(long["symbol"].unique()) == ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"]
    expected_sorted = long.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(long, expected_sorted)
    grid = pd.date_range("2023-03-01", periods=500, freq="4h", tz="UTC")
    for _, g in long.groupby("symbol"):
        assert (g["timestamp"].to_numpy() == grid.to_numpy()).all()
    # truth: one int regime per bar, on the same bars
    assert truth.name == "regime" and truth.index.name == "timestamp"
    assert truth.dtype == np.int64 and set(truth.unique()) <= {0, 1, 2}
    assert (truth.index == grid).all()
    panel = to_panel(long, interval="4h")  # the data stage accepts it as is
    assert panel.close.shape == (500, 4) and not panel.close.isna().any().any()


def test_deterministic_by_seed():
    a = simulate_market(scenario("crash"), n_bars=2000, n_assets=3, seed=5)
    b = simulate_market(scenario("crash"), n_bars=2000, n_assets=3, seed=5)
    c = simulate_market(scenario("crash"), n_bars=2000, n_assets=3, seed=6)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_series_equal(a[1], b[1])
    assert not np.allclose(a[0]["close"], c[0]["close"])


def test_ohlc_consistent_and_positive():
    long, _ = simulate_market(scenario("crash"), n_bars=20_000, n_assets=10, seed=2)
    o, h, l, c, v = (long[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert (l > 0).all() and (v > 0).all() and np.isfinite(long[["open", "high", "low", "close", "volume"]]).all().all()
    assert (l <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    for _, g in long.groupby("symbol"):  # no gaps between bars: open is the previous close
        np.testing.assert_array_equal(g["open"].to_numpy()[1:], g["close"].to_numpy()[:-1])


def test_symbol_names():
    long, _ = simulate_market(scenario("volatility"), n_bars=50, n_assets=12)
    names = set(long["symbol"].unique())
    assert {"BTCUSDT", "LINKUSDT", "SYN011USDT", "SYN012USDT"} <= names and len(names) == 12
    long, _ = simulate_market(scenario("volatility"), n_bars=50, symbols=["AAA", "BBB"], n_assets=7)
    assert sorted(long["symbol"].unique()) == ["AAA", "BBB"]


def test_mean_run_length_matches_mean_duration(long_volatility):
    # Run lengths are geometric with mean d and std sqrt(1 - 1/d) * d, so the mean of n complete
    # runs has standard error ~ d / sqrt(n); allow 4 standard errors.
    _, truth = long_volatility
    states, lengths = _runs(truth)
    for k, spec in enumerate(scenario("volatility")):
        runs = lengths[states == k]
        d = spec.mean_duration
        se = d * np.sqrt(1 - 1 / d) / np.sqrt(len(runs))
        assert len(runs) > 100
        assert abs(runs.mean() - d) < 4 * se, (spec.name, runs.mean(), d, se)


def test_within_regime_vol_and_correlation(long_volatility):
    long, truth = long_volatility
    r = _returns(long)
    label = truth.loc[r.index].to_numpy()
    scale = {"BTCUSDT": 1.0, "ETHUSDT": 1.25, "BNBUSDT": 1.4}
    for k, spec in enumerate(scenario("volatility")):
        rk = r[label == k]
        for sym, s in scale.items():
            assert rk[sym].std() == pytest.approx(s * spec.vol, rel=0.06), (spec.name, sym)
        pairs = rk.corr().to_numpy()[np.triu_indices(3, 1)]
        np.testing.assert_allclose(pairs, spec.corr, atol=0.03, err_msg=spec.name)


def test_betas_scale_asset_vol(long_volatility):
    r = _returns(long_volatility[0])
    assert r["ETHUSDT"].std() / r["BTCUSDT"].std() == pytest.approx(1.25, rel=0.05)
    assert r["BNBUSDT"].std() / r["BTCUSDT"].std() == pytest.approx(1.4, rel=0.05)
    long, _ = simulate_market(scenario("volatility"), n_bars=50_000, n_assets=2, asset_vol_scale=[1.0, 3.0])
    r = _returns(long)
    assert r["ETHUSDT"].std() / r["BTCUSDT"].std() == pytest.approx(3.0, rel=0.05)
    # known coins keep their scale by name, whatever their position
    long, _ = simulate_market(scenario("volatility"), n_bars=50_000, symbols=["ETHUSDT", "BTCUSDT"])
    r = _returns(long)
    assert r["ETHUSDT"].std() / r["BTCUSDT"].std() == pytest.approx(1.25, rel=0.05)


def _within_regime_excess_kurtosis(long: pd.DataFrame, truth: pd.Series) -> float:
    r = _returns(long)["BTCUSDT"]
    label = truth.loc[r.index]
    z = r.groupby(label).transform(lambda x: (x - x.mean()) / x.std())
    return float(z.kurt())


def test_fat_tails_and_their_absence():
    specs = scenario("correlation")
    fat = simulate_market(specs, n_bars=60_000, n_assets=2, seed=4, tail_df=5.0)
    thin = simulate_market(specs, n_bars=60_000, n_assets=2, seed=4, tail_df=np.inf, garch_alpha=0.0)
    assert _within_regime_excess_kurtosis(*fat) > 0.5
    assert abs(_within_regime_excess_kurtosis(*thin)) < 0.15  # Gaussian, no clustering


def test_volatility_clustering_follows_garch_alpha():
    # one regime, Gaussian shocks: GARCH(0.1, 0.85) has lag-1 autocorrelation of r^2 of ~0.18
    def acf1_of_squares(alpha: float) -> float:
        long, _ = simulate_market([RegimeSpec("one", 10.0, 0.0, 0.01, 0.5)], n_bars=60_000,
                                  n_assets=1, seed=8, tail_df=np.inf, garch_alpha=alpha, garch_beta=0.85)
        sq = _returns(long)["BTCUSDT"].to_numpy() ** 2
        return float(np.corrcoef(sq[1:], sq[:-1])[0, 1])

    assert acf1_of_squares(0.1) > 0.1
    assert abs(acf1_of_squares(0.0)) < 0.03


def test_correlation_scenario_differs_in_correlation_only():
    long, truth = simulate_market(scenario("correlation"), n_bars=60_000, n_assets=3, seed=9)
    r = _returns(long)
    label = truth.loc[r.index].to_numpy()
    low, high = r[label == 0], r[label == 1]
    for sym in r.columns:
        assert 0.9 < low[sym].std() / high[sym].std() < 1.1
    c_low = low.corr().to_numpy()[np.triu_indices(3, 1)].mean()
    c_high = high.corr().to_numpy()[np.triu_indices(3, 1)].mean()
    assert c_high - c_low > 0.5


def test_crash_regime_is_short_rare_and_present():
    specs = scenario("crash")
    crash = [s.name for s in specs].index("crash")
    _, truth = simulate_market(specs, n_bars=100_000, n_assets=2, seed=1)
    states, lengths = _runs(truth)
    share = (truth == crash).mean()
    assert (states == crash).sum() >= 20
    assert lengths[states == crash].mean() < 30
    assert 0.002 < share < 0.05
    assert stationary_distribution(transition_matrix(specs))[crash] < 0.05


def test_explicit_transition_matrix_is_followed():
    cycle = [[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]]  # 0 -> 1 -> 2 -> 0 only
    _, truth = simulate_market(scenario("volatility"), n_bars=5000, transition=cycle, seed=0)
    x = truth.to_numpy()
    moves = x[1:][x[1:] != x[:-1]], x[:-1][x[1:] != x[:-1]]
    assert len(moves[0]) > 100
    assert ((moves[1] + 1) % 3 == moves[0]).all()


@pytest.mark.parametrize("bad", [
    [[0.9, 0.1], [0.1, 0.9]],  # wrong shape for 3 regimes
    [[0.9, 0.2, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]],  # row sums to 1.1
    [[1.1, -0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]],  # negative entry
])
def test_bad_transition_matrix_raises(bad):
    with pytest.raises(ConfigError, match="transition matrix"):
        simulate_market(scenario("volatility"), n_bars=100, transition=bad)


def test_bad_specs_raise():
    with pytest.raises(ConfigError, match="unknown synthetic scenario 'nope'.*volatility"):
        scenario("nope")
    with pytest.raises(ConfigError, match="corr"):
        RegimeSpec("x", mean_duration=10, drift=0.0, vol=0.01, corr=1.0)
    with pytest.raises(ConfigError, match="mean_duration"):
        simulate_market([{"name": "x", "mean_duration": 1, "drift": 0, "vol": 0.01, "corr": 0.2}], 100)
    with pytest.raises(ConfigError, match="unknown keys"):
        simulate_market([{"name": "x", "mean_duration": 5, "drift": 0, "vol": 0.01, "corr": 0.2, "sigma": 1}], 100)


def test_yaml_configs_and_mapping_regimes():
    base = OmegaConf.load(CONFIG_DIR / "data" / "synthetic.yaml")
    assert set(base) == {"source", "scenario", "regimes", "n_bars", "symbols", "interval", "start",
                         "end", "seed", "tail_df", "garch_alpha", "garch_beta"}
    assert base.scenario in SCENARIOS
    for name in ("correlation", "crash"):
        child = OmegaConf.load(CONFIG_DIR / "data" / f"synthetic_{name}.yaml")
        assert list(child.defaults) == ["synthetic", "_self_"] and child.scenario == name
    # a `regimes:` override arrives as a list of DictConfigs
    regimes = OmegaConf.create([{"name": "a", "mean_duration": 50, "drift": 0.0, "vol": 0.01, "corr": 0.3},
                                {"name": "b", "mean_duration": 50, "drift": 0.0, "vol": 0.02, "corr": 0.6}])
    long, truth = simulate_market(regimes, n_bars=int(base.n_bars), symbols=list(base.symbols),
                                  interval=base.interval, start=base.start, seed=base.seed)
    assert len(long) == 3 * base.n_bars and set(truth.unique()) == {0, 1}


@pytest.mark.parametrize("tail_df, garch_alpha", [(5.0, 0.05), (np.inf, 0.0)])
def test_values_follow_the_documented_formulas(tail_df, garch_alpha):
    """The module docstring's formulas written out plainly, one (T, A) array per term, with the
    random draws in the generator's order (regime path, shocks, high, low, volume AR, volume
    noise), give its numbers: open/high/low/close bit for bit (the in-place arithmetic changes no
    value; benchmark archives depend on the same seed giving the same market), volume to rounding
    (an AR loop here), and the GARCH multiplier as the plain recursion."""
    specs, n_bars, n, seed = scenario("crash"), 3000, 7, 5
    long, truth = simulate_market(specs, n_bars=n_bars, n_assets=n, seed=seed, tail_df=tail_df,
                                  garch_alpha=garch_alpha)

    rng = np.random.default_rng(seed)
    regime = _regime_path(transition_matrix(specs), n_bars, rng)
    drift, vol, corr = (np.array([getattr(s, a) for s in specs])[regime] for a in ("drift", "vol", "corr"))
    shocks = (rng.standard_normal((n_bars, n + 1)) if np.isinf(tail_df)
              else rng.standard_t(tail_df, (n_bars, n + 1)) * np.sqrt((tail_df - 2) / tail_df))
    f, e = shocks[:, 0], shocks[:, 1:]
    h = _garch_multiplier(f, garch_alpha, 0.90) if garch_alpha > 0 else np.ones(n_bars)
    h2 = np.ones(n_bars)
    for t in range(1, n_bars):
        h2[t] = (1 - garch_alpha - 0.90) + (garch_alpha * f[t - 1] ** 2 + 0.90) * h2[t - 1]
    np.testing.assert_allclose(h, np.sqrt(h2), rtol=1e-10)
    p0, s = _asset_defaults(default_symbols(n))
    z = h[:, None] * (np.sqrt(corr)[:, None] * f[:, None] + np.sqrt(1 - corr)[:, None] * e)
    r = s[None, :] * drift[:, None] + s[None, :] * vol[:, None] * z
    close = p0 * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([p0[None, :], close[:-1]])
    excursion = 0.5 * s[None, :] * vol[:, None] * h[:, None]
    high = np.maximum(open_, close) * np.exp(excursion * np.abs(rng.standard_normal((n_bars, n))))
    low = np.minimum(open_, close) * np.exp(-excursion * np.abs(rng.standard_normal((n_bars, n))))
    ar = np.zeros((n_bars, n))
    white_ar = rng.standard_normal((n_bars, n))
    for t in range(n_bars):
        ar[t] = (0.95 * ar[t - 1] if t else 0.0) + white_ar[t]
    log_rel_vol = np.log(vol) - np.mean(np.log([x.vol for x in specs]))
    level = (0.5 * log_rel_vol[:, None] + 0.3 * (np.abs(z) - 0.8)
             + np.sqrt(1 - 0.95**2) * 0.3 * ar + 0.25 * rng.standard_normal((n_bars, n)))
    base = 5e7 * 0.7 ** np.minimum(np.arange(n), 10) / p0
    volume = base * np.exp(level)

    np.testing.assert_array_equal(truth.to_numpy(), regime)
    by_symbol = np.argsort(default_symbols(n), kind="stable")
    got = {name: long[name].to_numpy().reshape(n, n_bars).T for name in ("open", "high", "low", "close", "volume")}
    for name, want in {"open": open_, "high": high, "low": low, "close": close}.items():
        np.testing.assert_array_equal(got[name], want[:, by_symbol], err_msg=name)  # rows: symbol, then time
    np.testing.assert_allclose(got["volume"], volume[:, by_symbol], rtol=1e-12, atol=0)


def test_generation_is_fast():
    t = time.perf_counter()
    long, _ = simulate_market(scenario("crash"), n_bars=50_000, n_assets=10, seed=0)
    elapsed = time.perf_counter() - t
    print(f"simulate_market 50_000 bars x 10 assets: {elapsed:.3f} s")
    assert len(long) == 500_000
    assert elapsed < 2.0
