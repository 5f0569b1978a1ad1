"""Drift tests and the monitor: detection, retraining, validation and the atomic swap of latest."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_training import TINY, compose_cfg

from market_regimes.data.synthetic import scenario, simulate_market
from market_regimes.drift import DriftSample, DriftThresholds, assess, ks_statistic, mmd_test, psi
from market_regimes.monitor import EXIT_ERROR, EXIT_NO_DRIFT, EXIT_REJECTED, EXIT_RETRAINED, MonitorOptions, run_monitor
from market_regimes.training import run_training


def test_psi_ks_and_mmd_separate_same_from_shifted():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3000, 3))
    same = rng.normal(size=(3000, 3))
    shifted = same + np.array([0.0, 1.0, 0.0])
    assert psi(ref, same).max() < 0.02
    p = psi(ref, shifted)
    assert p[1] > 0.25 and p[0] < 0.02
    ks = ks_statistic(ref, shifted)
    assert ks[1] > 0.3 and ks[0] < 0.05
    null = [mmd_test(ref[:300], rng.normal(size=(300, 3)), alpha=0.05, n_permutations=100, seed=s)["drift"]
            for s in range(20)]
    assert sum(null) <= 4  # ~5 % false alarms expected at alpha 0.05; 4 of 20 has p < 0.02 under the null
    shifted_test = mmd_test(ref[:300], shifted[:300], alpha=0.01, n_permutations=100)
    assert shifted_test["drift"] and shifted_test["p_value"] <= 0.01


def test_assess_reasons_and_thresholds():
    rng = np.random.default_rng(1)
    ref = DriftSample(rng.normal(size=(2000, 4)), rng.normal(size=(400, 3)), np.array([0.5, 0.5]), rng.gamma(2, size=400))
    cur = DriftSample(rng.normal(size=(2000, 4)) * 3, rng.normal(size=(400, 3)) + 2, np.array([0.05, 0.95]),
                      rng.gamma(2, size=400) * 4)
    report = assess(ref, cur, DriftThresholds(mmd_permutations=100))
    assert report["drift"]
    assert report["features"]["drift"] and report["latent_mmd"]["drift"]
    assert report["reconstruction"]["drift"] and report["occupancy"]["drift"]
    assert len(report["reasons"]) == 4
    calm = assess(ref, ref, DriftThresholds(mmd_permutations=100))
    assert not calm["features"]["drift"] and not calm["occupancy"]["drift"]
    assert calm["reconstruction"]["ratio_of_medians"] == pytest.approx(1.0)


N_BARS = 2400


def _write_market(path, drifted: bool):
    long, _ = simulate_market(scenario("volatility"), n_bars=N_BARS, n_assets=3, seed=5)
    if drifted:  # the last 800 bars: returns 6x more volatile and volume 10x higher
        long = long.sort_values(["symbol", "timestamp"]).copy()
        last = long["timestamp"] >= long["timestamp"].max() - np.timedelta64(799, "h")
        for sym, g in long[last].groupby("symbol"):
            idx = g.index
            logc = np.log(g["close"].to_numpy())
            base = logc[0]
            new = base + 6.0 * (logc - base)
            ratio = np.exp(new - logc)
            for col in ("open", "high", "low", "close"):
                long.loc[idx, col] = long.loc[idx, col].to_numpy() * ratio
            long.loc[idx, "volume"] *= 10
        # keep OHLC consistent after rescaling
        long["high"] = long[["open", "high", "low", "close"]].max(axis=1)
        long["low"] = long[["open", "high", "low", "close"]].min(axis=1)
    long.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor")
    calm = _write_market(tmp / "calm.parquet", drifted=False)
    drifted = _write_market(tmp / "drifted.parquet", drifted=True)
    tiny = [o for o in TINY if not o.startswith("data.")]
    cfg = compose_cfg(tmp / "art", [*tiny, "plots=false", "data=files", f"data.path={calm}", "window.train_fraction=0.6",
                              "cluster.n_regimes=2"],
                      tiny=False)
    run_training(cfg)
    return tmp, calm, drifted


def _latest(art):
    return os.path.realpath(art / "latest")


def _options(tmp, data, **kw):
    kw.setdefault("recent_bars", 500)
    kw.setdefault("holdout_bars", 400)
    return MonitorOptions(artifacts=str(tmp / "art"), data=str(data), **kw)


def test_no_drift_on_the_training_distribution(setup):
    tmp, calm, _ = setup
    before = _latest(tmp / "art")
    lenient = DriftThresholds(psi=1.0, psi_share=0.5, mmd_alpha=0.001, mmd_permutations=100, recon_ratio=3.0,
                              occupancy_tv=0.6)
    code, entry = run_monitor(_options(tmp, calm, thresholds=lenient))
    assert code == EXIT_NO_DRIFT, entry.get("reasons")
    assert entry["decision"] == "no_drift" and _latest(tmp / "art") == before


def test_drift_found_candidate_rejected_keeps_the_old_bundle(setup):
    tmp, _, drifted = setup
    before = _latest(tmp / "art")
    code, entry = run_monitor(_options(tmp, drifted, min_run_length=1e9))
    assert entry["drift"]["drift"] and entry["drift"]["reasons"]
    assert code == EXIT_REJECTED and entry["decision"] == "rejected"
    assert not entry["validation"]["checks"]["mean_run_length"]["passed"]
    assert os.path.isdir(entry["candidate"])  # the candidate was built ...
    assert _latest(tmp / "art") == before  # ... but latest did not move
    log = [json.loads(line) for line in (tmp / "art" / "monitor_log.jsonl").read_text().splitlines()]
    assert log[-1]["decision"] == "rejected" and log[-1]["exit_code"] == EXIT_REJECTED


def test_failed_retraining_keeps_the_old_bundle(setup):
    tmp, _, drifted = setup
    before = _latest(tmp / "art")

    def broken(cfg):
        raise RuntimeError("out of memory while training")

    code, entry = run_monitor(_options(tmp, drifted, force=True), train_fn=broken)
    assert code == EXIT_ERROR and "out of memory" in entry["error"]
    assert _latest(tmp / "art") == before
    from market_regimes.bundle import load_bundle

    assert load_bundle(tmp / "art").path.as_posix() == before  # still loads and is usable


def test_drift_retrains_validates_and_swaps_latest(setup):
    tmp, _, drifted = setup
    before = _latest(tmp / "art")
    code, entry = run_monitor(_options(tmp, drifted, min_run_length=2.0, max_recon_ratio=100.0))
    assert code == EXIT_RETRAINED, entry.get("reasons")
    assert entry["validation"]["passed"]
    assert _latest(tmp / "art") == os.path.realpath(entry["candidate"]) != before
    # the candidate was trained on data ending before the hold-out it was validated on
    from market_regimes.bundle import load_bundle

    cand = load_bundle(tmp / "art")
    assert cand.manifest["train_end"] < entry["validation"]["holdout_start"]


def test_cli_exit_codes_and_messages(setup, tmp_path):
    tmp, _, drifted = setup
    r = subprocess.run([sys.executable, "scripts/monitor_and_retrain.py", "--artifacts", str(tmp / "art"), "--data",
                        str(drifted), "--check-only", "--recent-bars", "500"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == EXIT_REJECTED, r.stderr[-2000:]
    assert "decision: drift_check_only" in r.stderr and "log:" in r.stderr
    r = subprocess.run([sys.executable, "scripts/monitor_and_retrain.py", "--artifacts", str(tmp_path / "none")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no bundle" in r.stderr
