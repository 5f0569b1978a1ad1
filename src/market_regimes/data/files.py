"""Read OHLCV files into the validated canonical long table.

Two layouts are understood, told apart by the header:

- **long**: a ``.parquet``, ``.csv`` or ``.csv.gz`` with (at least) the canonical columns
  ``timestamp, symbol, open, high, low, close, volume``; a CSV counts as long when its header
  names ``timestamp`` or ``symbol``.
- **Binance kline**: the public-data files ``SYMBOL-INTERVAL-....zip`` (one CSV inside),
  ``.csv`` or ``.csv.gz``, 12 columns (open_time, open, high, low, close, volume, close_time,
  quote_asset_volume, number_of_trades, taker_buy_base_volume, taker_buy_quote_volume, ignore),
  with or without a header row. The symbol is the file name before the first ``-``; open_time is
  epoch seconds, milliseconds or microseconds (spot files from 2025 on), told per file from its
  magnitude. Only the OHLCV columns are kept.

A folder is read recursively (every ``*.zip``, ``*.csv``, ``*.csv.gz``, ``*.parquet``), all files
concatenated and validated once with :func:`~market_regimes.data.validate.validate_ohlcv`, so
duplicates across files are caught too; a row's messages name its file and line.

Errors (DataError naming the file, and the line where there is one): no such path; a folder
without data files; an empty or header-only file; a truncated or corrupt zip/gzip/parquet; a zip
holding more than one file; a kline row without exactly 12 fields; an open_time that is not a
positive number or whose unit differs from the rest of its file; a kline file name without
``SYMBOL-``; a long file missing a canonical column. Everything else (repairs included) is
:func:`~market_regimes.data.validate.validate_ohlcv`'s rules.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from market_regimes.data.panel import CANONICAL_COLUMNS
from market_regimes.data.validate import Locate, check_columns, validate_ohlcv
from market_regimes.errors import DataError

KLINE_COLUMNS: tuple[str, ...] = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_asset_volume",
    "number_of_trades", "taker_buy_base_volume", "taker_buy_quote_volume", "ignore",
)
SUFFIXES: tuple[str, ...] = (".zip", ".csv", ".csv.gz", ".parquet")
# open_time magnitude -> (unit, nanoseconds per unit); checked from the largest threshold down.
_EPOCH_UNITS = ((1e14, "us", 1_000), (1e11, "ms", 1_000_000), (0.0, "s", 1_000_000_000))


def read_path(
    path: str | Path,
    *,
    interval: str | None = None,
    naive_timezone: str | None = None,
    on_bad_rows: str = "error",
) -> pd.DataFrame:
    """Read a file or a folder of files and return the validated canonical long table."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"no such file or directory: {root}; check data.path")
    if root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.is_file() and is_data_file(f))
        if not files:
            raise DataError(
                f"{root}: no kline files (*.zip, *.csv, *.csv.gz, *.parquet) in this folder; "
                "point data.path at the folder holding e.g. BTCUSDT-1h-2024-01.zip"
            )
    elif is_data_file(root):
        files = [root]
    else:
        raise DataError(f"{root}: unsupported file type; use {', '.join(SUFFIXES)} or a folder of them")
    return read_files(
        files, origin=str(root), interval=interval, naive_timezone=naive_timezone, on_bad_rows=on_bad_rows
    )


def read_files(
    files: Sequence[str | Path],
    *,
    origin: str | None = None,
    interval: str | None = None,
    naive_timezone: str | None = None,
    on_bad_rows: str = "error",
) -> pd.DataFrame:
    """Read several files (any mix of layouts), concatenate and validate them as one table.

    ``origin`` names the whole set in messages (default: the single file, or the first file's
    folder); row messages also name the row's file and line.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise DataError(f"{origin or 'read_files'}: no files to read")
    parsed = [_read_file(p) for p in paths]
    frames = [frame for frame, _ in parsed]
    if len(paths) == 1:
        where = parsed[0][1]
        origin = origin or str(paths[0])
    else:
        sizes = np.array([len(f) for f in frames])
        file_of = np.repeat(np.arange(len(paths)), sizes)
        row_in_file = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        locators = [loc for _, loc in parsed]

        def where(i: int) -> str:
            k = file_of[i]
            return f"{paths[k].name} {locators[k](int(row_in_file[i]))}"

        origin = origin or str(paths[0].parent)
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return validate_ohlcv(
        table, origin, interval=interval, naive_timezone=naive_timezone, on_bad_rows=on_bad_rows, locate=where
    )


def is_data_file(path: Path) -> bool:
    """True for the file types :func:`read_path` reads (hidden and partial files excluded)."""
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(SUFFIXES)


def kline_symbol(path: Path) -> str:
    """Symbol of a Binance kline file: its name before the first ``-`` (``BTCUSDT-1h-2024-01.zip``)."""
    symbol = path.name.split("-", 1)[0]
    if "-" not in path.name or not symbol:
        raise DataError(
            f"{path}: cannot tell the symbol from the file name; name kline files "
            "SYMBOL-INTERVAL-..., e.g. BTCUSDT-1h-2024-01.zip"
        )
    return symbol


def _read_file(path: Path) -> tuple[pd.DataFrame, Locate]:
    """One file as a raw long frame (canonical columns, not yet validated) and its row locator."""
    if path.name.lower().endswith(".parquet"):
        return _read_parquet(path), lambda i: f"row {i + 1}"
    data = _file_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        data = data[3:]
    lines, commas = _line_table(data)
    if lines.size == 0:
        raise DataError(f"{path}: empty file; delete it (or download it again)")
    first = data.lstrip().split(b"\n", 1)[0].decode("utf-8", "replace")
    header = [field.strip().strip('"').lower() for field in first.split(",")]
    if "timestamp" in header or "symbol" in header:
        # Rows map to the non-blank lines after the header (no quoted newlines in OHLCV tables).
        return _parse_long_csv(data, header, path), lambda i: (
            f"line {lines[i + 1]}" if i + 1 < lines.size else f"row {i + 1}"
        )
    has_header = not _is_number(header[0])
    frame, rows = _parse_kline(data, has_header, lines, commas, path)
    return frame, lambda i: f"line {rows[i]}"


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq  # only needed for parquet input

    # pyarrow raises ArrowInvalid, OSError, ... for truncated or foreign files.
    try:
        names = pq.read_schema(path).names
    except Exception as err:
        raise _corrupt_parquet(path, err) from None
    check_columns(names, str(path))
    try:
        return pd.read_parquet(path, columns=list(CANONICAL_COLUMNS))
    except Exception as err:
        raise _corrupt_parquet(path, err) from None


def _corrupt_parquet(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: unreadable or corrupt parquet ({err}); replace the file")


def _file_bytes(path: Path) -> bytes:
    """Raw CSV bytes of a ``.csv``, ``.csv.gz`` or single-member ``.zip``."""
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise DataError(f"{path}: expected one CSV inside the zip, found {len(members)} files")
                return archive.read(members[0])
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupt archive ({err}); delete it and download it again") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err})") from None


def _line_table(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """1-based numbers of the non-blank lines, and how many commas each holds."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ends = np.flatnonzero(raw == ord("\n"))
    if raw[-1] != ord("\n"):
        ends = np.append(ends, raw.size)
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (raw[np.minimum(starts, raw.size - 1)] == ord("\r")))
    comma_at = np.flatnonzero(raw == ord(","))
    commas = np.searchsorted(comma_at, ends) - np.searchsorted(comma_at, starts)
    return np.flatnonzero(~blank) + 1, commas[~blank]


def _parse_long_csv(data: bytes, header: list[str], path: Path) -> pd.DataFrame:
    check_columns(header, str(path))
    try:
        return pd.read_csv(
            io.BytesIO(data), usecols=list(CANONICAL_COLUMNS), dtype={"timestamp": str, "symbol": str}
        )
    except (ValueError, UnicodeDecodeError) as err:  # pandas ParserError is a ValueError
        raise DataError(f"{path}: cannot parse CSV ({err}); fix the file") from None


def _parse_kline(
    data: bytes, has_header: bool, lines: np.ndarray, commas: np.ndarray, path: Path
) -> tuple[pd.DataFrame, np.ndarray]:
    """A Binance kline CSV as a raw long frame, and the file line of each of its rows."""
    symbol = kline_symbol(path)
    wrong = np.flatnonzero(commas != len(KLINE_COLUMNS) - 1)
    if wrong.size:
        k = int(wrong[0])
        raise DataError(
            f"{path}: line {lines[k]} has {commas[k] + 1} fields, expected {len(KLINE_COLUMNS)} "
            "(Binance kline layout); the file is truncated or not a kline file"
        )
    rows = lines[1:] if has_header else lines
    if rows.size == 0:
        raise DataError(f"{path}: header only, no bars; delete the file")
    try:
        raw = pd.read_csv(
            io.BytesIO(data), header=0 if has_header else None, names=list(KLINE_COLUMNS), usecols=range(6)
        )
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot parse kline CSV ({err}); delete it and download it again") from None
    stamps = _epoch_to_datetime(raw["open_time"], path, rows)
    frame = raw.drop(columns="open_time")
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "timestamp", stamps)
    return frame, rows


def _epoch_to_datetime(col: pd.Series, path: Path, rows: np.ndarray) -> pd.Series:
    """open_time (s, ms or µs, one unit per file) as UTC datetimes."""
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{path}: line {rows[k]}: open_time {col.iloc[k]!r} is not a positive epoch number")
    # The unit of the largest value must hold for every row: one unit per file.
    low, unit, nanos = next(u for u in _EPOCH_UNITS if values.max() >= u[0])
    below = values < low
    if below.any():
        k = int(np.argmax(below))
        raise DataError(
            f"{path}: line {rows[k]}: open_time {col.iloc[k]!r} is in a different unit than the "
            f"rest of the file ({unit}); one unit per file"
        )
    integral = col.to_numpy(dtype=np.int64) if pd.api.types.is_integer_dtype(col) else values.astype(np.int64)
    return pd.Series(pd.to_datetime(integral * nanos, unit="ns", utc=True))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
