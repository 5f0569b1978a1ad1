import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_long
from hypothesis import given, settings
from hypothesis import strategies as st
from test_features import SMALL

from market_regimes.data.panel import to_panel
from market_regimes.datamodule import WindowDataModule, WindowDataset, time_split
from market_regimes.errors import ConfigError, DataError
from market_regimes.features import build_features
from market_regimes.windows import GlobalScaler, WindowConfig, build_windows, fit_scaler, training_cutoff

CFG = WindowConfig(length=16, train_fraction=0.6)


@pytest.fixture
def features(long_table):
    return build_features(to_panel(long_table), SMALL)


def test_scaler_fits_on_training_rows_of_all_assets_only(features):
    train_end = training_cutoff(features.index, CFG)
    scaler = fit_scaler(features, train_end, "robust")
    rows = features.values[features.valid & np.asarray(features.index <= train_end)[None, :]]
    np.testing.assert_allclose(scaler.center_, np.median(rows.astype(np.float64), axis=0), rtol=1e-6)
    # wrecking every row after the cut-off leaves the scaler exactly as it was
    wrecked = features.values.copy()
    wrecked[:, np.asarray(features.index > train_end)] *= 1000.0
    features.values = wrecked
    again = fit_scaler(features, train_end, "robust")
    np.testing.assert_array_equal(again.center_, scaler.center_)
    np.testing.assert_array_equal(again.scale_, scaler.scale_)
    assert scaler.n_rows_ == len(rows)


def test_standard_scaler_and_clipping():
    rows = np.random.default_rng(0).normal(3.0, 2.0, size=(5000, 2))
    sc = GlobalScaler("standard", clip=1.0).fit(rows)
    out = sc.transform(rows)
    assert out.dtype == np.float32 and out.max() <= 1.0 and out.min() >= -1.0
    np.testing.assert_allclose(sc.center_, rows.mean(axis=0))
    state = GlobalScaler.from_state(sc.to_state())
    np.testing.assert_array_equal(state.transform(rows), out)
    with pytest.raises(ConfigError):
        GlobalScaler("minmax").fit(rows)


def test_windows_are_views_and_gather_matches_slicing(features):
    ws, scaler = build_windows(features, CFG)
    assert np.shares_memory(ws.view, ws.X)  # no copy of every window
    a, t = ws.keys()
    batch = ws.gather(a[:10], t[:10])
    assert batch.shape == (10, 16, len(ws.names))
    for i in range(10):
        np.testing.assert_array_equal(batch[i], ws.X[a[i], t[i] - 15 : t[i] + 1])
        np.testing.assert_array_equal(batch[i], scaler.transform(features.values[a[i], t[i] - 15 : t[i] + 1]))
    mk = ws.market_keys()
    market = ws.gather_market(mk[:4])
    assert market.shape == (4, 3, 16, len(ws.names))
    np.testing.assert_array_equal(market[2, 1], ws.X[1, mk[2] - 15 : mk[2] + 1])


def test_no_window_spans_a_gap(long_table):
    gap = pd.date_range("2023-01-12", periods=3, freq="1h", tz="UTC")
    long = long_table[~((long_table.symbol == "BTCUSDT") & long_table.timestamp.isin(gap))]
    fs = build_features(to_panel(long), SMALL)
    ws, _ = build_windows(fs, CFG)
    a, t = ws.keys()
    for ai, ti in zip(a, t):
        assert fs.valid[ai, ti - 15 : ti + 1].all()
    pos = fs.index.get_indexer(gap)
    btc = fs.symbols.index("BTCUSDT")
    assert not ws.ends[btc, pos[0] : pos[-1] + SMALL.effective_warmup() + 15].any()
    # market windows need every asset, so none crosses BTC's gap either
    mk = ws.market_keys()
    assert not np.any((mk >= pos[0]) & (mk < pos[-1] + SMALL.effective_warmup() + 15))


def test_stride_and_time_filters(features):
    ws, _ = build_windows(features, WindowConfig(length=16, stride=5, train_fraction=0.6))
    a, t = ws.keys(strided=True)
    assert (t % 5 == 0).all() and len(t) < len(ws.keys()[1]) / 4  # every window stays labelable
    a2, t2 = ws.keys(end=ws.train_end, strided=True)
    assert (ws.index[t2] <= ws.train_end).all() and len(t2) < len(t)
    fit, _ = time_split(ws, 0.2)
    assert (fit[1] % 5 == 0).all()


def test_train_end_date_includes_the_whole_day(features):
    end = training_cutoff(features.index, WindowConfig(train_end="2023-01-15"))
    assert end == pd.Timestamp("2023-01-15 23:59:59.999999999", tz="UTC")


@settings(max_examples=15, deadline=None)
@given(offset=st.integers(0, 200), seed=st.integers(0, 1000))
def test_future_changes_leave_scaled_windows_before_the_cut_unchanged(offset, seed):
    """With the scaler fitted up to the training cut-off, any change after bar t >= cut-off leaves
    every scaled value and window ending at or before t unchanged."""
    long = random_long()
    cfg = WindowConfig(length=16, train_end="2023-01-15 12:00")
    base_ws, _ = build_windows(build_features(to_panel(long), SMALL), cfg)
    cut = int(np.searchsorted(base_ws.index, base_ws.train_end, side="right")) - 1 + offset
    future = long["timestamp"] > base_ws.index[cut]
    changed = long.copy()
    rng = np.random.default_rng(seed)
    changed.loc[future, ["open", "high", "low", "close"]] *= np.exp(rng.normal(0, 0.1, (future.sum(), 1)))
    changed.loc[future, "volume"] *= 3.0
    ws, _ = build_windows(build_features(to_panel(changed), SMALL), cfg)
    np.testing.assert_array_equal(ws.X[:, : cut + 1], base_ws.X[:, : cut + 1])
    np.testing.assert_array_equal(ws.ends[:, : cut + 1], base_ws.ends[:, : cut + 1])
    a, t = base_ws.keys(end=base_ws.index[cut])
    np.testing.assert_array_equal(ws.gather(a, t), base_ws.gather(a, t))


def test_dataset_batches_and_datamodule(features):
    ws, _ = build_windows(features, CFG)
    fit, val = time_split(ws, val_fraction=0.2)
    assert fit[1].max() <= val[1].min() - ws.length  # purge: no shared bar
    assert ws.index[val[1]].max() <= ws.train_end
    ds = WindowDataset(ws, fit)
    batch = ds.__getitems__([0, 5, 7])
    assert batch["x"].shape == (3, 16, len(ws.names)) and batch["x"].dtype == torch.float32
    torch.testing.assert_close(ds[5]["x"], batch["x"][1])
    dm = WindowDataModule(ws, fit, val, batch_size=32)
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (32, 16, len(ws.names))
    assert sum(len(b["x"]) for b in dm.val_dataloader()) == len(val[0])
    mfit, mval = time_split(ws, 0.2, mode="market")
    mb = WindowDataset(ws, mfit, mode="market").__getitems__([0, 1])
    assert mb["x"].shape == (2, 3, 16, len(ws.names))


def test_window_errors(features):
    with pytest.raises(DataError, match="no valid window"):
        build_windows(features, WindowConfig(length=10_000))
    with pytest.raises(ConfigError):
        WindowConfig.from_dict({"mode": "panel"})
    with pytest.raises(ConfigError, match="unknown window option"):
        WindowConfig.from_dict({"lenght": 3})
