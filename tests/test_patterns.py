"""Pre-move pattern mining: the job end to end, causality of the windows, the event rule against a
slow reference, a planted pattern recovered out of sample, Wilson intervals, user mistakes."""

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, random_long

from market_regimes.analysis.pattern_mining import mine_patterns
from market_regimes.analysis.patterns import (PatternConfig, build_inputs, rate, split_points,
                                              thin_events)
from market_regimes.data.panel import Panel, to_panel
from market_regimes.features import FeatureConfig, build_features
from market_regimes.stats import wilson_interval

FAST = ["data.n_bars=3000", "patterns.threshold=0.05", "patterns.window=24", "patterns.k_range=[2,3]"]


def run_script(*args):
    return subprocess.run([sys.executable, "scripts/mine_patterns.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def planted_market(n_bars=6000, n_assets=4, seed=0, squeeze=60, every=300):
    """Random walks with big jumps (+0.15 over 3 bars) every ~``every`` bars per asset; half of
    them come after a volatility squeeze (``squeeze`` bars at 1/8 of the usual vol), half
    without. Returns the long table and the (asset, jump start bar, squeezed) list."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2022-01-01", periods=n_bars, freq="1h", tz="UTC")
    jumps, frames = [], []
    for i in range(n_assets):
        r = rng.normal(0.0, 0.006, n_bars)
        for start in range(400 + 37 * i, n_bars - 50, every):
            start += int(rng.integers(0, every // 3))
            squeezed = bool(rng.random() < 0.5)
            if squeezed:
                r[start - squeeze : start] *= 0.125
            r[start : start + 3] = 0.05
            jumps.append((i, start, squeezed))
        close = 100.0 * np.exp(np.cumsum(r))
        open_ = np.r_[close[0], close[:-1]]
        wiggle = np.abs(r) * 0.5 + 1e-5
        frames.append(pd.DataFrame({
            "timestamp": idx, "symbol": f"A{i}USDT", "open": open_,
            "high": np.maximum(open_, close) * np.exp(wiggle), "low": np.minimum(open_, close) * np.exp(-wiggle),
            "close": close, "volume": rng.lognormal(5.0, 0.4, n_bars)}))
    return pd.concat(frames, ignore_index=True), jumps


def mine(long, **options):
    panel = to_panel(long, "1h")
    features = build_features(panel, FeatureConfig(reference_symbol=panel.symbols[0]))
    return panel, features, mine_patterns(panel, features, PatternConfig.from_dict({"plots": False, **options}))


@pytest.fixture(scope="module")
def planted():
    long, jumps = planted_market()
    panel, features, result = mine(long, threshold=0.10, horizon=24, window=48, k_range=[2, 4])
    return panel, features, result, jumps


def test_script_writes_every_file(tmp_path):
    res = run_script(*FAST, "patterns.umap=true", f"paths.artifacts_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((tmp_path / "runs" / "mine_patterns").iterdir())
    assert str(run_dir) in res.stdout and "hit rate" in res.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    k = summary["n_clusters"]
    expected = {"events.csv", "patterns.csv", "summary.json", "patterns_pca.png", "patterns_hit_rates.png",
                *(f"pattern_{c}.png" for c in range(k))}
    if importlib.util.find_spec("umap") is not None:
        expected.add("patterns_umap.png")
    else:
        assert "umap-learn is not installed" in res.stdout + res.stderr
    assert expected <= {p.name for p in run_dir.iterdir()} and expected == set(summary["files"])
    events = pd.read_csv(run_dir / "events.csv")
    assert {"asset", "timestamp", "forward_return", "cluster"} <= set(events.columns)
    assert (events["forward_return"] >= 0.05).all() and len(events) == summary["events"]["total"]
    table = pd.read_csv(run_dir / "patterns.csv")
    assert set(table["sample"]) == {"in_sample", "out_of_sample"} and set(table["cluster"]) == set(range(k))
    assert {"n_events", "hit_rate", "hit_lo", "hit_hi", "base_rate", "base_lo", "base_hi", "lift",
            "n_matches"} <= set(table.columns)


def test_each_window_ends_at_its_event(planted):
    _, _, result, _ = planted
    ev, inputs, W = result.events, result.inputs, result.config.window
    with_window = ev[ev["has_window"]]
    assert len(with_window) > 50
    assert (with_window["window_end"] == with_window["bar"]).all()
    assert (with_window["window_start"] == with_window["bar"] - W + 1).all()
    fit = ev[(ev["sample"] == "fit") & ev["has_window"]]
    a = pd.Index(inputs.symbols).get_indexer(fit["asset"])
    t = fit["bar"].to_numpy()
    F = len(inputs.indicators)
    X = result.fit_windows
    assert X.shape == (len(fit), W, F + 1)
    assert np.array_equal(X[:, -1, :F], inputs.X[a, t]) and np.array_equal(X[:, 0, :F], inputs.X[a, t - W + 1])
    assert np.all(X[:, -1, F] == 0.0)  # the return path is measured from the event bar's close
    assert inputs.ends[a, t].all() and inputs.move[a, t].all()


def _perturbed_after(panel: Panel, t: int, seed: int = 1) -> Panel:
    rng = np.random.default_rng(seed)
    fields = {}
    noise = np.exp(rng.normal(0, 0.05, panel.close.iloc[t + 1 :].shape))
    for f in ("open", "high", "low", "close", "volume"):
        frame = panel.field(f).copy()
        frame.iloc[t + 1 :] = frame.iloc[t + 1 :].to_numpy() * (noise * (3.0 if f == "volume" else 1.0))
        frame.iloc[t + 5 : t + 9, 0] = np.nan  # and a new gap
        fields[f] = frame
    return Panel(**fields, interval=panel.interval)


def test_changing_every_later_bar_leaves_the_event_window_unchanged(planted):
    panel, features, result, _ = planted
    ev = result.events[result.events["has_window"] & (result.events["sample"] == "fit")]
    fcfg = FeatureConfig(reference_symbol=panel.symbols[0])
    for _, row in ev.iloc[[len(ev) // 3, 2 * len(ev) // 3]].iterrows():
        t, a = int(row["bar"]), panel.symbols.index(row["asset"])
        cfg = PatternConfig(window=48, test_start=str(panel.index[t - 100]))  # scaler sees bars before t only
        _, fit_end = split_points(panel.index, cfg)
        before = build_inputs(panel, features, cfg, fit_end)
        changed = _perturbed_after(panel, t)
        after = build_inputs(changed, build_features(changed, fcfg), cfg, fit_end)
        assert not np.array_equal(before.X[:, t + 1 :], after.X[:, t + 1 :])
        w0, w1 = before.windows([a], [t]), after.windows([a], [t])
        assert w0.tobytes() == w1.tobytes()
        assert np.array_equal(before.ends[:, : t + 1], after.ends[:, : t + 1])


def _slow_events(close: pd.DataFrame, h, threshold, direction, gap, units, vol_window):
    out = []
    for a, sym in enumerate(close.columns):
        c = close[sym].tolist()
        last = None
        for t in range(len(c)):
            if t + h >= len(c) or any(math.isnan(x) for x in c[t : t + h + 1]):
                continue
            fwd = math.log(c[t + h] / c[t])
            thr = threshold
            if units == "vol":
                rets = [math.log(c[s] / c[s - 1]) for s in range(t - vol_window + 1, t + 1) if s >= 1]
                if len(rets) < vol_window or any(math.isnan(x) for x in rets):
                    continue
                mean = sum(rets) / len(rets)
                thr = threshold * math.sqrt(sum((x - mean) ** 2 for x in rets) / (len(rets) - 1)) * math.sqrt(h)
            hit = {"up": fwd >= thr, "down": fwd <= -thr, "both": abs(fwd) >= thr}[direction]
            if hit:
                if last is None or t - last >= gap:
                    out.append((a, t))
                last = t
    return out


@pytest.mark.parametrize("direction,gap,units,threshold", [
    ("up", 3, "log_return", 0.01), ("down", 1, "log_return", 0.01), ("both", 6, "log_return", 0.015),
    ("up", 4, "vol", 1.0)])
def test_events_are_the_threshold_crossings_after_thinning(direction, gap, units, threshold):
    long = random_long(n_bars=400, seed=3)
    long = long.drop(long.index[(long["symbol"] == "ETHUSDT") & long["timestamp"].between(
        pd.Timestamp("2023-01-09", tz="UTC"), pd.Timestamp("2023-01-09 05:00", tz="UTC"))])
    panel = to_panel(long, "1h")
    features = build_features(panel, FeatureConfig())
    cfg = PatternConfig(horizon=5, threshold=threshold, direction=direction, min_gap=gap, threshold_units=units,
                        vol_window=12, window=8)
    inputs = build_inputs(panel, features, cfg, panel.index[-1])
    got = list(zip(*thin_events(inputs.move, cfg.gap)))
    want = _slow_events(panel.close, 5, threshold, direction, gap, units, 12)
    assert len(want) > 5
    assert [(int(a), int(t)) for a, t in got] == want


def test_planted_squeeze_is_found_with_a_hit_rate_above_the_base_rate(planted):
    _, _, result, jumps = planted
    squeezed = {(a, s) for a, s, sq in jumps if sq}
    symbols = result.inputs.symbols
    # an event belongs to a planted squeeze when its bar is within the 24 bars before the jump
    fit = result.events[(result.events["sample"] == "fit") & result.events["has_window"]]
    is_sq = np.array([any((symbols.index(r.asset), s) in squeezed for s in range(r.bar + 1, r.bar + 25))
                      for r in fit.itertuples()])
    purity = pd.Series(is_sq).groupby(fit["cluster"].to_numpy()).mean()
    best = int(purity.idxmax())
    assert purity[best] >= 0.8 and (fit["cluster"] == best).sum() >= 10
    for sample in ("in_sample", "out_of_sample"):
        row = result.table[(result.table["cluster"] == best) & (result.table["sample"] == sample)].iloc[0]
        assert row["lift"] > 2.0, row
        assert row["hit_lo"] > row["base_hi"] and row["ci_excludes_base"], row
        assert row["n_matches"] >= 30
        others = result.table[(result.table["cluster"] != best) & (result.table["sample"] == sample)]
        assert (others["lift"] < row["lift"]).all()


def test_wilson_intervals_on_effective_counts(planted):
    lo, hi = wilson_interval(8, 10)  # textbook: 8 of 10 -> [0.4902, 0.9433]
    assert abs(float(lo) - 0.4902) < 1e-4 and abs(float(hi) - 0.9433) < 1e-4
    r = rate(np.array([True, False, True, True]), np.array([0, 0, 0, 1]), np.array([0, 1, 30, 5]), 24, 100)
    assert (r["n"], r["hits"], r["n_eff"]) == (4, 3, 3)  # bars 0 and 1 of asset 0 share one block
    assert (r["lo"], r["hi"]) == tuple(float(x) for x in wilson_interval(0.75 * 3, 3))
    table = planted[2].table
    for row in table.itertuples():
        lo, hi = wilson_interval(row.hit_rate * row.n_eff, row.n_eff)
        assert (row.hit_lo, row.hit_hi) == (float(lo), float(hi))
        assert row.hit_lo <= row.hit_rate <= row.hit_hi and 0 < row.n_eff <= row.n_matches
        assert row.base_lo <= row.base_rate <= row.base_hi
    base = planted[2].base["out_of_sample"]
    expected = wilson_interval(base["rate"] * base["n_eff"], base["n_eff"])
    assert (base["lo"], base["hi"]) == tuple(float(x) for x in expected)
    assert base["n_eff"] < base["n"] / 10  # overlapping forward windows are not counted as independent


@pytest.mark.parametrize("override,option", [("patterns.window=1", "patterns.window"),
                                             ("patterns.indicators=[log_ret,nope]", "patterns.indicators")])
def test_user_mistakes_exit_with_one_line(tmp_path, override, option):
    res = run_script("data.n_bars=600", override, f"paths.artifacts_dir={tmp_path}")
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {option}") and "Traceback" not in res.stderr


def test_fixed_k_without_hold_out_and_a_sampled_scan():
    long, _ = planted_market(n_bars=3000, n_assets=3, seed=2)
    _, _, result = mine(long, n_clusters=3, test_fraction=0.0, scan_max=4000, window=24)
    assert result.model.n_patterns == 3 and result.model.k_scores_ == {}
    assert set(result.table["sample"]) == {"in_sample"} and result.split["test_start"] is None
    assert result.base["in_sample"]["n"] == 4000 and (result.events["sample"] == "fit").all()
