"""Walk-forward validation: folds, causality of out-of-sample labels, refits, id carrying, recovery."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir

from market_regimes.data.synthetic import scenario, simulate_market
from market_regimes.errors import ConfigError
from market_regimes.walk_forward import carry_ids, make_folds, run_walk_forward

SMALL = [
    "window.length=24", "features.vol_horizons=[12,48]", "features.corr_window=48", "features.volume_window=48",
    "features.market_corr_window=24", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
    "cluster.n_regimes=2", "cluster.params.n_init=2", "train.batch_size=128", "train.windows_per_epoch=512",
    "walk_forward.n_folds=2", "walk_forward.horizon=12", "drift.mmd_permutations=50", "drift.mmd_samples=200",
]
SMALL_AUTOENCODER = ["model.hidden=16", "model.latent_dim=8"]


def wf_cfg(tmp_path, overrides=()):
    model = [] if any(o.startswith("model=") for o in overrides) else SMALL_AUTOENCODER
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        return compose("walk_forward", overrides=[*SMALL, *model, f"paths.artifacts_dir={tmp_path}",
                                                  f"paths.run_dir={tmp_path}/run", *overrides])


def test_folds_expanding_rolling_and_purge():
    idx = pd.date_range("2022-01-01", periods=1000, freq="1h", tz="UTC")
    folds = make_folds(idx, n_folds=3, mode="expanding", purge=50, train_size=400)
    assert [f.train_start for f in folds] == [0, 0, 0]
    for a, b in zip(folds, folds[1:]):
        assert b.test_start == a.test_end + 1  # test slices tile the tested span
        assert b.train_end > a.train_end
    for f in folds:
        assert f.test_start - f.train_end - 1 == 50  # the purge gap
    assert folds[-1].test_end == 999
    rolling = make_folds(idx, n_folds=3, mode="rolling", purge=50, train_size=400)
    assert all(f.train_end - f.train_start + 1 == 400 for f in rolling)
    dated = make_folds(idx, n_folds=2, purge=24, first_train_end="2022-01-20", test_size="5D")
    assert idx[dated[0].train_end] == pd.Timestamp("2022-01-20 23:00", tz="UTC")
    assert dated[0].test_end - dated[0].test_start + 1 == 120
    with pytest.raises(ConfigError, match="do not fit"):
        make_folds(idx, n_folds=20, purge=50, train_size=960)
    with pytest.raises(ConfigError, match="mode"):
        make_folds(idx, mode="sliding")


def test_carry_ids_maps_a_permuted_relabelling_back():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, 500)
    perm = np.array([2, 0, 3, 1])
    new = np.argsort(perm)[ref]  # the same partition under other ids
    mapping = carry_ids(ref, new, 4, 4)
    assert np.array_equal(mapping[new], ref)
    # a new fit with an extra regime keeps the matched ids and gives the extra one a fresh id
    new5 = new.copy()
    new5[:50] = 4
    m5 = carry_ids(ref, new5, 5, 4)
    assert m5[4] == 4 and sorted(m5[:4]) == [0, 1, 2, 3]
    assert list(carry_ids(ref[:0], new[:0], 3, 2)) == [2, 3, 4]


def _market_file(tmp_path, n_bars=1400, seed=3):
    long, _ = simulate_market(scenario("volatility"), n_bars=n_bars, n_assets=3, seed=seed)
    path = tmp_path / "market.parquet"
    long.to_parquet(path)
    return long, path


def _perturb_after(long: pd.DataFrame, t: pd.Timestamp, path, seed=1):
    """Wreck every bar after t: prices jump by random factors, volumes change (OHLC stay consistent)."""
    out = long.copy()
    after = out["timestamp"] > t
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0, 0.05, after.sum()))
    for col in ("open", "high", "low", "close"):
        out.loc[after, col] = out.loc[after, col].to_numpy() * factor
    out.loc[after, "volume"] = out.loc[after, "volume"].to_numpy() * rng.uniform(0.2, 5, after.sum())
    out.to_parquet(path)
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    long, path = _market_file(tmp)
    result = run_walk_forward(wf_cfg(tmp, ["data=files", f"data.path={path}"]))
    return long, result, tmp


def _labels(result):
    return pd.read_csv(result.run_dir / "regimes.csv", parse_dates=["timestamp"]).set_index(["timestamp", "asset"])


def _same_state(a: dict, b: dict) -> bool:
    def eq(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, torch.Tensor):
            return torch.equal(x, y)
        if isinstance(x, np.ndarray):
            return np.array_equal(x, y)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y))
        return x == y

    return eq(a, b)


def test_report_files_and_keys(base_run):
    _, result, _ = base_run
    report = json.loads((result.run_dir / "report.json").read_text())
    assert len(report["folds"]) == 2
    f1 = report["folds"][1]
    for key in ("process", "internal_indices", "stability_ari", "in_vs_out_of_sample", "volatility_skill",
                "direction_skill", "drift", "mapping"):
        assert key in f1, key
    assert f1["stability_ari"] is not None and -1 <= f1["stability_ari"] <= 1
    for part in ("regime", "naive", "naive_plus_regime"):
        assert f1["volatility_skill"][part]["n"] > 0
    assert report["overall"]["process"]["mean_run_length_bars"] > 1
    drift = f1["drift"]
    assert {"features", "latent_mmd", "reconstruction", "occupancy", "drift", "reasons"} <= set(drift)
    assert drift["latent_mmd"]["mmd2"] is not None and drift["latent_mmd"]["null"] == "block"
    labels = _labels(result)
    assert set(labels["fold"]) == {0, 1}
    probs = labels.filter(like="p_").to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert (probs.argmax(axis=1) == labels["regime"].to_numpy()).mean() > 0.99
    # out-of-sample labels only: every labelled bar lies in its fold's test slice, after the purge
    for f in report["folds"]:
        ts = labels[labels["fold"] == f["fold"]].index.get_level_values(0)
        assert ts.min() >= pd.Timestamp(f["test_start"]) and ts.max() <= pd.Timestamp(f["test_end"])
        assert pd.Timestamp(f["test_start"]) - pd.Timestamp(f["train_end"]) > pd.Timedelta(hours=24 + 12)
    for png in ("fold_timeline", "folds", "stability", "drift"):
        assert (result.run_dir / "plots" / f"{png}.png").stat().st_size > 1000


def test_models_never_see_test_rows_and_labels_are_causal(base_run, tmp_path):
    long, base, _ = base_run
    folds = base.report["folds"]
    fold1_test_start = pd.Timestamp(folds[1]["test_start"])
    base_labels = _labels(base)

    # 1) wreck everything from fold 1's first test bar on: folds 0 and 1 are fitted identically
    _perturb_after(long, fold1_test_start - pd.Timedelta(hours=1), tmp_path / "a.parquet")
    run_a = run_walk_forward(wf_cfg(tmp_path / "ra", ["data=files", f"data.path={tmp_path / 'a.parquet'}"]))
    for k in (0, 1):
        assert _same_state(base.fold_states[k], run_a.fold_states[k]), f"fold {k} saw its test rows"

    # 2) wreck everything after a bar t inside fold 1's test slice: labels at or before t unchanged
    t = fold1_test_start + pd.Timedelta(hours=40)
    _perturb_after(long, t, tmp_path / "b.parquet", seed=2)
    run_b = run_walk_forward(wf_cfg(tmp_path / "rb", ["data=files", f"data.path={tmp_path / 'b.parquet'}"]))
    lb = _labels(run_b)
    upto = base_labels.index.get_level_values(0) <= t
    assert upto.sum() > 100
    pd.testing.assert_frame_equal(base_labels[upto], lb.loc[base_labels.index[upto]])
    after = base_labels.index.get_level_values(0) > t
    assert not base_labels[after].equals(lb.loc[base_labels.index[after]])  # the perturbation did something


def test_recovers_planted_regimes_out_of_sample(tmp_path):
    # Two regimes 8x apart in volatility with mean stays of ~250 bars. A window reacts to a switch
    # only after part of it has passed, so ~10 % of bars sit in that lag; 90 % accuracy on two
    # classes is an ARI of ~0.64, hence the 0.6 bar on the pooled out-of-sample labels.
    regimes = [{"name": "calm", "mean_duration": 250, "drift": 0.0, "vol": 0.004, "corr": 0.5},
               {"name": "storm", "mean_duration": 250, "drift": 0.0, "vol": 0.032, "corr": 0.5}]
    cfg = wf_cfg(tmp_path, ["data.n_bars=4000", f"+data.regimes={json.dumps(regimes)}".replace('"', ""),
                            "model=features", "model.columns=[log_rv_*]"])
    result = run_walk_forward(cfg)
    truth = result.report["overall"]["truth"]
    assert truth["n"] > 3000
    assert truth["ari"] > 0.6, truth
    assert result.report["overall"]["process"]["mean_run_length_bars"] > 20


def test_purge_shorter_than_window_plus_horizon_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="purge"):
        run_walk_forward(wf_cfg(tmp_path, ["data.n_bars=1500", "walk_forward.purge=10", "model=features"]))
