"""The data stage as configured by Hydra (every source), the prepare job, and the real data."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, random_long, real_file
from hydra import compose, initialize_config_dir
from test_data_io import make_source

from market_regimes.data import load_market
from market_regimes.errors import ConfigError
from market_regimes.pipeline import prepare, summarize


def test_synthetic_source_carries_aligned_truth():
    cfg = {"source": "synthetic", "scenario": "correlation", "n_bars": 800, "symbols": ["BTCUSDT", "ETHUSDT"], "seed": 3}
    m = load_market(cfg)
    assert m.truth is not None and m.truth.index.equals(m.panel.index)
    assert set(np.unique(m.truth)) == {0, 1}
    assert m.source["fingerprint"] == load_market(cfg).source["fingerprint"]
    assert load_market({**cfg, "seed": 4}).source["fingerprint"] != m.source["fingerprint"]


def test_binance_source_reads_its_cache(tmp_path):
    mirror = tmp_path / "mirror"
    for sym in ["BTCUSDT", "ETHUSDT"]:
        make_source(mirror, sym, ["2024-01", "2024-02"])
    cfg = {"source": "binance", "symbols": ["BTCUSDT", "ETHUSDT"], "interval": "1h", "start": "2024-01-01",
           "end": "2024-02-28", "cache_dir": str(tmp_path / "cache"), "base_url": mirror.as_uri(), "timeout_s": 5}
    m = load_market(cfg)
    assert m.panel.symbols == ["BTCUSDT", "ETHUSDT"]
    assert m.panel.close.notna().sum().tolist() == [10, 10]


def test_unknown_source_and_missing_path():
    with pytest.raises(ConfigError, match="unknown data.source"):
        load_market({"source": "ftp"})
    with pytest.raises(ConfigError, match="data.path"):
        load_market({"source": "files", "path": "???"})


def run_script(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_prepare_script_and_its_one_line_errors(tmp_path):
    ok = run_script("scripts/prepare_data.py", "data.n_bars=1200", f"paths.artifacts_dir={tmp_path}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "windows of 48 bars" in ok.stdout and "summary written to" in ok.stdout
    random_long(n_bars=300).to_csv(tmp_path / "long.csv", index=False)
    bad = run_script("scripts/prepare_data.py", "data=files", f"data.path={tmp_path}/long.csv",
                     "data.symbols=[BTCUSDT,NOPEUSDT]", f"paths.artifacts_dir={tmp_path}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "NOPEUSDT" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_script("scripts/prepare_data.py", "data=files", f"data.path={tmp_path}/none.parquet",
                         f"paths.artifacts_dir={tmp_path}")
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.realdata
def test_real_hourly_data_builds_features_and_windows(tmp_path):
    path = real_file("binance_spot_1h_btc_eth_bnb_2017_2024.csv.gz")
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        cfg = compose("prepare", overrides=["data=files", f"data.path={path}", "window.train_end=2022-12-31",
                                            f"paths.run_dir={tmp_path}"])
    prep = prepare(cfg)
    s = summarize(prep)
    assert prep.features.symbols == ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
    assert s["windows_train"] > 100_000 and s["windows_total"] > s["windows_train"]
    assert prep.windows.train_end.year == 2022
    # the Binance outage of 2018-02-08 (34 h) is a gap: no window of any asset spans it
    outage = prep.windows.index.get_indexer(["2018-02-08 12:00"], method="nearest")[0]
    assert not prep.windows.ends[:, outage : outage + 48].any()
    assert np.isfinite(prep.windows.X).all()
