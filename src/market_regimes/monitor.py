"""Monitor the current bundle against the latest data and retrain when the market moved away.

``run_monitor`` (``scripts/monitor_and_retrain.py``):

1. loads ``<artifacts>/latest`` and the latest data (the bundle's recorded source, or ``--data``);
2. labels the last ``recent_bars`` bars with the bundle and runs every drift test of
   ``market_regimes.drift`` against the reference stored in the bundle;
3. with drift (or ``--force``) retrains through the same training pipeline with the bundle's own
   configuration, the training period ending ``holdout_bars`` + purge bars before the data end;
4. validates the candidate on that hold-out (never seen in its fit): its causal labels must
   persist (mean run length >= ``min_run_length`` bars), use at least two regimes, and, for
   autoencoders, reconstruct the hold-out no worse than ``max_recon_ratio`` x the current model;
5. only if every check passes re-points ``<artifacts>/latest`` atomically at the candidate.

Any failure leaves ``latest`` where it was. The decision and its reasons are printed and appended
as one JSON line to ``<artifacts>/monitor_log.jsonl``. Exit codes: 0 no drift, 3 retrained (the
new bundle is live), 4 drift but the candidate was rejected (old bundle kept), 1 error (old bundle
kept), 2 a usage error (bad arguments, no bundle).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from market_regimes.bundle import Bundle, BundleError, load_bundle, point_latest
from market_regimes.drift import DriftSample, DriftThresholds, assess, draw_sample
from market_regimes.errors import MarketRegimesError
from market_regimes.serialize import json_default

EXIT_NO_DRIFT, EXIT_ERROR, EXIT_USAGE, EXIT_RETRAINED, EXIT_REJECTED = 0, 1, 2, 3, 4


@dataclass
class MonitorOptions:
    artifacts: str = "artifacts"
    data: str | None = None
    recent_bars: int = 720           # bars compared with the reference (30 days of hourly bars)
    holdout_bars: int = 720          # bars a candidate is validated on, after its training period
    force: bool = False
    check_only: bool = False          # report drift, never retrain
    min_run_length: float = 12.0      # bars; the candidate's hold-out labels must persist this long on average
    max_recon_ratio: float = 1.1      # candidate hold-out reconstruction error / current model's, at most
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    log_path: str | None = None       # default <artifacts>/monitor_log.jsonl


def _label_recent(bundle: Bundle, windows, start: int):
    """Latents and causal labels of every valid window ending at or after bar ``start`` (the
    filter runs from the start of each sequence, so labels equal those of the full history)."""
    from market_regimes.training import encode_windows

    latents = encode_windows(bundle.model, windows, bundle.manifest.get("mode", "asset"))
    labels = np.asarray(bundle.clusterer.predict_online(latents.z, latents.lengths))
    return latents, labels, latents.end_idx >= start


def check_drift(bundle: Bundle, market, recent_bars: int, thresholds: DriftThresholds) -> dict:
    """Drift report of the last ``recent_bars`` bars against the bundle's reference."""
    from market_regimes.inference import scaled_windows

    if bundle.reference is None:
        raise BundleError(f"bundle {bundle.path} has no drift reference (reference.npz); retrain it with this version")
    windows = scaled_windows(bundle, market)
    start = max(len(windows.index) - int(recent_bars), 0)
    latents, labels, keep = _label_recent(bundle, windows, start)
    if not keep.any():
        raise MarketRegimesError(f"no valid window in the last {recent_bars} bars; nothing to compare")
    K = int(bundle.clusterer.n_regimes)
    recent = draw_sample(bundle.model, windows, latents, labels, keep, K, bundle.manifest.get("mode", "asset"),
                         stride=thresholds.stride)
    report = assess(DriftSample.from_arrays(bundle.reference), recent, thresholds, windows.names)
    report["recent_start"] = str(windows.index[start])
    report["recent_end"] = str(windows.index[-1])
    return report


def _candidate_config(bundle: Bundle, data_path: str | None, train_end: pd.Timestamp, run_dir: Path, name: str) -> dict:
    cfg = json.loads(json.dumps(bundle.config, default=str))
    if data_path:
        cfg["data"] = {**cfg["data"], "source": "files", "path": data_path}
    cfg["data"]["end"] = None
    cfg["window"]["train_end"] = str(train_end)
    cfg["paths"]["run_dir"] = str(run_dir)
    cfg["paths"]["artifacts_dir"] = str(Path(bundle.path).parent.parent)
    cfg["bundle"] = {"name": name, "update_latest": False}
    cfg["logger"] = {}
    cfg["plots"] = False
    cfg["train"]["resume"] = None
    return cfg


def validate_candidate(candidate: Bundle, current: Bundle, market, holdout_start: pd.Timestamp,
                       options: MonitorOptions) -> dict:
    """The candidate's checks on the hold-out bars (after its training period and purge)."""
    from market_regimes.drift import reconstruction_errors
    from market_regimes.evaluation import regime_process
    from market_regimes.inference import scaled_windows
    from market_regimes.training import label_frame

    checks = {}
    windows = scaled_windows(candidate, market)
    start = int(np.searchsorted(windows.index, holdout_start))
    latents, labels, keep = _label_recent(candidate, windows, start)
    frame = label_frame(windows.index, windows.symbols, latents, np.where(keep, labels, -1)).iloc[start:]
    K = int(candidate.clusterer.n_regimes)
    process = regime_process([frame], K, candidate.manifest["interval"])
    checks["mean_run_length"] = {"value": process["mean_run_length_bars"], "minimum": options.min_run_length,
                                 "passed": bool(process["mean_run_length_bars"] >= options.min_run_length)}
    used = int((np.asarray(process["occupancy"]) > 0).sum())
    checks["regimes_used"] = {"value": used, "minimum": 2, "passed": used >= 2}
    if hasattr(candidate.model, "reconstruct") and hasattr(current.model, "reconstruct"):
        mode = candidate.manifest.get("mode", "asset")
        a, t = latents.asset_idx[keep], latents.end_idx[keep]
        cur_windows = scaled_windows(current, market)
        if mode == "market":
            x_new, x_cur = windows.gather_market(t), cur_windows.gather_market(t)
        else:
            x_new, x_cur = windows.gather(a, t), cur_windows.gather(a, t)
        e_new = float(np.median(reconstruction_errors(candidate.model, x_new)))
        e_cur = float(np.median(reconstruction_errors(current.model, x_cur)))
        ratio = e_new / max(e_cur, 1e-12)
        checks["reconstruction_vs_current"] = {"value": ratio, "maximum": options.max_recon_ratio,
                                               "candidate_median": e_new, "current_median": e_cur,
                                               "passed": bool(ratio <= options.max_recon_ratio)}
    return {"holdout_start": str(holdout_start), "process": {k: v for k, v in process.items() if k != "transition_counts"},
            "checks": checks, "passed": all(c["passed"] for c in checks.values())}


def _append_log(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry, default=json_default) + "\n")


def run_monitor(options: MonitorOptions, train_fn=None) -> tuple[int, dict]:
    """One monitoring pass; returns (exit code, log entry). ``train_fn(cfg) -> TrainResult``
    defaults to ``market_regimes.training.run_training``."""
    from omegaconf import OmegaConf

    from market_regimes.inference import load_bundle_market

    artifacts = Path(options.artifacts)
    log_path = Path(options.log_path) if options.log_path else artifacts / "monitor_log.jsonl"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    entry: dict = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "force": options.force}
    try:
        current = load_bundle(artifacts)
    except BundleError as err:
        entry.update(decision="error", reasons=[str(err)])
        _append_log(log_path, entry)
        return EXIT_USAGE, entry
    entry["bundle"] = str(current.path)
    try:
        market = load_bundle_market(current, options.data)
        report = check_drift(current, market, options.recent_bars, options.thresholds)
        entry["drift"] = report
        if not report["drift"] and not options.force:
            entry.update(decision="no_drift", reasons=["no drift test tripped"])
            return _finish(log_path, entry, EXIT_NO_DRIFT)
        entry["reasons"] = report["reasons"] + (["--force"] if options.force else [])
        if options.check_only:
            entry["decision"] = "drift_check_only"
            return _finish(log_path, entry, EXIT_REJECTED)

        index = market.panel.index
        W = int(current.manifest["window_length"])
        purge = W + 24
        if len(index) <= options.holdout_bars + purge + W:
            raise MarketRegimesError(f"{len(index)} bars are too few for a hold-out of {options.holdout_bars} bars")
        holdout_start = index[len(index) - options.holdout_bars]
        train_end = index[len(index) - options.holdout_bars - purge - 1]
        name = f"candidate-{stamp}"
        cfg = OmegaConf.create(_candidate_config(current, options.data, train_end, artifacts / "runs" / "monitor" / stamp, name))
        if train_fn is None:
            from market_regimes.training import run_training as train_fn
        result = train_fn(cfg)
        candidate = load_bundle(result.bundle_path)
        entry["candidate"] = str(candidate.path)
        entry["candidate_train_end"] = str(train_end)
        validation = validate_candidate(candidate, current, market, holdout_start, options)
        entry["validation"] = validation
        if not validation["passed"]:
            failed = [k for k, c in validation["checks"].items() if not c["passed"]]
            entry.update(decision="rejected", reasons=entry["reasons"] + [f"candidate failed: {', '.join(failed)}"])
            return _finish(log_path, entry, EXIT_REJECTED)
        point_latest(artifacts, candidate.path)
        entry["decision"] = "retrained"
        return _finish(log_path, entry, EXIT_RETRAINED)
    except Exception as err:  # anything at all: the current bundle stays live
        entry.update(decision="error", error=f"{type(err).__name__}: {err}",
                     traceback=traceback.format_exc(limit=5))
        entry.setdefault("reasons", []).append(f"error: {type(err).__name__}: {err}")
        return _finish(log_path, entry, EXIT_ERROR)


def _finish(log_path: Path, entry: dict, code: int) -> tuple[int, dict]:
    entry["exit_code"] = code
    _append_log(log_path, entry)
    return code, entry


def print_decision(code: int, entry: dict, log_path: Path) -> None:
    out = sys.stdout if code in (EXIT_NO_DRIFT, EXIT_RETRAINED) else sys.stderr
    print(f"decision: {entry.get('decision')} (exit {code}); bundle {entry.get('bundle')}", file=out)
    drift = entry.get("drift") or {}
    if drift:
        feats = drift.get("features", {})
        mmd = drift.get("latent_mmd", {})
        print(f"recent {drift.get('recent_start')} .. {drift.get('recent_end')}: "
              f"{feats.get('share_drifted', float('nan')):.0%} features PSI > {feats.get('threshold_psi')}, "
              f"latent MMD p = {mmd.get('p_value')}, "
              f"occupancy TV {drift['occupancy']['total_variation']:.2f}"
              + (f", reconstruction x{drift['reconstruction']['ratio_of_medians']:.2f}" if "reconstruction" in drift else ""),
              file=out)
    for r in entry.get("reasons", []):
        print(f"  - {r}", file=out)
    if "validation" in entry:
        for name, c in entry["validation"]["checks"].items():
            print(f"  candidate {name}: {c['value']:.4g} ({'pass' if c['passed'] else 'FAIL'})", file=out)
    if entry.get("decision") == "retrained":
        print(f"latest -> {entry['candidate']}", file=out)
    print(f"log: {log_path}", file=out)
