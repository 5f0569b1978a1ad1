"""scripts/infer_latest.py and market_regimes.inference on a bundle trained on tiny synthetic data."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_training import compose_cfg

from market_regimes.bundle import load_bundle
from market_regimes.data import MarketData
from market_regimes.features import FeatureConfig
from market_regimes.inference import TAIL_SLACK, history_bars, infer, label_history, load_bundle_market, scaled_windows
from market_regimes.training import run_training


@pytest.fixture(scope="module", params=["jump", "hmm"])
def bundle_dir(tmp_path_factory, request):
    """A bundle per sequential clusterer: both filter with a finite memory that inference relies on."""
    tmp = tmp_path_factory.mktemp(f"infer_{request.param}")
    run_training(compose_cfg(tmp, ["plots=false", f"cluster={request.param}", "cluster.k_range=[2,4]",
                                   "cluster.params.n_init=2", "cluster.params.online_memory=64"]))
    return tmp


@pytest.fixture(scope="module")
def loaded(bundle_dir):
    bundle = load_bundle(bundle_dir, encoder_only=True)
    return bundle, load_bundle_market(bundle)


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "scripts/infer_latest.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_card_and_json(bundle_dir):
    out = cli("--asset", "BTCUSDT", "--artifacts", str(bundle_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BTCUSDT  bar ")
    assert "P(up next 1 bar):" in out.stdout and "95% CI" in out.stdout and "n=" in out.stdout
    assert "expected remaining duration" in out.stdout and "forward volatility" in out.stdout
    assert "stale data" in out.stderr  # synthetic bars are from 2022
    js = cli("--asset", "ETHUSDT", "--artifacts", str(bundle_dir), "--json")
    card = json.loads(js.stdout)
    for key in ["asset", "bar_time", "stale_bars", "regime", "regime_name", "probability", "bars_in_regime",
                "p_up", "expected_remaining_bars", "forward_vol_ratio", "transitions"]:
        assert key in card
    assert card["asset"] == "ETHUSDT" and 0.0 <= card["probability"] <= 1.0
    assert abs(sum(card["probabilities"]) - 1.0) < 1e-6
    assert card["p_up"]["24"]["lo"] <= card["p_up"]["24"]["p"] <= card["p_up"]["24"]["hi"]
    table = cli("--all", "--artifacts", str(bundle_dir))
    assert table.returncode == 0 and all(s in table.stdout for s in ["BTCUSDT", "ETHUSDT", "BNBUSDT"])


def test_at_equals_the_causal_history_labelling(loaded):
    bundle, market = loaded
    history = label_history(bundle, market)
    idx = history.index
    rng = np.random.default_rng(0)
    for pos in rng.choice(np.arange(300, len(idx)), size=12, replace=False):
        for asset in ["BTCUSDT", "BNBUSDT"]:
            card = infer(bundle, market, asset, at=idx[pos])
            assert card["bar_time"] == str(idx[pos])
            assert card["regime"] == history.iloc[pos][asset], (pos, asset)


def test_appending_bars_never_changes_a_past_result(loaded):
    bundle, market = loaded
    idx = market.panel.index
    at = idx[900]
    short = MarketData(market.panel.select(end=idx[950]), None, None, market.source)
    longer = MarketData(market.panel.select(end=idx[1200]), None, None, market.source)
    a, b = infer(bundle, short, "ETHUSDT", at=at), infer(bundle, longer, "ETHUSDT", at=at)
    for key in ["regime", "probabilities", "bars_in_regime", "bar_time"]:
        assert a[key] == b[key]


def test_error_paths_are_one_line_with_nonzero_exit(bundle_dir, tmp_path):
    def one_line_error(out, code=2):
        assert out.returncode == code, (out.returncode, out.stderr)
        assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in out.stderr
        return out.stderr

    assert "BTCUSDT, ETHUSDT, BNBUSDT" in one_line_error(cli("--asset", "DOGEUSDT", "--artifacts", str(bundle_dir)))
    assert "too little" in one_line_error(cli("--asset", "BTCUSDT", "--artifacts", str(bundle_dir),
                                              "--at", "2022-01-02"))
    one_line_error(cli("--asset", "BTCUSDT", "--artifacts", str(bundle_dir), "--strict"), code=3)
    assert "no bundle" in one_line_error(cli("--asset", "BTCUSDT", "--artifacts", str(tmp_path / "none")))
    assert "no such file" in one_line_error(cli("--asset", "BTCUSDT", "--artifacts", str(bundle_dir),
                                                "--data", str(tmp_path / "missing.parquet")))
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree((bundle_dir / "latest").resolve(), broken)
    (broken / "clusterer.npz").write_bytes(b"not an npz")
    assert "corrupt" in one_line_error(cli("--asset", "BTCUSDT", "--artifacts", str(broken)))


def test_other_data_with_the_bundle_symbols(bundle_dir, tmp_path, loaded):
    bundle, market = loaded
    market.panel.to_long().to_csv(tmp_path / "bars.csv", index=False)
    out = cli("--asset", "BNBUSDT", "--artifacts", str(bundle_dir), "--data", str(tmp_path / "bars.csv"), "--json")
    assert out.returncode == 0, out.stderr
    direct = infer(bundle, market, "BNBUSDT")
    assert json.loads(out.stdout)["regime"] == direct["regime"]


def test_features_over_the_tail_give_the_full_history_windows_and_card(loaded):
    bundle, market = loaded
    need = history_bars(bundle)
    tail, full = scaled_windows(bundle, market), scaled_windows(bundle, market, full=True)
    assert len(tail.index) == need + TAIL_SLACK < len(full.index)
    exact = len(tail.index) - FeatureConfig.from_dict(bundle.config["features"]).history() + 1
    np.testing.assert_array_equal(tail.ends[:, -exact:], full.ends[:, -exact:])
    np.testing.assert_allclose(tail.X[:, -exact:], full.X[:, -exact:], rtol=1e-5, atol=1e-5)
    for asset in ["BTCUSDT", "ETHUSDT"]:
        a, b = infer(bundle, market, asset), infer(bundle, market, asset, windows=full)
        assert (a["regime"], a["bars_in_regime"], a["bar_time"]) == (b["regime"], b["bars_in_regime"], b["bar_time"])
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)
