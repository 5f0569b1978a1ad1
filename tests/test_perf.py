"""The performance benchmark: the quick suite end to end, the pandas reference, stage isolation."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, random_long

from market_regimes.benchmarks.measure import reset_peak, run_stage
from market_regimes.benchmarks.prep import compare
from market_regimes.benchmarks.reference import reference_features, reference_windows
from market_regimes.data.panel import to_panel
from market_regimes.features import FeatureConfig, build_features
from market_regimes.windows import WindowConfig, build_windows

SMALL = FeatureConfig(vol_horizons=(6, 24), downside_window=6, atr_window=5, rsi_window=5, bollinger_window=10,
                      macd=(4, 8, 3), volume_window=24, volume_roc_window=6, obv_window=6,
                      relative_return_window=6, corr_window=24, breadth_return_window=6,
                      breadth_ma_window=10, market_corr_window=12)


def messy_panel():
    """Four assets with a late listing, a gap and a stretch of flat prices (ties in breadth)."""
    long = random_long(n_bars=500, symbols=("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"), seed=3)
    t = long["timestamp"]
    drop = ((long.symbol == "SOLUSDT") & (t < t.min() + pd.Timedelta("120h"))) | (
        (long.symbol == "ETHUSDT") & t.between(t.min() + pd.Timedelta("300h"), t.min() + pd.Timedelta("304h")))
    long = long[~drop].copy()
    flat = (long.symbol == "BNBUSDT") & t.between(t.min() + pd.Timedelta("200h"), t.min() + pd.Timedelta("260h"))
    long.loc[flat, ["open", "high", "low", "close"]] = 50.0
    return to_panel(long)


def test_reference_gives_the_same_features_and_windows():
    panel = messy_panel()
    wcfg = WindowConfig(length=16, exclude_features=("corr_ref_*",))
    fs = build_features(panel, SMALL)
    ws, _ = build_windows(fs, wcfg)
    feats, valid = reference_features(panel, SMALL)
    keys, windows, names = reference_windows(feats, valid, wcfg.length, ws.train_end, wcfg.exclude_features, wcfg.clip)
    diff = compare(fs, ws, feats, valid, keys, windows, names)
    assert diff["same_names"] and diff["same_window_keys"] and diff["valid_mismatches"] == 0
    assert diff["feature_max_rel_diff"] < 1e-6 and diff["window_max_abs_diff"] < 1e-5
    assert len(keys) > 1000 and fs.valid.sum() > 1500
    # the comparison can fail: one changed value in the reference is seen
    feats["rsi_5"].iloc[400, 1] += 1.0
    assert compare(fs, ws, feats, valid, keys, windows, names)["feature_max_rel_diff"] > 1e-3


def test_a_stage_in_a_fresh_process_reports_its_memory(tmp_path):
    data = {"source": "synthetic", "n_bars": 800, "seed": 1}
    out = run_stage("market_regimes.benchmarks.prep:load_stage", {"data": data, "panel_path": str(tmp_path / "p.npz")})
    assert out["n_assets"] == 3 and out["n_bars"] == 800 and (tmp_path / "p.npz").exists()
    assert out["peak_rss_mb"] > 30 and out["process_s"] > out["stage_s"] > 0
    assert out["steal_share"] is None or 0.0 <= out["steal_share"] <= 1.0
    with pytest.raises(RuntimeError, match="unknown data.source"):
        run_stage("market_regimes.benchmarks.prep:load_stage", {"data": {"source": "ftp"}, "panel_path": "x"})


def test_warm_memory_is_written_then_freed_before_the_stage(tmp_path):
    if not reset_peak():
        pytest.skip("the peak resident memory cannot be reset here")
    # in fresh processes: a long-lived one may hand the chunks memory it already holds
    alone = run_stage("market_regimes.benchmarks.measure:warm_memory", {"mb": 600, "chunk_mb": 64})
    assert alone["warm_mb"] == 600 and 0 < alone["warm_gbps_slowest"] <= alone["warm_gbps_median"]
    assert alone["peak_rss_mb"] >= 600  # 9 chunks of 64 MiB and one of 24 really written
    stage = "market_regimes.benchmarks.prep:load_stage"
    args = {"data": {"source": "synthetic", "n_bars": 300, "seed": 1}, "panel_path": str(tmp_path / "p.npz")}
    plain, warmed = run_stage(stage, args), run_stage(stage, args, warm_mb=600)
    assert warmed["warm_mb"] == 600 and "warm_mb" not in plain
    # freed before the stage, and the peak reset after it: the stage's peak is its own
    assert warmed["peak_rss_mb"] < plain["peak_rss_mb"] + 100 < alone["peak_rss_mb"]


def test_quick_suite_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "scripts/benchmark.py", "suite=perf_quick", f"paths.artifacts_dir={tmp_path}",
                          f"paths.run_dir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for section in ("prep", "training", "scale", "inference", "walk_forward", "machine", "targets"):
        assert report[section], section
    ref = report["prep"]["reference"]
    assert ref["same_names"] and ref["same_window_keys"] and ref["valid_mismatches"] == 0
    assert ref["feature_max_rel_diff"] < 1e-6 and ref["window_max_abs_diff"] < 1e-5
    assert report["prep"]["features_windows"]["n_windows"] > 0
    cpu = report["training"]["cpu"]
    assert all(cpu[loop]["windows_per_s"] > 0 for loop in ("bare", "lightning", "datamodule"))
    assert report["machine"]["steal_share"] is None or 0.0 <= report["machine"]["steal_share"] <= 1.0
    enc = report["training"]["encode_cpu"]
    assert set(enc["us_per_window"]) == {"16", "64"} and all(v > 0 for v in enc["us_per_window"].values())
    sizes = report["scale"]["sizes"]
    assert [s["n_assets"] for s in sizes] == [6, 3, 6] and set(report["scale"]["growth"]) == {"assets x2", "years x2"}
    assert all(st["peak_rss_mb"] > 0 and st["wall_s"] > 0 for s in sizes for st in s["stages"].values())
    assert report["scale"]["sizes"][0]["stages"]["cluster"]["n_labelled"] == sizes[0]["stages"]["encode"]["n_windows"]
    assert report["inference"]["process"]["process_s"] > 0 and report["inference"]["call"]["call_ms"] > 0
    wf = report["walk_forward"]["run"]
    assert wf["n_folds"] == 2 and len(wf["fold_s"]) == 2 and 0 < sum(wf["fold_s"]) < wf["walk_forward_s"]
    targets = {t["target"] for t in report["targets"]}
    assert any("pandas-loop" in t for t in targets) and any("Lightning overhead" in t for t in targets)
    assert any("peak RSS <= 16 GB" in t for t in targets) and any("inference call" in t for t in targets)
    md = (tmp_path / "run" / "PERFORMANCE.md").read_text()
    for heading in ("## Targets", "## 1. Features + windows", "## 2. Training throughput", "## 3. Scale",
                    "## 4. Inference latency", "## 5. Walk-forward validation", "## Reproduce"):
        assert heading in md
    assert "taken by the hypervisor for other guests (steal) during the run" in md
    # the scale table says how many runs its medians are of (perf_quick: one of each)
    assert report["scale"]["runs"] == {"short": 1, "long": 1, "interleaved": True}
    # every scale stage ran after the memory warm-up, whose rates the document reports
    assert report["scale"]["warm_memory_mb"] == 64
    assert all(st["warm_mb"] == 64 and st["warm_gbps_slowest"] > 0 for st in sizes[0]["stages"].values())
    assert "64 MB of memory were written and freed" in md, md
    assert "Runs per stage and size (medians): 1 for data, features, windows and train, 1 for encode" in md
    assert "no GPU on this machine" in md or "cuda" in json.dumps(report["training"])



def test_merged_sections_say_which_run_they_come_from(tmp_path):
    from market_regimes.benchmarks.perf import merge_sections
    from market_regimes.errors import ConfigError

    def run(name, commit, **sections):
        d = tmp_path / name
        d.mkdir()
        machine = {"date": f"date-{name}", "commit": commit, "load_average": [0.1, 0.2, 0.3]}
        (d / "report.json").write_text(json.dumps({"machine": machine, **sections}))
        return str(d)

    first = run("first", "aaa", prep={"v": 1}, scale={"v": 1}, training={"v": 1})
    second = run("second", "bbb", scale={"v": 2})
    report = {}
    prov = merge_sections(report, [first, second], skip=["training"])
    # later runs win, sections this run measures itself are not copied
    assert report == {"prep": {"v": 1}, "scale": {"v": 2}}
    assert prov["prep"]["commit"] == "aaa" and prov["scale"]["commit"] == "bbb" and "training" not in prov
    # a report JSON file (the committed docs/performance.json) is a source like its run directory
    from_file = {}
    # a section that report itself merged from an earlier run keeps that run's date and commit
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps({"machine": {"date": "date-second", "commit": "bbb", "load_average": [0, 0, 0]},
                                  "prep": {"v": 1}, "provenance": {"prep": {**prov["prep"], "steal_share": 0.0}}}))
    again = merge_sections({}, [str(merged)])
    assert again["prep"]["commit"] == "aaa" and again["prep"]["date"] == "date-first"
    assert again["prep"]["run"] == first  # its own run, however many merges it went through
    via_file = merge_sections(from_file, [str(tmp_path / "second" / "report.json")])
    assert from_file == {"scale": {"v": 2}} and via_file["scale"]["commit"] == "bbb"
    assert {k: v for k, v in via_file["scale"].items() if k != "run"} == \
        {k: v for k, v in merge_sections({}, [second])["scale"].items() if k != "run"}
    with pytest.raises(ConfigError, match="does not exist"):
        merge_sections({}, [str(tmp_path / "missing")])


def test_reference_stage_checks_the_whole_panel_chunk_by_chunk(tmp_path, monkeypatch):
    """The stage streams the reference's windows through the check: every window compared, the
    same verdict as comparing them all at once, and a wrong window is seen."""
    import market_regimes.benchmarks.reference as reference
    from market_regimes.benchmarks.prep import reference_stage, save_panel

    panel = messy_panel()
    save_panel(panel, str(tmp_path / "p.npz"))
    features = {f: getattr(SMALL, f) for f in SMALL.__dataclass_fields__}
    window = {"length": 16, "exclude_features": ["corr_ref_*"]}
    whole = reference_stage(str(tmp_path / "p.npz"), features, window, None)
    ws, _ = build_windows(build_features(panel, SMALL), WindowConfig(length=16, exclude_features=("corr_ref_*",)))
    assert whole["whole_panel"] and whole["slice_bars"] == len(panel.index)
    assert whole["n_windows"] == int(ws.ends.sum()) > 1000
    assert whole["same_names"] and whole["same_window_keys"] and whole["valid_mismatches"] == 0
    assert whole["feature_max_rel_diff"] < 1e-6 and whole["window_max_abs_diff"] < 1e-5
    assert whole["reference_s"] > whole["reference_windows_s"] > 0 and whole["check_s"] > 0

    part = reference_stage(str(tmp_path / "p.npz"), features, window, 200)
    assert not part["whole_panel"] and part["slice_bars"] == 200 and 0 < part["n_windows"] < whole["n_windows"]

    real = reference.iter_reference_windows

    def one_wrong(*args, **kwargs):  # small chunks, and one value off in the third
        for i, (keys, windows) in enumerate(real(*args, **{**kwargs, "chunk": 100})):
            if i == 2:
                windows[5, 3, 1] += 0.5
            yield keys, windows

    monkeypatch.setattr(reference, "iter_reference_windows", one_wrong)
    bad = reference_stage(str(tmp_path / "p.npz"), features, window, None)
    assert bad["n_windows"] == whole["n_windows"] and bad["window_max_abs_diff"] > 0.4
