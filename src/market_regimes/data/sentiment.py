"""Daily sentiment (Crypto Fear & Greed Index) and its causal alignment onto a bar grid.

The index value for day D is published during day D, so a bar may only see it from
D+1 00:00 UTC on; joining it on day D would look ahead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from market_regimes.errors import ConfigError, DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("date", "value")


def load_fear_greed(path: str | Path) -> pd.Series:
    """Read the alternative.me daily CSV (``date,value,classification,unix``).

    Returns float values named ``fear_greed`` on a UTC-midnight DatetimeIndex named ``date``,
    sorted; exact duplicate days are dropped. Required columns: ``date`` (YYYY-MM-DD) and
    ``value`` (0-100); ``unix``, when present, must be the same day's midnight in seconds.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such file or directory: {p}; check the sentiment path")
    try:
        raw = pd.read_csv(p, dtype=str)
    except (ValueError, UnicodeDecodeError) as err:  # EmptyDataError / ParserError are ValueErrors
        raise DataError(f"{p}: cannot parse CSV ({err})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"{p}: missing column(s) {', '.join(missing)}; expected date,value,classification,unix"
        )
    if raw.empty:
        raise DataError(f"{p}: no rows")
    line = np.arange(len(raw)) + 2  # 1-based file line, after the header
    dates = pd.to_datetime(raw["date"], format="%Y-%m-%d", errors="coerce")
    values = pd.to_numeric(raw["value"], errors="coerce")
    for bad, col, what in (
        (dates.isna(), "date", "is not YYYY-MM-DD"),
        (values.isna(), "value", "is not a number"),
        (~values.between(0, 100) & values.notna(), "value", "is outside 0..100"),
    ):
        if bad.any():
            k = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{p}: line {line[k]}: {col} {raw[col].iloc[k]!r} {what}; fix that row")
    if "unix" in raw.columns:
        unix = pd.to_numeric(raw["unix"], errors="coerce")
        expected = (dates - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
        off = (unix != expected).to_numpy()
        if off.any():
            k = int(np.argmax(off))
            raise DataError(
                f"{p}: line {line[k]}: unix {raw['unix'].iloc[k]!r} is not midnight UTC of date "
                f"{raw['date'].iloc[k]}; fix that row"
            )
    series = pd.Series(
        values.to_numpy(dtype=np.float64),
        index=pd.DatetimeIndex(dates).tz_localize("UTC").as_unit("ns").rename("date"),
        name="fear_greed",
    ).sort_index(kind="stable")
    repeated = series.index.duplicated(keep="first")
    if repeated.any():
        dup = series[series.index.duplicated(keep=False)]
        conflicting = dup.groupby(level=0).nunique() > 1
        if conflicting.any():
            day = conflicting.idxmax()
            raise DataError(
                f"{p}: day {day:%Y-%m-%d} appears twice with different values; keep one of them"
            )
        series = series[~repeated]
    return series


def align_causal(daily: pd.Series, index: pd.DatetimeIndex, max_age: str = "3D") -> pd.Series:
    """Daily values on a UTC bar grid, each usable only once it was known.

    The value of day D becomes available at D+1 00:00 UTC; each bar gets the latest available
    value that is at most ``max_age`` old (counted from its availability), else NaN. NaN daily
    values are skipped, so an older value can stand in until it goes stale.
    Returns a float Series on ``index`` with ``daily``'s name.
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"align_causal needs a DatetimeIndex of bar times, got {type(index).__name__}")
    if index.tz is None:
        raise DataError("align_causal: the bar index is timezone-naive; expected UTC bar-open times")
    try:
        age_limit = pd.Timedelta(max_age)
    except ValueError:
        raise ConfigError(f"max_age={max_age!r} is not a duration, e.g. 3D or 36h") from None
    if age_limit < pd.Timedelta(0):
        raise ConfigError(f"max_age={max_age!r} must not be negative")
    days = pd.DatetimeIndex(daily.index)
    days = days.tz_localize("UTC") if days.tz is None else days.tz_convert("UTC")
    known = daily.notna().to_numpy()
    available = (days.normalize() + pd.Timedelta("1D"))[known]
    order = np.argsort(available.as_unit("ns").asi8, kind="stable")
    avail_ns = available.as_unit("ns").asi8[order]
    vals = daily.to_numpy(dtype=np.float64)[known][order]

    bars_ns = index.tz_convert("UTC").as_unit("ns").asi8
    k = np.searchsorted(avail_ns, bars_ns, side="right") - 1  # latest value available at each bar
    usable = k >= 0
    k = np.clip(k, 0, None)
    if avail_ns.size:
        usable &= (bars_ns - avail_ns[k]) <= age_limit.value
    else:
        usable[:] = False
    out = np.full(len(index), np.nan)
    out[usable] = vals[k[usable]]
    return pd.Series(out, index=index, name=daily.name)
