"""Compare the latest data with the current bundle; retrain, validate and swap when it drifted.

    python scripts/monitor_and_retrain.py
    python scripts/monitor_and_retrain.py --data ../shared/data/real/binance_spot_1h_btc_eth_bnb_2017_2024.csv.gz
    python scripts/monitor_and_retrain.py --force          # retrain even without drift

Exit codes: 0 no drift, 3 retrained (new bundle live), 4 drift but candidate rejected (old bundle
kept), 1 error (old bundle kept), 2 usage error.
"""

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", default="artifacts", help="artifacts directory holding 'latest'")
    p.add_argument("--data", help="data to monitor instead of the bundle's recorded source (as data=files)")
    p.add_argument("--recent-bars", type=int, default=720, help="bars compared with the training reference")
    p.add_argument("--holdout-bars", type=int, default=720, help="bars a retrained candidate is validated on")
    p.add_argument("--force", action="store_true", help="retrain even when no drift test trips")
    p.add_argument("--check-only", action="store_true", help="report drift (exit 4 when found), never retrain")
    p.add_argument("--min-run-length", type=float, default=12.0, help="candidate's minimum mean regime run (bars)")
    p.add_argument("--max-recon-ratio", type=float, default=1.1,
                   help="candidate's hold-out reconstruction error relative to the current model, at most")
    p.add_argument("--psi", type=float, default=0.25, help="PSI above which a feature counts as drifted")
    p.add_argument("--psi-share", type=float, default=0.25, help="share of drifted features that means drift")
    p.add_argument("--mmd-alpha", type=float, default=0.01, help="significance level of the latent MMD test")
    p.add_argument("--recon-ratio", type=float, default=1.5, help="reconstruction-error ratio that means drift")
    p.add_argument("--occupancy-tv", type=float, default=0.3, help="occupancy total variation that means drift")
    p.add_argument("--log", help="JSON-lines log (default <artifacts>/monitor_log.jsonl)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from market_regimes.drift import DriftThresholds
    from market_regimes.monitor import MonitorOptions, print_decision, run_monitor

    options = MonitorOptions(
        artifacts=args.artifacts, data=args.data, recent_bars=args.recent_bars, holdout_bars=args.holdout_bars,
        force=args.force, check_only=args.check_only, min_run_length=args.min_run_length,
        max_recon_ratio=args.max_recon_ratio, log_path=args.log,
        thresholds=DriftThresholds(psi=args.psi, psi_share=args.psi_share, mmd_alpha=args.mmd_alpha,
                                   recon_ratio=args.recon_ratio, occupancy_tv=args.occupancy_tv),
    )
    code, entry = run_monitor(options)
    print_decision(code, entry, Path(args.log) if args.log else Path(args.artifacts) / "monitor_log.jsonl")
    return code


if __name__ == "__main__":
    sys.exit(main())
