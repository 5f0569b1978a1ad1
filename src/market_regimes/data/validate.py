"""Validate a long OHLCV table into the canonical form every later stage relies on.

Canonical form: exactly the columns ``timestamp, symbol, open, high, low, close, volume``;
``timestamp`` is the bar open time as ``datetime64[ns, UTC]``; ``symbol`` is a plain string;
the five fields are float64; rows are sorted by (symbol, timestamp) on a fresh RangeIndex.

Rules, in the order they are applied ("repair" = fixed and logged, "error" = DataError):

- error:  a canonical column is missing, or the table has no rows.
- repair: extra columns (``source``, ``quote_asset_volume``, ...) are dropped.
- error:  a symbol is missing or empty.
- error:  a timestamp is missing or unparseable, the column holds epoch numbers instead of
  datetimes, or the values mix timezones.
- error:  timestamps are timezone-naive and ``naive_timezone`` is not given
  (the message suggests ``data.naive_timezone=UTC``).
- repair: timezone-naive timestamps are localized to ``naive_timezone`` when it is given.
- repair: timezone-aware timestamps in another zone are converted to UTC.
- repair: rows out of (symbol, timestamp) order are sorted.
- repair: exact duplicate rows (same symbol, timestamp and five values) keep their first copy.
- error:  conflicting duplicates (same symbol and timestamp, different values).
- error, or repair with ``on_bad_rows="drop"``: bad rows, i.e. a field that is non-numeric, NaN
  or infinite; open/high/low/close <= 0; volume < 0; high < low; open or close outside
  [low, high]. Range checks allow a relative tolerance of 1e-9. The error names the first bad
  row (in input order) and the count; "drop" removes them (they become gaps in the panel) and
  logs a warning with the count.
- error (only when ``interval`` is given), per symbol with at least two bars: the most common
  gap between consecutive bars differs from the interval ("looks like 4h bars"); a gap shorter
  than the interval or not a whole number of intervals ("mixed intervals"); a bar off the
  interval grid counted from 1970-01-01 00:00 UTC (what :func:`~market_regimes.data.panel.to_panel`
  requires).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from market_regimes.data.panel import CANONICAL_COLUMNS, FIELDS, interval_to_timedelta
from market_regimes.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ON_BAD_ROWS = ("error", "drop")
PRICES: tuple[str, ...] = ("open", "high", "low", "close")
REL_TOL = 1e-9

#: Maps a 0-based position in the input table to where that row lives ("line 7", "a.zip line 7").
Locate = Callable[[int], str]


def check_columns(columns: Iterable[str], origin: str) -> None:
    """Raise a DataError naming ``origin`` if a canonical column is absent."""
    have = set(columns)
    missing = [c for c in CANONICAL_COLUMNS if c not in have]
    if missing:
        raise DataError(
            f"{origin}: missing column(s) {', '.join(missing)}; "
            f"an OHLCV table needs {', '.join(CANONICAL_COLUMNS)}"
        )


def validate_ohlcv(
    df: pd.DataFrame,
    origin: str,
    *,
    interval: str | None = None,
    naive_timezone: str | None = None,
    on_bad_rows: str = "error",
    locate: Locate | None = None,
) -> pd.DataFrame:
    """Check and repair a long OHLCV table (rules in the module docstring).

    ``origin`` (a path or description) starts every message. ``locate`` turns an input row
    position into a place in the source (default ``row N``, 1-based) for messages.
    Returns the canonical table; the input is not modified.
    """
    if on_bad_rows not in ON_BAD_ROWS:
        raise ConfigError(f"data.on_bad_rows={on_bad_rows!r} is not one of {', '.join(ON_BAD_ROWS)}")
    step = interval_to_timedelta(interval) if interval is not None else None
    where: Locate = locate if locate is not None else (lambda i: f"row {i + 1}")
    check_columns(df.columns, origin)
    if len(df) == 0:
        raise DataError(f"{origin}: the table has no rows; check the file or the data.path")

    codes, names = _symbol_codes(df["symbol"], origin, where)
    ts = _utc_nanoseconds(df["timestamp"], origin, naive_timezone, where)
    values, non_numeric = {}, {}
    for f in FIELDS:
        values[f], non_numeric[f] = _as_float(df[f])

    # Sort by (symbol, time); `pos` keeps each row's input position for messages.
    pos = np.arange(len(df))
    if not _is_sorted(codes, ts):
        pos = np.lexsort((ts, codes))
        logger.info("%s: rows were not sorted by (symbol, timestamp); sorted them", origin)
        codes, ts = codes[pos], ts[pos]
        values = {f: v[pos] for f, v in values.items()}
        non_numeric = {f: m[pos] for f, m in non_numeric.items()}

    def row(i: int) -> str:
        """Symbol, time and source place of row ``i`` of the current (sorted, filtered) arrays."""
        return f"{names[codes[i]]} {_fmt_time(ts[i])} ({where(int(pos[i]))})"

    keep = _drop_exact_duplicates(codes, ts, values, origin, row)
    bad, describe = _bad_rows(values, non_numeric, df, pos)
    bad &= keep
    if bad.any():
        first = int(np.flatnonzero(bad)[np.argmin(pos[bad])])
        summary = f"{int(bad.sum())} bad row(s); first: {row(first)}: {describe(first)}"
        if on_bad_rows == "error":
            raise DataError(
                f"{origin}: {summary}; fix the data or set data.on_bad_rows=drop to drop them "
                "(they become gaps)"
            )
        logger.warning("%s: dropped %s (they become gaps)", origin, summary)
        keep &= ~bad
    if not keep.all():
        codes, ts, pos = codes[keep], ts[keep], pos[keep]
        values = {f: v[keep] for f, v in values.items()}
    if len(ts) == 0:
        raise DataError(f"{origin}: no valid rows left after dropping bad rows")
    if step is not None:
        _check_interval(codes, ts, names, step, interval, origin, row)

    return pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(ts.view("datetime64[ns]")).tz_localize("UTC"),
            "symbol": pd.Categorical.from_codes(codes, categories=names).astype("str"),
            **values,
        }
    )


def _symbol_codes(col: pd.Series, origin: str, where: Locate) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes ordered like the sorted symbol names, and those names (str)."""
    codes, uniques = pd.factorize(col, sort=False)
    if (codes < 0).any():
        i = int(np.argmax(codes < 0))
        raise DataError(f"{origin}: missing symbol at {where(i)}; fill or remove that row")
    names = np.asarray([str(u) for u in uniques], dtype=object)
    empty = np.flatnonzero([not n.strip() for n in names])
    if empty.size:
        i = int(np.argmax(codes == empty[0]))
        raise DataError(f"{origin}: empty symbol at {where(i)}; fill or remove that row")
    order = np.argsort(names, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[codes].astype(np.int64), names[order]


def _utc_nanoseconds(
    col: pd.Series, origin: str, naive_timezone: str | None, where: Locate
) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch, UTC."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        raise DataError(
            f"{origin}: column timestamp holds numbers, not datetimes; convert epoch values "
            "first (e.g. pd.to_datetime(x, unit='ms', utc=True)) or write ISO-8601 strings"
        )
    ts = col
    if not isinstance(ts.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(ts):
        try:
            ts = pd.to_datetime(ts, format="ISO8601", errors="coerce")
        except (ValueError, TypeError) as err:
            raise DataError(
                f"{origin}: cannot read column timestamp ({err}); write all timestamps in one "
                "timezone, preferably UTC ISO-8601 such as 2024-01-01T00:00:00Z"
            ) from None
    missing = ts.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise DataError(
            f"{origin}: missing or unparseable timestamp {col.iloc[i]!r} at {where(i)}; "
            "fix or remove that row"
        )
    if ts.dt.tz is None:
        if naive_timezone is None:
            raise DataError(
                f"{origin}: timestamps are timezone-naive; set data.naive_timezone=UTC if they "
                "are UTC bar-open times (or name the zone they were recorded in)"
            )
        ts = _localize(ts, naive_timezone, origin)
    utc = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("ns")
    return utc.to_numpy().view(np.int64)


def _localize(ts: pd.Series, zone: str, origin: str) -> pd.Series:
    try:
        pd.Timestamp("2000-01-01").tz_localize(zone)
    except Exception:  # zoneinfo and pytz raise different types for an unknown zone
        raise ConfigError(f"data.naive_timezone={zone!r} is not a known timezone (e.g. UTC)") from None
    try:
        return ts.dt.tz_localize(zone, ambiguous="raise", nonexistent="raise")
    except Exception as err:  # ambiguous / nonexistent local times around DST changes
        raise DataError(
            f"{origin}: cannot localize naive timestamps to {zone} ({err}); "
            "store the timestamps in UTC instead"
        ) from None


def _as_float(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64, and a mask of entries that were present but not numbers."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.zeros(len(values), dtype=bool)
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, np.isnan(values) & col.notna().to_numpy()


def _is_sorted(codes: np.ndarray, ts: np.ndarray) -> bool:
    dc = np.diff(codes)
    return bool(np.all((dc > 0) | ((dc == 0) & (np.diff(ts) >= 0))))


def _drop_exact_duplicates(
    codes: np.ndarray,
    ts: np.ndarray,
    values: dict[str, np.ndarray],
    origin: str,
    row: Callable[[int], str],
) -> np.ndarray:
    """Keep-mask dropping exact repeats; raise on a (symbol, timestamp) with different values."""
    keep = np.ones(len(ts), dtype=bool)
    repeat = np.flatnonzero((codes[1:] == codes[:-1]) & (ts[1:] == ts[:-1])) + 1
    if repeat.size == 0:
        return keep
    same = np.ones(repeat.size, dtype=bool)
    for v in values.values():
        a, b = v[repeat], v[repeat - 1]
        same &= (a == b) | (np.isnan(a) & np.isnan(b))
    if not same.all():
        i = int(repeat[np.argmin(same)])
        raise DataError(
            f"{origin}: conflicting duplicate bars for {row(i - 1)} and {row(i)}: same symbol "
            "and timestamp, different values; remove one of them (overlapping files or rows)"
        )
    keep[repeat] = False
    logger.info("%s: dropped %d exact duplicate row(s)", origin, repeat.size)
    return keep


def _bad_rows(
    values: dict[str, np.ndarray], non_numeric: dict[str, np.ndarray], df: pd.DataFrame, pos: np.ndarray
) -> tuple[np.ndarray, Callable[[int], str]]:
    """Mask of bad rows and a function describing what is wrong with one of them."""
    o, h, lo, c, vol = (values[f] for f in FIELDS)
    checks: list[tuple[np.ndarray, Callable[[int], str]]] = []
    for f in FIELDS:
        checks.append((non_numeric[f], lambda i, f=f: f"{f} {df[f].iloc[pos[i]]!r} is not a number"))
        missing = ~np.isfinite(values[f]) & ~non_numeric[f]
        checks.append((missing, lambda i, f=f: f"{f} is {values[f][i]}"))
    for f in PRICES:
        checks.append((values[f] <= 0, lambda i, f=f: f"{f} {values[f][i]:g} <= 0"))
    checks.append((vol < 0, lambda i: f"volume {vol[i]:g} < 0"))
    checks.append((h < lo - REL_TOL * np.abs(lo), lambda i: f"high {h[i]:g} < low {lo[i]:g}"))
    for name, v in (("open", o), ("close", c)):
        outside = (v > h + REL_TOL * np.abs(h)) | (v < lo - REL_TOL * np.abs(lo))
        checks.append(
            (outside, lambda i, name=name, v=v: f"{name} {v[i]:g} outside [low {lo[i]:g}, high {h[i]:g}]")
        )
    bad = np.zeros(len(o), dtype=bool)
    for mask, _ in checks:
        bad |= mask

    def describe(i: int) -> str:
        return "; ".join(text(i) for mask, text in checks if mask[i])

    return bad, describe


def _check_interval(
    codes: np.ndarray,
    ts: np.ndarray,
    names: np.ndarray,
    step: pd.Timedelta,
    interval: str,
    origin: str,
    row: Callable[[int], str],
) -> None:
    """Raise unless each symbol's bars are spaced by whole multiples of ``step`` on its grid."""
    step_ns = int(step.value)
    nxt = np.flatnonzero(codes[1:] == codes[:-1]) + 1  # rows with a previous bar of the same symbol
    gaps = ts[nxt] - ts[nxt - 1]
    if nxt.size:
        counts = pd.Series(gaps).groupby([codes[nxt], gaps]).size()
        modes = counts.groupby(level=0).idxmax()  # ties -> the shortest gap
        for code, gap in modes:
            if gap != step_ns:
                shown = _fmt_gap(gap)
                raise DataError(
                    f"{names[code]} in {origin} looks like {shown} bars but data.interval={interval}; "
                    f"set data.interval={shown} or point data.path at {interval} files"
                )
        odd = (gaps < step_ns) | (gaps % step_ns != 0)
        if odd.any():
            k = int(np.argmax(odd))
            i = int(nxt[k])
            raise DataError(
                f"{origin}: mixed intervals: bar {row(i)} opens {_fmt_gap(int(gaps[k]))} after the "
                f"previous {names[codes[i]]} bar, which is not a multiple of data.interval={interval}; "
                "keep one bar interval per dataset"
            )
    off_grid = ts % step_ns != 0
    if off_grid.any():
        i = int(np.argmax(off_grid))
        raise DataError(
            f"{origin}: bar {row(i)} is not on the {interval} grid (bars must open at multiples "
            f"of {interval} from midnight UTC); check data.interval and the timestamps' timezone"
        )


def _fmt_time(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%d %H:%M:%S%z").replace("+0000", "Z")


def _fmt_gap(ns: int) -> str:
    """Gap as a Binance-style interval (``4h``, ``1d``, ``15m``) when it is whole, else pandas text."""
    gap = pd.Timedelta(int(ns), unit="ns")
    for unit, size in (("d", "1D"), ("h", "1h"), ("m", "1min")):
        if gap >= pd.Timedelta(size) and gap % pd.Timedelta(size) == pd.Timedelta(0):
            return f"{gap // pd.Timedelta(size)}{unit}"
    return str(gap)
