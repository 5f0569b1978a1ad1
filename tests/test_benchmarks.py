"""The regime benchmark: simulations, anchors, scoring, and the reduced suites end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REAL_DATA, REPO
from scipy.stats import wasserstein_distance

from market_regimes.benchmarks import anchors as A
from market_regimes.benchmarks.anchor_features import downside_features, ewm_volatility_features, return_vol_breadth
from market_regimes.benchmarks.scoring import agreement
from market_regimes.benchmarks.simulations import (
    HARDY_MEANS,
    HARDY_TRANSITION,
    HARDY_VOLS,
    episode_mask,
    returns_panel,
    switching_path,
    two_state_returns,
)
from market_regimes.errors import ConfigError

REAL_FILE = REAL_DATA / "binance_spot_1h_btc_eth_bnb_2017_2024.csv.gz"


# ----------------------------------------------------------------------------- simulations
def test_two_state_model_has_hardy_moments_and_persistence():
    r, s = two_state_returns(200_000, seed=0)
    assert abs(s.mean() - 0.0021 / (0.0021 + 0.0120)) < 0.03  # stationary bear share ~0.149
    for k in (0, 1):
        assert abs(r[s == k].std() / HARDY_VOLS[k] - 1) < 0.02
        assert abs(r[s == k].mean() - HARDY_MEANS[k]) < 4 * HARDY_VOLS[k] / np.sqrt((s == k).sum())
    stays = (s[1:] == s[:-1])[s[:-1] == 0].mean()
    assert abs(stays - HARDY_TRANSITION[0][0]) < 0.001


def test_switching_paths_plant_the_episodes_and_the_jumps():
    mask = episode_mask(5000, 7, 300, np.random.default_rng(1))
    starts = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int)])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([mask.astype(int), [0]])) == -1)
    assert mask.sum() == 7 * 300 and len(starts) <= 7 and ((ends - starts + 1) % 300 == 0).all()
    r, s = switching_path("gbm", seed=0)
    assert len(r) == 20 * 252 * 7 and s.sum() == 10 * 126 * 7
    per_year = 252 * 7
    assert abs(r[s == 0].std() * np.sqrt(per_year) - 0.2) < 0.01 and abs(r[s == 1].std() * np.sqrt(per_year) - 0.3) < 0.015
    rm, sm = switching_path("merton", seed=0)
    bear_var = (0.4**2 + 10 * (0.04**2 + 0.1**2)) / per_year  # diffusion plus compound Poisson jumps
    assert abs(rm[sm == 1].var() / bear_var - 1) < 0.15


def test_returns_panel_reproduces_the_returns():
    r = np.random.default_rng(0).normal(0, 0.01, 300)
    panel = returns_panel(r, "1d")
    back = np.diff(np.log(panel.close.iloc[:, 0].to_numpy()))
    assert np.allclose(back, r[1:]) and (panel.low <= panel.close).all().all() and (panel.high >= panel.open).all().all()


# ----------------------------------------------------------------------------- anchors
def test_missing_anchor_package_stops_with_the_install_command(monkeypatch):
    for name in ("jumpmodels", "jumpmodels.jump"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import raises ImportError
    with pytest.raises(ConfigError, match=r"jumpmodels.*pip install"):
        A.require("jumpmodels.jump")


def test_forward_filter_labels_are_causal_and_the_oracle_recovers_the_regimes():
    r, s = two_state_returns(3000, seed=3)
    oracle = A.oracle_filter(r, HARDY_MEANS, HARDY_VOLS, HARDY_TRANSITION)
    hmm = A.FilteredHMM(2, n_init=2, random_state=0).fit(r[:2000])
    labels = hmm.predict_online(r)
    changed = r.copy()
    changed[2500:] *= 5.0  # the future changes; no label before it may move
    assert np.array_equal(hmm.predict_online(changed)[:2500], labels[:2500])
    assert np.array_equal(A.oracle_filter(changed, HARDY_MEANS, HARDY_VOLS, HARDY_TRANSITION)[:2500], oracle[:2500])
    assert agreement(s, oracle)["balanced_accuracy"] > 0.85


def test_wasserstein_kmeans_distance_barycentre_and_recovery():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=35), rng.normal(0.5, 2.0, size=35)
    S = A.sorted_windows(np.concatenate([a, b]), 35)
    assert A._w1(S[:1], S[-1:])[0, 0] == pytest.approx(wasserstein_distance(a, b))
    state = np.repeat([0, 1, 0, 1], 1500)
    r = rng.normal(0, np.where(state == 1, 0.03, 0.01))
    wk = A.WassersteinKMeans(2, window=35, step=7, n_init=3, random_state=0).fit(r)
    labels = wk.predict_online(r)
    assert (labels[:34] == -1).all() and agreement(state, labels)["accuracy"] > 0.9
    assert np.all(np.diff(wk.centroids_, axis=1) >= 0)  # medians of sorted windows stay sorted


def test_package_jump_model_and_kmeans_anchor_on_hand_made_features():
    r, s = two_state_returns(2500, seed=5)
    X = downside_features(r)
    ok = np.isfinite(X).all(axis=1)
    assert not ok[:21].any() and ok[21:].all()
    prep = A.jumpmodels_preprocessor(X[ok])
    labels = A.PackageJumpModel(2, 20.0, n_init=2).fit(prep(X[ok])).predict_online(prep(X[ok]))
    assert agreement(s[ok], labels)["balanced_accuracy"] > 0.7
    V = ewm_volatility_features(r, (5, 21))
    assert V.shape == (2500, 2) and np.isnan(V[:21]).all() and np.isfinite(V[21:]).all()
    np.testing.assert_allclose(V[100, 0], np.log(np.sqrt(pd.Series(r**2).ewm(halflife=5).mean()[100])), rtol=1e-12)
    ok = np.isfinite(V).all(axis=1)
    prep = A.jumpmodels_preprocessor(V[ok])
    labels = A.PackageJumpModel(2, 5.0, n_init=2).fit(prep(V[ok])).predict_online(prep(V[ok]))
    assert agreement(s[ok], labels)["balanced_accuracy"] > 0.9  # the downside pair: 0.85 here, 0.73 on seed 6
    F = return_vol_breadth(np.column_stack([r, r + 0.001]), (5, 21))
    assert F.shape == (2500, 6) and np.isnan(F[:4]).all() and np.isnan(F[:20, 3:]).all() and np.isfinite(F[20:]).all()
    # breadth: the share of up bars over the last 5 bars, pooled over the two assets
    up = np.column_stack([r > 0, r + 0.001 > 0]).astype(float)
    expected = np.array([up[t - 4:t + 1].mean() for t in range(25, 2500)])
    np.testing.assert_allclose(F[25:, 2], expected, atol=1e-12)
    assert len(np.unique(np.round(F[25:, 2], 9))) > 3  # not the 3 values of "share of assets up"


# ----------------------------------------------------------------------------- scoring
def test_agreement_matches_one_to_one_and_penalises_extra_regimes():
    truth = np.array([0] * 80 + [1] * 20)
    perfect = agreement(truth, 1 - truth)  # ids do not matter
    assert perfect["accuracy"] == 1.0 and perfect["balanced_accuracy"] == 1.0 and perfect["ari"] == 1.0
    split = truth.copy()
    split[:40] = 2  # the first regime split in two: half of its bars have no partner
    res = agreement(truth, split)
    assert res["recall"][0] == 0.5 and res["balanced_accuracy"] == pytest.approx(0.75) and res["n_found"] == 3
    assert agreement(truth, np.zeros(100, int), truth >= 0)["balanced_accuracy"] == pytest.approx(0.5)
    assert agreement(np.zeros(10, int), np.zeros(10, int))["balanced_accuracy"] is None  # one true regime
    unlabelled = np.full(100, -1)
    assert agreement(truth, unlabelled)["n"] == 0


# ----------------------------------------------------------------------------- the reduced suites
def _row(report, suite, case, method):
    rows = report["suites"][suite]["summary"]["rows"]
    return next(r for r in rows if r["case"] == case and r["method"] == method)


def test_quick_suites_run_and_hold_their_regression_bounds(tmp_path):
    suites = ["two_state", "switching_paths", "multi_asset"] + (["real_oos"] if REAL_FILE.exists() else [])
    out = subprocess.run([sys.executable, "scripts/benchmark.py", "suite=regimes_quick",
                          f"suite.suites=[{','.join(suites)}]", f"paths.artifacts_dir={tmp_path}",
                          f"paths.run_dir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    md = (tmp_path / "run" / "BENCHMARKS.md").read_text()
    assert list(report["suites"]) == suites and "Closing note" in md
    for name, section in report["suites"].items():
        cfg = section["config"]
        methods = set(cfg["project"]["variants"]) | set(cfg["project"].get("reselect") or {}) | set(cfg["anchors"])
        if name == "switching_paths":
            methods -= {"oracle"}
        assert {r["method"] for r in section["summary"]["rows"]} == methods, name
        for row in section["summary"]["rows"]:
            for key, value in row.items():
                v = value.get("mean") if isinstance(value, dict) else None
                if v is not None and not key.startswith("ari"):
                    assert 0.0 <= v <= 1.0, (name, row["method"], key, v)
        assert section["summary"]["closing"], name

    # Bounds, each well below what the quick run gives and far above what a broken step gives.
    # Two-state, T = 2000: the forward filter of an HMM fitted on 2000 days reaches 0.88-0.95
    # balanced accuracy out of sample; a smoothed (look-ahead) filter would not be caught here,
    # but a broken filter, simulation or matching falls to ~0.5. The oracle (true parameters)
    # must not do worse than 0.85.
    assert _row(report, "two_state", "T=2000", "hmm")["bac_oos"]["mean"] > 0.8
    assert _row(report, "two_state", "T=2000", "oracle")["bac_oos"]["mean"] > 0.85
    # The project's feature-only path with forecast validation separates the two volatility
    # levels (0.9-0.95 on this seed); chance is 0.5.
    assert _row(report, "two_state", "T=2000", "features_forecast")["bac_oos"]["mean"] > 0.75
    # Switching paths: the project's feature-only path recovers gBm bear periods (vol 0.3 vs 0.2)
    # with ~95 % total accuracy; WK-means on Merton paths (jumps of different sizes) ~95 %.
    assert _row(report, "switching_paths", "gbm", "features")["acc_oos"]["mean"] > 0.85
    assert _row(report, "switching_paths", "merton", "wkmeans")["acc_oos"]["mean"] > 0.85
    # Multi-asset volatility scenario (three planted regimes): the HMM on market return/volatility/
    # breadth reaches balanced accuracy 0.69-0.86 out of sample at 2000-4000 bars (chance: 1/3).
    # ARI is not bounded here: with 600 test bars the test period holds only 3-5 regime runs, and
    # GARCH volatility carried across a switch makes one misread run move ARI by +-0.4.
    assert _row(report, "multi_asset", "volatility", "hmm")["bac_oos"]["mean"] > 0.55
    # Correlation-only scenario: the project's HMM on the bar-return cross-section (full covariance
    # per regime) sees the correlation in every bar; balanced accuracy 0.99 here (ARI 0.97), where
    # methods on smoothed return/volatility features stay near chance (0.5).
    assert _row(report, "multi_asset", "correlation", "market_hmm")["bac_oos"]["mean"] > 0.8
    # The same path on gBm paths (one asset, bear volatility 1.5x bull): 97 % total accuracy here.
    assert _row(report, "switching_paths", "gbm", "market_hmm")["acc_oos"]["mean"] > 0.9
    if "real_oos" in report["suites"]:
        # Real data: the jump model's labels persist (mean run > 24 h, far from the 1-2 h of a
        # flickering label), and current volatility forecasts the next day's better than the
        # training mean (naive R^2 > 0; ~0.1-0.5 depending on the period). Brier scores of a
        # probability lie in [0, 1].
        jump = _row(report, "real_oos", "BTC/ETH/BNB 1h", "jump")
        assert jump["mean_run_length_hours"] > 24 and jump["vol_r2_naive"] > 0.0
        for row in report["suites"]["real_oos"]["summary"]["rows"]:
            assert 0.0 <= row["brier_regime"] <= 1.0 and row["entropy_rate_nats"] >= 0.0 and row["vol_r2_regime"] <= 1.0

    # Resuming from this run's archive of per-case results recomputes nothing and reproduces
    # every summary; the report says which results were reused and at which commit they were
    # computed. (A run directory is an equivalent source: test_resume_sources.)
    archive = tmp_path / "run" / "cases.jsonl.gz"
    again = subprocess.run([sys.executable, "scripts/benchmark.py", "suite=regimes_quick",
                            f"suite.suites=[{','.join(suites)}]", f"suite.resume={archive}",
                            f"paths.artifacts_dir={tmp_path}", f"paths.run_dir={tmp_path}/run2"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "run2" / "report.json").read_text())
    assert "suite.resume=" in resumed["command"] and resumed["resumed_from"] == [str(archive)]
    for name, section in resumed["suites"].items():
        first = report["suites"][name]
        assert section["n_computed"] == 0 and section["n_reused"] == first["n_computed"] > 0, name
        assert section["summary"]["rows"] == first["summary"]["rows"], name
        assert section["compute_seconds"] == first["compute_seconds"], name
    md2 = (tmp_path / "run2" / "BENCHMARKS.md").read_text()
    assert "reused from an earlier run" in md2 and "results computed at commit(s): " in md2


def test_resume_sources(tmp_path):
    """A resume source is a run directory (its work/) or an archive; both give the same results,
    the first source that has a result wins, and anything else is a ConfigError."""
    from market_regimes.benchmarks.regime_suites import resume_sources, reuse, write_archive
    from market_regimes.errors import ConfigError

    work = tmp_path / "run" / "work"
    for rel, value in (("cases/two_state/T=250_seed0.json", 1), ("real_oos/hmm.json", 2)):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(json.dumps({"x": value}))
    (work / "scratch").mkdir()
    (work / "scratch" / "partial.json").write_text("{}")  # not a result: not archived
    archive = write_archive(work, tmp_path / "cases.jsonl.gz")
    other = tmp_path / "other" / "work" / "real_oos"
    other.mkdir(parents=True)
    (other / "hmm.json").write_text(json.dumps({"x": 3}))
    for order in ([str(tmp_path / "run")], [str(archive)]):
        sources = resume_sources(order + [str(tmp_path / "other")])
        assert reuse(sources, Path("cases/two_state/T=250_seed0.json")) == {"x": 1}
        assert reuse(sources, Path("real_oos/hmm.json")) == {"x": 2}
        assert reuse(sources, Path("cases/two_state/T=250_seed1.json")) is None
    assert reuse(resume_sources(str(tmp_path / "other")), Path("real_oos/hmm.json")) == {"x": 3}
    assert len(resume_sources([str(archive)])[0]) == 2
    with pytest.raises(ConfigError, match="neither a run directory"):
        resume_sources([str(tmp_path / "missing")])


def test_resumed_cases_must_hold_every_method_and_archives_keep_the_union(tmp_path, monkeypatch):
    """A reused case lacking a method of the config is recomputed, one holding them all is not;
    the archive written after resuming holds this run's results and the sources' other ones."""
    from market_regimes.benchmarks import regime_suites as R

    spec = {"suite": "two_state", "case": "T=250", "project": {"project": {}}, "reselect": {"fc": {}},
            "anchors": {"hmm": {}}}
    full = {"project": {"acc": 1}, "fc": {"acc": 1}, "hmm": {"acc": 1}}
    old = tmp_path / "old"
    for seed, methods in ((0, full), (1, {"hmm": {"acc": 0}}), (7, full)):  # seed 1 lacks two methods
        path = old / "cases" / "two_state" / f"T=250_seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"suite": "two_state", "case": "T=250", "seed": seed, "methods": methods}))
    ran = []

    def fake_run(case):
        ran.append(case["seed"])
        return {"suite": case["suite"], "case": case["case"], "seed": case["seed"], "methods": full, "seconds": 1.0}

    monkeypatch.setattr(R, "_run_one", fake_run)
    work = tmp_path / "new" / "work"
    out = R.run_cases([{**spec, "seed": 0}, {**spec, "seed": 1}], work / "cases", 1, [old])
    assert ran == [1] and [bool(r.get("reused")) for r in out] == [True, False]
    assert out[1]["methods"] == full
    archive = R.read_archive(R.write_archive(work, tmp_path / "a.jsonl.gz", [old]))
    assert sorted(archive) == [f"cases/two_state/T=250_seed{s}.json" for s in (0, 1, 7)]
    assert archive["cases/two_state/T=250_seed1.json"]["methods"] == full  # this run's, not the source's


def test_real_data_market_hmm_variant_is_the_experiment_file():
    """The real-data suite cannot pick a second experiment, so it spells experiment=market_hmm
    out; the composed model, cluster and window must stay what the experiment file gives (the
    suite adds only window.stride=1, every bar instead of the experiment's every second)."""
    from omegaconf import OmegaConf

    from market_regimes.benchmarks.project_path import project_config

    suite = OmegaConf.load(REPO / "config" / "suite" / "real_oos.yaml")["real_oos"]["project"]
    spelled = project_config([*suite["overrides"], *suite["variants"]["market_hmm"]], "/tmp/unused", "walk_forward")
    direct = project_config(["experiment=market_hmm", "window.stride=1"], "/tmp/unused", "walk_forward")
    for node in ("model", "cluster"):
        assert OmegaConf.to_container(spelled[node]) == OmegaConf.to_container(direct[node]), node
    for key in ("mode", "clip", "exclude_features", "stride", "length"):
        assert spelled.window[key] == direct.window[key], key
