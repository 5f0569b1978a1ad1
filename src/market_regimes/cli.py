"""Shared behaviour of the entry scripts: user mistakes exit non-zero with one line."""

from __future__ import annotations

import functools
import sys

from market_regimes.errors import MarketRegimesError


def user_errors_exit(fn):
    """Run ``fn``; a :class:`MarketRegimesError` prints ``error: <message>`` to stderr and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MarketRegimesError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def run_inference_cli(args) -> int:
    """``scripts/infer_latest.py``: load bundle and data, print the card(s); 0 ok, 2 user error, 3 stale+strict."""
    import json
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from market_regimes.bundle import load_bundle
        from market_regimes.inference import format_card, infer, load_bundle_market, scaled_windows

        bundle = load_bundle(args.artifacts, encoder_only=True)
        assets = bundle.manifest["symbols"] if args.all else [args.asset]
        if not args.all and args.asset not in bundle.manifest["symbols"]:
            raise MarketRegimesError(f"unknown asset {args.asset}; the bundle knows {', '.join(bundle.manifest['symbols'])}")
        market = load_bundle_market(bundle, args.data)
        windows = scaled_windows(bundle, market, args.at)
        cards = [infer(bundle, market, a, args.at, max_stale_bars=args.max_stale_bars, windows=windows) for a in assets]
    except MarketRegimesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot read {getattr(err, 'filename', '') or 'input'}: {err.strerror or err}", file=sys.stderr)
        return 2
    stale = [c for c in cards if c["stale"]]
    for c in stale:
        msg = f"{c['asset']}: latest bar {c['bar_time']} is {c['stale_bars']:.0f} bars old"
        if args.strict:
            print(f"error: stale data: {msg} (--max-stale-bars {args.max_stale_bars})", file=sys.stderr)
            return 3
        print(f"warning: stale data: {msg}", file=sys.stderr)
    if args.json:
        print(json.dumps(cards if args.all else cards[0], default=str))
    elif args.all:
        print(f"{'asset':<10} {'bar':<26} {'regime':<28} {'prob':>5} {'bars in':>7} {'P(up 1)':>8} {'P(up 24)':>8}")
        for c in cards:
            up = {h: (d["p"] if d["p"] is not None else float("nan")) for h, d in c["p_up"].items()}
            print(f"{c['asset']:<10} {c['bar_time']:<26} {str(c['regime']) + ' ' + c['regime_name']:<28} "
                  f"{c['probability']:>5.2f} {c['bars_in_regime']:>7} {up.get('1', float('nan')):>8.3f} "
                  f"{up.get('24', float('nan')):>8.3f}")
    else:
        print(format_card(cards[0]))
    return 0
