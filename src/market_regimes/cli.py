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
