"""Which regime is an asset in at its latest complete bar, and what has that meant?

    python scripts/infer_latest.py --asset BTCUSDT
    python scripts/infer_latest.py --asset ETHUSDT --at 2024-03-01T12:00 --json
    python scripts/infer_latest.py --all --data ../shared/data/real/binance_spot_1h_btc_eth_bnb_2017_2024.csv.gz
"""

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--asset", help="symbol, e.g. BTCUSDT")
    target.add_argument("--all", action="store_true", help="a table for every asset of the bundle")
    p.add_argument("--artifacts", default="artifacts", help="bundle directory, or artifacts dir with 'latest'")
    p.add_argument("--data", help="data to use instead of the bundle's recorded source (as data=files)")
    p.add_argument("--at", help="infer as of this bar time (UTC), using only data up to it")
    p.add_argument("--json", action="store_true", help="print one JSON object (keys documented in the README)")
    p.add_argument("--strict", action="store_true", help="stale data is an error instead of a warning")
    p.add_argument("--max-stale-bars", type=float, default=2.0, help="bars after which data counts as stale")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from market_regimes.cli import run_inference_cli

    return run_inference_cli(args)


if __name__ == "__main__":
    sys.exit(main())
