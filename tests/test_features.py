import numpy as np
import pandas as pd
import pytest
from conftest import random_long
from hypothesis import given, settings
from hypothesis import strategies as st

from market_regimes.data.panel import to_panel
from market_regimes.errors import ConfigError, DataError
from market_regimes.features import FeatureConfig, build_features
from market_regimes.features.ops import ewm_mean, mean_pairwise_correlation, roll, roll_pair, row_mean, row_std, run_length, shift

SMALL = FeatureConfig(vol_horizons=(6, 24), downside_window=6, atr_window=5, rsi_window=5, bollinger_window=10,
                      macd=(4, 8, 3), volume_window=24, volume_roc_window=6, obv_window=6,
                      relative_return_window=6, corr_window=24, breadth_return_window=6,
                      breadth_ma_window=10, market_corr_window=12)


def test_run_length():
    finite = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1], dtype=bool)[:, None]
    assert run_length(finite)[:, 0].tolist() == [1, 2, 0, 1, 2, 3, 0, 0, 1]


def test_ewm_mean_matches_pandas_on_each_segment():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(300)
    x[[50, 51, 200]] = np.nan
    got = ewm_mean(x, 0.1)
    expected = np.full_like(x, np.nan)
    for lo, hi in [(0, 50), (52, 200), (201, 300)]:  # each run of finite values restarts
        expected[lo:hi] = pd.Series(x[lo:hi]).ewm(alpha=0.1, adjust=True).mean().to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.isnan(got[[50, 51, 200]]).all()


def test_mean_pairwise_correlation_equals_loop_of_correlation_matrices():
    rng = np.random.default_rng(2)
    T, A, w = 120, 5, 20
    r = rng.standard_normal((T, A)) + 0.8 * rng.standard_normal((T, 1))
    r[:40, 3] = np.nan  # asset listed late
    r[70, 1] = np.nan   # a gap
    got = mean_pairwise_correlation(r, w, chunk=17)
    for t in range(T):
        if t < w - 1:
            assert np.isnan(got[t])
            continue
        block = r[t - w + 1 : t + 1]
        cols = np.isfinite(block).all(axis=0)
        c = np.corrcoef(block[:, cols].T)
        n = cols.sum()
        expected = (c.sum() - n) / (n * (n - 1))
        assert got[t] == pytest.approx(expected, abs=1e-10), t


def test_array_helpers_equal_their_pandas_definitions():
    """The numpy building blocks give pandas' values: NaN skipped across assets, windows of
    exactly ``w`` finite values, the reference column's moments with every column."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 4))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[7] = np.nan            # a row with no value
    x[9, 1:] = np.nan        # a row with one value: no dispersion
    frame = pd.DataFrame(x)
    np.testing.assert_array_equal(row_mean(x), frame.mean(axis=1).to_numpy())
    np.testing.assert_allclose(row_std(x), frame.std(axis=1).to_numpy(), rtol=1e-14, atol=0)
    assert np.isnan(row_std(x)[[7, 9]]).all() and np.isnan(row_mean(x)[7]) and np.isfinite(row_mean(x)[9])
    np.testing.assert_array_equal(shift(x, 3), frame.shift(3).to_numpy())
    for stat, kw in (("mean", {}), ("sum", {}), ("std", {}), ("var", {"ddof": 0})):
        np.testing.assert_array_equal(roll(x, 5, stat, **kw), getattr(frame.rolling(5, min_periods=5), stat)(**kw).to_numpy())
    y = rng.standard_normal(60)
    for stat in ("cov", "corr"):
        expected = getattr(frame.rolling(8, min_periods=8), stat)(pd.Series(y)).to_numpy()
        np.testing.assert_array_equal(roll_pair(x, y, 8, stat), expected)
        assert np.isnan(expected[:7]).all() and np.isfinite(expected[20:, 0]).any()


def test_feature_set_shapes_and_names(long_table):
    fs = build_features(to_panel(long_table), SMALL)
    assert fs.values.shape == (3, 600, len(fs.names))
    assert fs.values.dtype == np.float32
    for name in ["log_ret", "log_rv_6", "rsi_5", "bb_pctb_10", "macd_hist", "volume_z_24", "obv_slope_6",
                 "rel_ret_6", "corr_ref_24", "beta_ref_24", "vol_spread_6", "breadth_up_6",
                 "breadth_above_ma_10", "mean_corr_12", "dispersion_ret", "dispersion_vol"]:
        assert name in fs.names
    assert np.isfinite(fs.values[fs.valid]).all()
    # the first `warmup - 1` bars are never valid
    assert not fs.valid[:, : SMALL.effective_warmup() - 1].any()
    assert fs.valid[:, SMALL.effective_warmup() :].all()
    frame = fs.frame("ETHUSDT")
    assert frame.index.equals(fs.index) and "valid" in frame


def test_log_return_and_reference_features_by_hand(long_table):
    panel = to_panel(long_table)
    fs = build_features(panel, SMALL)
    eth = fs.frame("ETHUSDT")
    close = panel.close
    expected = np.log(close["ETHUSDT"].iloc[100] / close["ETHUSDT"].iloc[99])
    assert eth["log_ret"].iloc[100] == pytest.approx(expected, rel=1e-6)
    r = np.log(close).diff()
    window = r.iloc[100 - 23 : 101]
    assert eth["corr_ref_24"].iloc[100] == pytest.approx(window["ETHUSDT"].corr(window["BTCUSDT"]), rel=1e-5)
    btc = fs.frame("BTCUSDT")
    assert np.allclose(btc.loc[btc.valid, "corr_ref_24"], 1.0, atol=1e-5)


def test_features_do_not_depend_on_price_or_volume_units(long_table):
    """No raw level reaches the model: rescaling an asset's prices and volume changes nothing."""
    base = build_features(to_panel(long_table), SMALL)
    scaled = long_table.copy()
    eth = scaled["symbol"] == "ETHUSDT"
    scaled.loc[eth, ["open", "high", "low", "close"]] *= 1234.5
    scaled.loc[eth, "volume"] *= 0.01
    other = build_features(to_panel(scaled), SMALL)
    assert (base.valid == other.valid).all()
    np.testing.assert_allclose(other.values[base.valid], base.values[base.valid], rtol=2e-4, atol=2e-5)


def test_gaps_are_never_filled_and_invalidate_nearby_rows(long_table):
    gap_times = pd.date_range("2023-01-10 00:00", periods=5, freq="1h", tz="UTC")
    long = long_table[~((long_table.symbol == "ETHUSDT") & long_table.timestamp.isin(gap_times))]
    panel = to_panel(long)
    fs = build_features(panel, SMALL)
    eth = fs.symbols.index("ETHUSDT")
    pos = fs.index.get_indexer(gap_times)
    assert np.isnan(fs.values[eth, pos, fs.names.index("log_ret")]).all()
    warm = SMALL.effective_warmup()
    after = pos[-1] + 1
    # the first bars after the gap cannot be valid: their look-back would reach into the gap
    assert not fs.valid[eth, pos[0] : after + warm - 1].any()
    assert fs.valid[eth, after + warm - 1]
    # other assets are unaffected per asset (market features use the assets present)
    assert fs.valid[fs.symbols.index("BNBUSDT"), pos].all()


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=40, max_value=580), seed=st.integers(0, 10_000),
       gap=st.booleans(), scale=st.floats(0.2, 5.0))
def test_changing_the_future_never_changes_past_features(cut, seed, gap, scale):
    """Perturbing any bar after `cut` leaves every feature (and validity) at bars <= cut identical."""
    long = random_long(seed=seed % 7)
    base = build_features(to_panel(long), SMALL)
    rng = np.random.default_rng(seed)
    cut_time = base.index[cut]
    future = long["timestamp"] > cut_time
    changed = long.copy()
    noise = np.exp(rng.normal(0, 0.05, future.sum()))
    for col in ["open", "high", "low", "close"]:
        changed.loc[future, col] *= noise * scale
    changed.loc[future, "volume"] *= rng.lognormal(0, 1, future.sum())
    if gap:  # remove a block of future bars of one asset, and keep the grid length
        drop = future & (changed.symbol == "BNBUSDT") & (changed.timestamp <= cut_time + pd.Timedelta("5h"))
        changed = changed[~drop]
    other = build_features(to_panel(changed), SMALL)
    assert other.index.equals(base.index)
    np.testing.assert_array_equal(other.valid[:, : cut + 1], base.valid[:, : cut + 1])
    np.testing.assert_array_equal(other.values[:, : cut + 1], base.values[:, : cut + 1])


def test_unknown_reference_symbol_is_a_config_error(long_table):
    with pytest.raises(ConfigError, match="reference_symbol=XRPUSDT"):
        build_features(to_panel(long_table), FeatureConfig(reference_symbol="XRPUSDT"))


def test_unknown_feature_option():
    with pytest.raises(ConfigError, match="unknown features option"):
        FeatureConfig.from_dict({"vol_horizon": [1]})


def test_too_little_history_is_a_clear_error(long_table):
    short = long_table[long_table.timestamp < long_table.timestamp.min() + pd.Timedelta("100h")]
    with pytest.raises(DataError, match="consecutive bars"):
        build_features(to_panel(short))  # default windows need 193 bars


def test_single_asset_panel_builds_without_cross_sectional_features(long_table):
    fs = build_features(to_panel(long_table[long_table.symbol == "BTCUSDT"]), SMALL)
    assert "mean_corr_12" not in fs.names and "corr_ref_24" not in fs.names
    assert fs.valid.any()


def test_linear_recursion_matches_the_loop_and_ignores_appended_rows():
    from market_regimes.numerics import linear_recursion

    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 2))
    expected = np.zeros_like(x)
    acc = np.zeros(2)
    for t in range(len(x)):
        acc = 0.93 * acc + x[t]
        expected[t] = acc
    np.testing.assert_allclose(linear_recursion(x, 0.93), expected, rtol=1e-11, atol=1e-12)
    longer = np.vstack([x, rng.standard_normal((77, 2))])
    np.testing.assert_array_equal(linear_recursion(longer, 0.93)[:200], linear_recursion(x, 0.93))


def test_features_over_a_tail_equal_the_full_history_for_its_last_bars(long_table):
    """Inference recomputes features on the last bars only: FeatureConfig.history() bars fix a row."""
    gap_times = pd.date_range("2023-01-12 00:00", periods=3, freq="1h", tz="UTC")
    long = long_table[~((long_table.symbol == "ETHUSDT") & long_table.timestamp.isin(gap_times))].copy()
    flat = (long.symbol == "BNBUSDT") & long.timestamp.between("2023-01-15", "2023-01-18")
    long.loc[flat, ["open", "high", "low", "close"]] = 77.0  # ties in the breadth features
    panel = to_panel(long)
    full = build_features(panel, SMALL)
    h, keep = SMALL.history(), 60
    assert h > SMALL.lookback()  # the exponential averages need more than the rolling windows
    for end in (len(panel.index), 420, 333):
        start = end - (h + keep - 1)
        tail = build_features(panel.select(start=panel.index[start], end=panel.index[end - 1]), SMALL)
        a, b = full.values[:, end - keep : end], tail.values[:, -keep:]
        np.testing.assert_array_equal(full.valid[:, end - keep : end], tail.valid[:, -keep:])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_max_ulp(np.nan_to_num(a), np.nan_to_num(b), maxulp=2)
        for name in ("breadth_up_6", "breadth_above_ma_10", "log_ret", "corr_ref_24"):
            j = full.names.index(name)
            np.testing.assert_array_equal(a[..., j], b[..., j])
    # with only the rolling look-back behind it, the RSI has not forgotten its start
    short = build_features(panel.select(start=panel.index[-(SMALL.lookback() + keep - 1)]), SMALL)
    j = full.names.index("rsi_5")
    assert np.nanmax(np.abs(short.values[:, -keep:, j] - full.values[:, -keep:, j])) > 1e-4


@pytest.mark.parametrize("block", [1, 5, 64])
def test_feature_values_do_not_depend_on_the_copy_block(block, long_table, monkeypatch):
    """Layers are copied into the (A, T, F) result a block at a time; any block size (one layer,
    a size that leaves a partial last block, all layers at once) gives the same bits, including
    the market features that are one series for all assets, and the same validity."""
    import market_regimes.features as features

    long = long_table.copy()
    long.loc[long.index[40:43], "close"] = np.nan  # a gap, so validity is not trivially all-True
    panel = to_panel(long)
    ref = build_features(panel)
    monkeypatch.setattr(features, "FEATURE_BLOCK", block)
    got = build_features(panel)
    assert got.names == ref.names and len(ref.names) > 6
    np.testing.assert_array_equal(got.values.view(np.uint32), ref.values.view(np.uint32))
    np.testing.assert_array_equal(got.valid, ref.valid)
    assert 0 < ref.valid.sum() < ref.valid.size


@pytest.mark.parametrize("shape", [(1300, 7), (5, 1100), (512, 3), (1, 1)])
def test_blocked_transpose_equals_the_transpose(shape):
    from market_regimes.numerics import transpose_into

    rng = np.random.default_rng(shape[0])
    a, order = rng.normal(size=shape), rng.permutation(shape[1])
    for along in (0, 1):
        np.testing.assert_array_equal(transpose_into(np.empty(shape[::-1]), a, along=along, block=64), a.T)
    np.testing.assert_array_equal(transpose_into(np.empty(shape[::-1]), a, columns=order, block=64), a[:, order].T)
    with pytest.raises(ValueError):
        transpose_into(np.empty(shape[::-1]), a, along=1, columns=order)
