"""Download Binance public-data monthly kline files into a local cache, then read them.

Layout of the source (https://data.binance.vision) and of the cache alike::

    {base_url}/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY}-{MM}.zip
    {cache_dir}/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY}-{MM}.zip

A cached month is never fetched again. Months that do not exist before a month that does
(the symbol was not listed yet, or a hole at the source) leave an empty ``.missing`` marker, so a
rerun with the same range needs no network at all. Files are written to a temporary name and
renamed, so an interrupted download never leaves half a zip in the cache.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import pandas as pd

from market_regimes.data.files import read_files
from market_regimes.data.panel import interval_to_timedelta
from market_regimes.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

BINANCE_SPOT_MONTHLY = "https://data.binance.vision/data/spot/monthly/klines"


def download_klines(
    symbols: list[str],
    interval: str,
    start,
    end,
    cache_dir: str | Path,
    base_url: str | None = BINANCE_SPOT_MONTHLY,
    timeout_s: float = 10.0,
) -> list[Path]:
    """Make sure every monthly kline zip from ``start``'s month to ``end``'s month is cached.

    ``end=None`` means the last complete month before today (UTC); ``base_url=None`` means the
    Binance spot source. Returns the cached zips, symbol by symbol, oldest month first. Months
    the source does not have are skipped and logged; a symbol with no month at all, or an
    unreachable source, raises DataError.
    """
    interval_to_timedelta(interval)  # rejects unknown intervals with a ConfigError
    if not symbols:
        raise ConfigError("data.symbols is empty; name at least one symbol, e.g. [BTCUSDT]")
    if not cache_dir:
        raise ConfigError("data.cache_dir is required: the folder where downloaded klines are kept")
    months = _months(start, end)
    cache = Path(cache_dir)
    base = (base_url or BINANCE_SPOT_MONTHLY).rstrip("/")
    found: list[Path] = []
    for symbol in symbols:
        folder = cache / symbol / interval
        folder.mkdir(parents=True, exist_ok=True)
        have: list[Path] = []
        absent: list[Path] = []
        for month in months:
            name = f"{symbol}-{interval}-{month.year:04d}-{month.month:02d}.zip"
            target = folder / name
            if _cached(target):
                have.append(target)
            elif _marker(target).exists():
                continue
            elif _fetch(f"{base}/{symbol}/{interval}/{name}", target, base, timeout_s):
                logger.info("downloaded %s", target)
                have.append(target)
            else:
                absent.append(target)
        if not have:
            raise DataError(
                f"no {interval} kline files for {symbol} at {base} between {months[0]} and "
                f"{months[-1]}; check the symbol name (e.g. BTCUSDT), the interval and the dates"
            )
        newest = max(have)
        for target in absent:
            if target.name < newest.name:  # a later month exists, so this one never will
                _marker(target).touch()
                logger.info("%s: not at the source (before listing or a hole); skipped", target.name)
            else:
                logger.warning("%s: not at the source yet (or delisted); skipped", target.name)
        found.extend(have)
    return found


def load_binance(
    symbols: list[str],
    interval: str,
    start,
    end,
    cache_dir: str | Path,
    base_url: str | None = BINANCE_SPOT_MONTHLY,
    timeout_s: float = 10.0,
    **read_kwargs,
) -> pd.DataFrame:
    """Download (or reuse) the requested symbols' monthly files and read them as one table.

    Whole months are returned; cut to exact dates with ``to_panel(start=..., end=...)``.
    ``read_kwargs`` go to :func:`~market_regimes.data.files.read_files` (``naive_timezone``,
    ``on_bad_rows``); ``interval`` is checked against the data by default.
    """
    files = download_klines(symbols, interval, start, end, cache_dir, base_url, timeout_s)
    read_kwargs.setdefault("interval", interval)
    return read_files(files, origin=str(cache_dir), **read_kwargs)


def _months(start, end) -> pd.PeriodIndex:
    if start is None or start == "":
        raise ConfigError("data.start is required to download klines, e.g. data.start=2020-01-01")
    first = _month(start, "data.start")
    if end is None or end == "":
        last = pd.Timestamp.now(tz="UTC").tz_localize(None).to_period("M") - 1
    else:
        last = _month(end, "data.end")
    if first > last:
        raise ConfigError(f"data.start={start} is after data.end={end or last}")
    return pd.period_range(first, last, freq="M")


def _month(value, name: str) -> pd.Period:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{name}={value!r} is not a date; use YYYY-MM-DD") from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_period("M")


def _cached(target: Path) -> bool:
    return target.is_file() and target.stat().st_size > 0


def _marker(target: Path) -> Path:
    return target.with_name(target.name[: -len(".zip")] + ".missing")


def _fetch(url: str, target: Path, base: str, timeout_s: float) -> bool:
    """Download ``url`` to ``target`` atomically; False when the source has no such file."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise DataError(f"{url}: HTTP {err.code} {err.reason}; try again later or download it elsewhere") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, FileNotFoundError):  # file:// sources answer a missing file this way
            return False
        raise _offline(base, err.reason) from None
    except (TimeoutError, ConnectionError) as err:  # a timeout or reset while reading the body
        raise _offline(base, err) from None
    try:
        damaged = zipfile.ZipFile(io.BytesIO(body)).testzip()
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        damaged = str(err)
    if damaged is not None:
        raise DataError(f"{url}: the download is not a valid zip ({damaged}); try again")
    _write_atomic(target, body)
    return True


def _offline(base: str, reason) -> DataError:
    return DataError(
        f"cannot reach {base} (offline?): {reason}; download the files elsewhere and use "
        "data=files data.path=<folder with the .zip files>"
    )


def _write_atomic(target: Path, body: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
