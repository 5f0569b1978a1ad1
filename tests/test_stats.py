"""Regime statistics: forward-target alignment, estimators and the per-regime table, by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from market_regimes.errors import DataError
from market_regimes.stats import (
    describe_regime,
    entropy_rate,
    forward_log_return,
    forward_realized_vol,
    regime_statistics,
    run_lengths,
    stationary_distribution,
    summarize_regimes,
    transition_counts,
    transition_matrix,
    wilson_interval,
)

NAN = np.nan


def _grid(n: int, freq: str = "1h") -> pd.DatetimeIndex:
    return pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC", name="timestamp")


def _frame(columns: dict, index=None) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=_grid(n) if index is None else index, dtype="float64")


# --------------------------------------------------------------------------- forward targets
CLOSE = _frame({"X": [100, 110, 99, NAN, 120, 130]})


def test_forward_log_return_h1_by_hand():
    got = forward_log_return(CLOSE, 1)["X"].to_numpy()
    want = [math.log(110 / 100), math.log(99 / 110), NAN, NAN, math.log(130 / 120), NAN]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)  # NaN positions must match too


def test_forward_log_return_h2_never_crosses_gap_or_end():
    got = forward_log_return(CLOSE, 2)["X"].to_numpy()
    # t=1 -> 3 and t=2 -> 4 cross the missing bar 3; t=4, 5 run past the data.
    want = [math.log(99 / 100), NAN, NAN, NAN, NAN, NAN]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_forward_targets_keep_index_and_columns():
    out = forward_log_return(CLOSE, 1)
    assert out.index.equals(CLOSE.index) and out.columns.equals(CLOSE.columns)


def test_forward_return_at_t_depends_only_on_bars_t_to_t_plus_h():
    rng = np.random.default_rng(0)
    close = _frame({"X": 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40)))})
    h, s = 3, 20
    base = forward_log_return(close, h)["X"].to_numpy()
    bumped = close.copy()
    bumped.iloc[s, 0] *= 1.5
    moved = forward_log_return(bumped, h)["X"].to_numpy()
    changed = np.flatnonzero(~np.isclose(base, moved, equal_nan=True))
    assert changed.tolist() == [s - h, s]  # rows whose window starts or ends at bar s


def test_forward_realized_vol_by_hand():
    close = _frame({"X": [100, 110, 99, 105, 104, NAN, 120]})
    logc = np.log(close["X"].to_numpy())
    r = np.diff(logc)  # r[i] = log(c[i+1] / c[i])
    got = forward_realized_vol(close, 2)["X"].to_numpy()
    want = [np.std(r[i : i + 2], ddof=1) for i in range(3)] + [NAN] * 4
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert got[0] == pytest.approx(abs(math.log(1.1) - math.log(0.9)) / math.sqrt(2), rel=1e-9)
    got3 = forward_realized_vol(close, 3)["X"].to_numpy()
    assert got3[0] == pytest.approx(np.std(r[0:3], ddof=1), rel=1e-9)
    assert got3[1] == pytest.approx(np.std(r[1:4], ddof=1), rel=1e-9)
    assert np.isnan(got3[2:]).all()
    assert np.isnan(forward_realized_vol(close, 1).to_numpy()).all()  # ddof=1 needs h >= 2


# --------------------------------------------------------------------------- estimators
def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert float(lo) == pytest.approx(0.4902, abs=1e-4)
    assert float(hi) == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(np.array([0, 50, 0]), np.array([10, 100, 0]))
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.2775, abs=1e-4)
    assert lo[1] == pytest.approx(0.4038, abs=1e-4) and hi[1] == pytest.approx(0.5962, abs=1e-4)
    assert np.isnan(lo[2]) and np.isnan(hi[2])


def test_run_lengths_minus_one_breaks_runs():
    labs, lens, cens = run_lengths(np.array([-1, 0, 0, 1, 1, 1, -1, 1, 0, 0]), return_censored=True)
    assert labs.tolist() == [0, 1, 1, 0]
    assert lens.tolist() == [2, 3, 1, 2]
    assert cens.tolist() == [True, True, True, True]  # every run touches a -1 or the sample end


def test_run_lengths_censoring_flags_edges_only():
    labs, lens, cens = run_lengths(np.array([0, 0, 1, 1, 1, 2, 2]), return_censored=True)
    assert labs.tolist() == [0, 1, 2] and lens.tolist() == [2, 3, 2]
    assert cens.tolist() == [True, False, True]
    labs, lens = run_lengths(np.array([-1, -1]))
    assert labs.size == 0 and lens.size == 0


def test_transition_counts_skip_unlabelled_and_asset_boundaries():
    labels = _frame({"X": [0, 0, 1, -1, 1, 1], "Y": [1, 0, 0, 0, -1, 0]})
    # X: 0->0, 0->1, 1->1 ; Y: 1->0, 0->0, 0->0. X's last bar never pairs with Y's first.
    want = np.array([[3, 1, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(transition_counts(labels, 3), want)
    P = transition_matrix(labels, 3)
    np.testing.assert_allclose(P[:2], [[0.75, 0.25, 0.0], [0.5, 0.5, 0.0]])
    assert np.isnan(P[2]).all()  # never an origin: no data, not uniform


def test_transition_counts_do_not_cross_a_hole_in_the_grid():
    index = _grid(7).delete(3)  # hours 0, 1, 2, 4, 5, 6
    labels = _frame({"X": [0, 0, 1, 1, 0, 0]}, index=index)
    np.testing.assert_array_equal(transition_counts(labels, 2, interval="1h"), [[2, 1], [1, 0]])


def test_stationary_distribution_and_entropy_rate():
    P = np.array([[0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_allclose(stationary_distribution(P), [2 / 3, 1 / 3], atol=1e-12)
    assert entropy_rate(np.eye(3)) == pytest.approx(0.0, abs=1e-12)
    cycle = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert entropy_rate(cycle) == pytest.approx(0.0, abs=1e-12)
    assert entropy_rate(np.full((2, 2), 0.5)) == pytest.approx(math.log(2), rel=1e-12)
    h_binary = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    h_binary2 = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert entropy_rate(P) == pytest.approx(2 / 3 * h_binary + 1 / 3 * h_binary2, rel=1e-9)
    # A NaN row with zero weight does not poison the rate.
    P_nan = np.array([[0.5, 0.5], [NAN, NAN]])
    assert entropy_rate(P_nan, pi=np.array([1.0, 0.0])) == pytest.approx(math.log(2))


# --------------------------------------------------------------------------- regime table
def _up_down_panel():
    """Two assets where regime 1 is always followed by +1 % and regime 0 by -1 %."""
    lab_a = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0])
    lab_b = np.array([-1, 0, 1, 1, 0, -1, -1, 1, 0, 0, 1, 0])
    closes = {}
    for name, lab in {"A": lab_a, "B": lab_b}.items():
        steps = np.where(lab[:-1] == 1, 0.01, -0.01)
        closes[name] = 100 * np.exp(np.r_[0.0, np.cumsum(steps)])
    close = _frame(closes)
    close.loc[close.index[5], "B"] = NAN  # a gap in B, labelled -1 above
    return close, _frame({"A": lab_a, "B": lab_b}).astype("int64")


def test_regime_statistics_counts_and_direction():
    close, labels = _up_down_panel()
    table = regime_statistics(close, labels, n_regimes=2, interval="1h", horizons=(1, 2))
    assert len(table) == 3 * 2 and set(table["asset"]) == {"A", "B", "ALL"}
    a = table[table["asset"] == "A"].set_index("regime")
    b = table[table["asset"] == "B"].set_index("regime")
    assert a.loc[0, "n_bars"] == 6 and a.loc[1, "n_bars"] == 6
    assert a.loc[0, "n_fwd_1"] == 5 and a.loc[1, "n_fwd_1"] == 6  # A's last bar is regime 0
    assert b.loc[0, "n_bars"] == 5 and b.loc[1, "n_bars"] == 4
    assert b.loc[0, "n_fwd_1"] == 3  # bar 4 precedes the gap, bar 11 is the last one
    assert a.loc[1, "p_up_1"] == 1.0 and a.loc[0, "p_up_1"] == 0.0
    assert b.loc[1, "p_up_1"] == 1.0 and b.loc[0, "p_up_1"] == 0.0
    assert a.loc[1, "mean_fwd_ret_1"] == pytest.approx(0.01)
    assert a.loc[0, "occupancy"] == pytest.approx(0.5)
    assert b.loc[1, "occupancy"] == pytest.approx(4 / 9)
    # Runs in B: [0], [1 1], [0] | gap | [1], [0 0], [1], [0]: regime 0 has 4 runs, 3 of them
    # touching a -1 or the end of the sample (censored).
    assert b.loc[0, "n_runs"] == 4 and b.loc[0, "n_censored_runs"] == 3
    assert b.loc[0, "mean_duration_bars"] == pytest.approx(5 / 4)
    assert b.loc[1, "mean_duration_hours"] == pytest.approx(4 / 3)


def test_pooled_row_is_the_combined_counts():
    close, labels = _up_down_panel()
    table = regime_statistics(close, labels, n_regimes=2, interval="1h", horizons=(1, 2))
    per_asset = table[table["asset"] != "ALL"]
    pooled = table[table["asset"] == "ALL"].set_index("regime")
    for k in (0, 1):
        rows = per_asset[per_asset["regime"] == k]
        for col in ("n_bars", "n_fwd_1", "n_fwd_2", "n_runs", "n_censored_runs"):
            assert pooled.loc[k, col] == rows[col].sum(), col
        ups = (rows["p_up_2"] * rows["n_fwd_2"]).sum()
        assert pooled.loc[k, "p_up_2"] == pytest.approx(ups / rows["n_fwd_2"].sum())
        lo, hi = wilson_interval(ups / 2, rows["n_fwd_2"].sum() / 2)  # n_eff = n_fwd / h
        assert pooled.loc[k, "p_up_2_lo"] == pytest.approx(float(lo))
        assert pooled.loc[k, "p_up_2_hi"] == pytest.approx(float(hi))
    assert pooled["occupancy"].sum() == pytest.approx(1.0)
    assert pooled.loc[1, "occupancy"] == pytest.approx(10 / 21)


def test_labels_are_not_shifted_forward_not_backward():
    # Price alternates: bar t even is followed by a rise but was preceded by a fall.
    n = 40
    close = _frame({"X": np.where(np.arange(n) % 2 == 0, 100.0, 101.0)})
    labels = _frame({"X": (np.arange(n) % 2 == 0).astype(int)}).astype("int64")
    table = regime_statistics(close, labels, 2, interval="1h", horizons=(1,))
    table = table.set_index(["asset", "regime"])
    assert table.loc[("X", 1), "p_up_1"] == 1.0  # forward t -> t+1; backward would give 0.0
    assert table.loc[("X", 0), "p_up_1"] == 0.0
    assert table.loc[("X", 1), "mean_fwd_ret_1"] == pytest.approx(math.log(1.01))


def test_volatility_ratio_and_names():
    rng = np.random.default_rng(1)
    n = 6000
    regime = np.repeat([0, 0, 0, 1] * (n // 400), 100)
    sigma = np.where(regime == 1, 0.04, 0.01)
    ret = np.r_[0.0, rng.normal(0, 1, n - 1) * sigma[:-1]]  # label at t sets the vol of t -> t+1
    close = _frame({"X": 100 * np.exp(np.cumsum(ret))})
    labels = _frame({"X": regime}).astype("int64")
    table = regime_statistics(close, labels, 2, interval="1h", horizons=(1, 24))
    pooled = table[table["asset"] == "ALL"].set_index("regime")
    assert pooled.loc[1, "fwd_vol_ratio_24"] > 1.25 > 0.8 > pooled.loc[0, "fwd_vol_ratio_24"]
    assert describe_regime(pooled.loc[0]) == "low-vol neutral"
    assert describe_regime(pooled.loc[1]).startswith("high-vol")


def _row(p_lo, p_hi, mean, ratio, std=0.05, n=2400):
    return {"n_fwd_24": n, "n_eff_24": n / 24, "p_up_24_lo": p_lo, "p_up_24_hi": p_hi,
            "mean_fwd_ret_24": mean, "std_fwd_ret_24": std, "fwd_vol_ratio_24": ratio}


def test_describe_regime_thresholds():
    assert describe_regime(_row(0.55, 0.65, 0.001, 0.7)) == "low-vol bull"
    assert describe_regime(_row(0.30, 0.45, -0.002, 1.5)) == "high-vol bear"
    assert describe_regime(_row(0.30, 0.45, -0.002, 2.5)) == "crash/stress"
    assert describe_regime(_row(0.45, 0.55, 0.001, 1.0)) == "normal-vol neutral"
    assert describe_regime(_row(0.45, 0.55, 0.02, 1.0)) == "normal-vol bull"  # t = 4 > 3
    assert describe_regime(_row(0.52, 0.6, -0.02, 1.0)) == "normal-vol neutral"  # contradictory
    assert describe_regime(_row(NAN, NAN, NAN, NAN, n=0)) == "insufficient data"


# --------------------------------------------------------------------------- summary and errors
def test_summarize_regimes_is_json_ready():
    close, labels = _up_down_panel()
    out = summarize_regimes(close, labels, 3, interval="1h", horizons=(1, 2), in_sample=False)
    text = json.dumps(out, allow_nan=False)  # regime 2 has no bars: NaN must have become null
    back = json.loads(text)
    assert back["in_sample"] is False
    assert len(back["per_asset"]) == 3 * 3
    assert back["transition_matrix"]["pooled"][2] == [None, None, None]
    assert set(back["transition_matrix"]["per_asset"]) == {"A", "B"}
    assert back["occupancy"]["pooled"][:2] == pytest.approx([11 / 21, 10 / 21])
    assert back["entropy_rate_nats"]["pooled"] >= 0
    assert back["regime_names"]["2"] == "insufficient data"
    assert summarize_regimes(close, labels, 2, "1h", (1, 2))["in_sample"] is True


def test_bad_inputs_raise_with_location():
    close, labels = _up_down_panel()
    bad = labels.copy()
    bad.loc[bad.index[5], "B"] = 1  # a label on a missing bar
    with pytest.raises(DataError, match="B"):
        regime_statistics(close, bad, 2)
    with pytest.raises(DataError, match="-1..1"):
        regime_statistics(close, labels.replace(1, 7), 2)
    with pytest.raises(DataError, match="regular"):
        regime_statistics(close.iloc[[0, 1, 3]], labels.iloc[[0, 1, 3]], 2)
    with pytest.raises(DataError, match="> 0"):
        forward_log_return(close.replace(100.0, 0.0), 1)
