"""Reading and validating OHLCV data: files, Binance downloads, sentiment alignment."""

from __future__ import annotations

import functools
import gzip
import http.server
import logging
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import real_file

from market_regimes.data.binance import download_klines, load_binance
from market_regimes.data.files import read_path
from market_regimes.data.panel import CANONICAL_COLUMNS, to_panel
from market_regimes.data.sentiment import align_causal, load_fear_greed
from market_regimes.data.validate import validate_ohlcv
from market_regimes.errors import ConfigError, DataError

KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


# ---------------------------------------------------------------- helpers


def bars(symbol: str = "BTCUSDT", n: int = 6, start: str = "2024-01-01", freq: str = "1h") -> pd.DataFrame:
    """A valid canonical long table of ``n`` bars."""
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    base = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "symbol": symbol,
            "open": base,
            "high": base + 2.0,
            "low": base - 1.0,
            "close": base + 1.0,
            "volume": 10.0 + np.arange(n),
        }
    )


def kline_text(df: pd.DataFrame, unit: str = "ms", header: bool = False) -> str:
    """Binance kline CSV (12 fields) for one symbol's bars."""
    scale = {"ms": 1_000_000, "us": 1_000}[unit]
    t = df["timestamp"].dt.as_unit("ns").astype("int64").to_numpy() // scale
    step = 3_600_000 * (1_000_000 // scale)
    lines = [KLINE_HEADER] if header else []
    for i in range(len(df)):
        r = df.iloc[i]
        lines.append(
            f"{t[i]},{r.open},{r.high},{r.low},{r.close},{r.volume},{t[i] + step - 1},"
            f"{r.close * r.volume},42,{r.volume / 2},{r.close * r.volume / 2},0"
        )
    return "\n".join(lines) + "\n"


def write_kline(path: Path, text: str) -> Path:
    """Write kline CSV text as .zip (one member), .csv.gz or .csv according to the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.name[: -len(".zip")] + ".csv", text)
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def assert_canonical(out: pd.DataFrame) -> None:
    assert list(out.columns) == list(CANONICAL_COLUMNS)
    assert str(out["timestamp"].dt.tz) == "UTC"
    assert not isinstance(out["symbol"].dtype, pd.CategoricalDtype)
    assert all(out[f].dtype == np.float64 for f in ("open", "high", "low", "close", "volume"))
    assert isinstance(out.index, pd.RangeIndex) and out.index[0] == 0
    assert out.equals(out.sort_values(["symbol", "timestamp"]).reset_index(drop=True))


def same_bars(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, check_index_type=False
    )


# ---------------------------------------------------------------- validate_ohlcv


def test_output_is_canonical_and_extra_columns_dropped():
    df = pd.concat([bars("ETHUSDT"), bars("BTCUSDT")], ignore_index=True)
    df["source"] = "x"
    df["symbol"] = df["symbol"].astype("category")
    df["timestamp"] = df["timestamp"].dt.as_unit("ms")
    out = validate_ohlcv(df, "t.parquet", interval="1h")
    assert_canonical(out)
    assert out["symbol"].tolist() == ["BTCUSDT"] * 6 + ["ETHUSDT"] * 6
    assert out["symbol"].iloc[0] == "BTCUSDT" and isinstance(out["symbol"].iloc[0], str)


def test_missing_column_and_empty_table():
    with pytest.raises(DataError, match=r"t.csv: missing column\(s\) symbol, volume;"):
        validate_ohlcv(bars().drop(columns=["volume", "symbol"]), "t.csv")
    with pytest.raises(DataError, match="t.csv: the table has no rows"):
        validate_ohlcv(bars().iloc[:0], "t.csv")


def test_naive_timestamps_error_or_localize():
    df = bars()
    df["timestamp"] = df["timestamp"].dt.tz_localize(None)
    with pytest.raises(DataError, match=r"t.csv: timestamps are timezone-naive; set data.naive_timezone=UTC"):
        validate_ohlcv(df, "t.csv")
    out = validate_ohlcv(df, "t.csv", naive_timezone="UTC")
    same_bars(out, bars())
    berlin = validate_ohlcv(df, "t.csv", naive_timezone="Europe/Berlin")
    assert berlin["timestamp"].iloc[0] == pd.Timestamp("2023-12-31 23:00", tz="UTC")
    with pytest.raises(ConfigError, match="naive_timezone='Mars/Base' is not a known timezone"):
        validate_ohlcv(df, "t.csv", naive_timezone="Mars/Base")


def test_non_utc_timestamps_are_converted():
    df = bars()
    df["timestamp"] = df["timestamp"].dt.tz_convert("Asia/Tokyo")
    out = validate_ohlcv(df, "t", interval="1h")
    assert str(out["timestamp"].dt.tz) == "UTC"
    same_bars(out, bars())


def test_iso_strings_with_z_and_bad_timestamps():
    df = bars()
    df["timestamp"] = df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    same_bars(validate_ohlcv(df, "t"), bars())
    df.loc[2, "timestamp"] = "yesterday"
    with pytest.raises(DataError, match=r"t: missing or unparseable timestamp 'yesterday' at row 3"):
        validate_ohlcv(df, "t")
    df.loc[2, "timestamp"] = "2024-01-01T02:00:00"  # naive among aware
    with pytest.raises(DataError, match="t: cannot read column timestamp"):
        validate_ohlcv(df, "t")
    epoch = bars().assign(timestamp=np.arange(6) * 3_600_000)
    with pytest.raises(DataError, match="column timestamp holds numbers"):
        validate_ohlcv(epoch, "t")


def test_missing_symbol():
    df = bars()
    df.loc[3, "symbol"] = None
    with pytest.raises(DataError, match="t: missing symbol at row 4"):
        validate_ohlcv(df, "t")


def test_unsorted_rows_are_sorted():
    df = pd.concat([bars("ETHUSDT"), bars("BTCUSDT")], ignore_index=True)
    shuffled = df.sample(frac=1.0, random_state=0)
    out = validate_ohlcv(shuffled, "t", interval="1h")
    assert_canonical(out)
    same_bars(out, validate_ohlcv(df, "t"))


def test_exact_duplicates_dropped_conflicting_duplicates_raise():
    df = bars()
    doubled = pd.concat([df, df.iloc[[2, 4]]], ignore_index=True)
    same_bars(validate_ohlcv(doubled, "t", interval="1h"), df)
    conflict = pd.concat([df, df.iloc[[2]].assign(close=101.5)], ignore_index=True)
    with pytest.raises(
        DataError,
        match=r"t: conflicting duplicate bars for BTCUSDT 2024-01-01 02:00:00Z \(row 3\) and "
        r"BTCUSDT 2024-01-01 02:00:00Z \(row 7\)",
    ):
        validate_ohlcv(conflict, "t")


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("close", np.nan, "close is nan"),
        ("high", np.inf, "high is inf"),
        ("open", 0.0, "open 0 <= 0"),
        ("low", -1.0, "low -1 <= 0"),
        ("high", 90.0, "high 90 < low 101"),
        ("close", 104.5, r"close 104.5 outside \[low 101, high 104\]"),
        ("open", 100.5, r"open 100.5 outside \[low 101, high 104\]"),
        ("volume", -3.0, "volume -3 < 0"),
        ("close", "n/a", "close 'n/a' is not a number"),
    ],
)
def test_bad_rows_raise_naming_the_first_row(column, value, reason):
    df = bars()
    if isinstance(value, str):
        df[column] = df[column].astype(object)
    df.loc[2, column] = value
    with pytest.raises(DataError, match=rf"t: 1 bad row\(s\); first: BTCUSDT 2024-01-01 02:00:00Z \(row 3\): {reason}"):
        validate_ohlcv(df, "t")


def test_bad_rows_count_and_first_in_input_order():
    df = bars()
    df.loc[4, "volume"] = -1.0
    df.loc[1, "high"] = np.nan
    with pytest.raises(DataError, match=r"2 bad row\(s\); first: BTCUSDT 2024-01-01 01:00:00Z \(row 2\): high is nan;.*on_bad_rows=drop"):
        validate_ohlcv(df, "t")


def test_range_checks_have_a_relative_tolerance():
    df = bars()
    df.loc[2, "close"] = df.loc[2, "high"] * (1 + 1e-12)
    df.loc[3, "open"] = df.loc[3, "low"] * (1 - 1e-12)
    assert len(validate_ohlcv(df, "t")) == 6
    df.loc[2, "close"] = df.loc[2, "high"] * (1 + 1e-7)
    with pytest.raises(DataError, match="close .* outside"):
        validate_ohlcv(df, "t")


def test_on_bad_rows_drop_leaves_gaps(caplog):
    df = bars(n=8)
    df.loc[3, "close"] = np.nan
    df.loc[5, "low"] = 1000.0
    with caplog.at_level(logging.WARNING, logger="market_regimes.data.validate"):
        out = validate_ohlcv(df, "t", interval="1h", on_bad_rows="drop")
    assert len(out) == 6
    assert "t: dropped 2 bad row(s)" in caplog.text
    panel = to_panel(out, "1h")
    assert len(panel.index) == 8
    assert panel.close["BTCUSDT"].isna().tolist() == [False, False, False, True, False, True, False, False]


def test_on_bad_rows_drop_everything_and_invalid_option():
    df = bars(n=2).assign(volume=-1.0)
    with pytest.raises(DataError, match="t: no valid rows left"):
        validate_ohlcv(df, "t", on_bad_rows="drop")
    with pytest.raises(ConfigError, match="data.on_bad_rows='skip' is not one of error, drop"):
        validate_ohlcv(bars(), "t", on_bad_rows="skip")


def test_wrong_interval_and_mixed_intervals():
    four = bars(n=10, freq="4h")
    with pytest.raises(DataError, match="^BTCUSDT in t looks like 4h bars but data.interval=1h; set data.interval=4h"):
        validate_ohlcv(four, "t", interval="1h")
    assert len(validate_ohlcv(four, "t", interval="4h")) == 10
    mixed = pd.concat([bars(n=10), bars(n=1, start="2024-01-01 09:30")], ignore_index=True)
    with pytest.raises(
        DataError,
        match=r"t: mixed intervals: bar BTCUSDT 2024-01-01 09:30:00Z \(row 11\) opens 30m after the previous",
    ):
        validate_ohlcv(mixed, "t", interval="1h")
    shifted = bars(n=5, start="2024-01-01 00:30")
    with pytest.raises(DataError, match="is not on the 1h grid"):
        validate_ohlcv(shifted, "t", interval="1h")
    with pytest.raises(ConfigError, match="unsupported data.interval='7h'"):
        validate_ohlcv(bars(), "t", interval="7h")


def test_single_bar_symbol_and_gaps_pass_the_interval_check():
    gappy = bars(n=10).drop(index=[3, 4, 7])
    df = pd.concat([gappy, bars("ETHUSDT", n=1, start="2024-01-01 05:00")], ignore_index=True)
    out = validate_ohlcv(df, "t", interval="1h")
    assert out["symbol"].value_counts().to_dict() == {"BTCUSDT": 7, "ETHUSDT": 1}


# ---------------------------------------------------------------- to_panel


def pivot_panel(long: pd.DataFrame, interval: str, symbols=None, start=None, end=None) -> dict:
    """The pandas definition of ``to_panel``: pivot on (timestamp, symbol), reindex onto the
    regular grid of the kept bars and the requested columns."""
    from market_regimes.data.panel import FIELDS, inclusive_end, interval_to_timedelta, to_utc

    long = long.assign(timestamp=long["timestamp"].dt.tz_convert("UTC"), symbol=long["symbol"].astype(str))
    cols = list(symbols) if symbols else sorted(long["symbol"].unique())
    keep = long["symbol"].isin(cols)
    if start is not None:
        keep &= long["timestamp"] >= to_utc(start)
    if end is not None:
        keep &= long["timestamp"] <= inclusive_end(end)
    long = long[keep]
    grid = pd.date_range(long["timestamp"].min(), long["timestamp"].max(), freq=interval_to_timedelta(interval), tz="UTC")
    grid.name = "timestamp"
    wide = long.pivot(index="timestamp", columns="symbol", values=list(FIELDS))
    out = {}
    for f in FIELDS:
        frame = wide[f].reindex(index=grid, columns=cols).astype("float64")
        frame.columns = pd.Index(cols, name="symbol")
        out[f] = frame
    return out


def panel_cases():
    rng = np.random.default_rng(0)
    btc = bars(n=50).drop(index=[3, 4, 17])
    eth = bars("ETHUSDT", n=30, start="2024-01-01 12:00")  # listed later
    bnb = bars("BNBUSDT", n=45).drop(index=range(20, 30))
    bnb.loc[bnb.index[2], "close"] = np.nan  # a present bar with a missing value
    long = pd.concat([btc, eth, bnb], ignore_index=True)
    shuffled = long.iloc[rng.permutation(len(long))].reset_index(drop=True)
    berlin = long.assign(timestamp=long["timestamp"].dt.tz_convert("Europe/Berlin"))
    ints = long.assign(volume=np.arange(len(long)), symbol=long["symbol"].astype("category"))
    return [
        (long, {}),
        (shuffled, {}),
        (berlin, {}),
        (ints, {}),
        (long, {"symbols": ["ETHUSDT", "BTCUSDT"]}),
        (shuffled, {"symbols": ["BNBUSDT"], "start": "2024-01-01 05:00", "end": "2024-01-02 00:00"}),
        (long, {"start": "2024-01-01 13:00"}),
        (long, {"end": "2024-01-01"}),
        (bars(n=3, freq="1D"), {"interval": "1d"}),
    ]


@pytest.mark.parametrize("case", range(9))
def test_to_panel_equals_the_pandas_pivot(case):
    long, opts = panel_cases()[case]
    opts = dict(opts)
    interval = opts.pop("interval", "1h")
    panel = to_panel(long, interval, **opts)
    ref = pivot_panel(long, interval, **opts)
    for f, frame in ref.items():
        pd.testing.assert_frame_equal(panel.field(f), frame, check_exact=True)
        pd.testing.assert_index_equal(panel.field(f).index, frame.index, exact=True)
    assert panel.interval == interval


def test_to_panel_rejects_what_it_cannot_place():
    long = pd.concat([bars(n=10), bars("ETHUSDT", n=10)], ignore_index=True)
    with pytest.raises(DataError, match="duplicated"):
        to_panel(pd.concat([long, long.iloc[[4]]], ignore_index=True))
    to_panel(pd.concat([long, long.iloc[[4]]], ignore_index=True), symbols=["ETHUSDT"])  # duplicate not selected
    with pytest.raises(DataError, match=r"unknown symbol\(s\) \['XRPUSDT'\]; the data has \['BTCUSDT', 'ETHUSDT'\]"):
        to_panel(long, symbols=["XRPUSDT"])
    shifted = pd.concat([long, bars("BNBUSDT", n=2, start="2024-01-01 00:30")], ignore_index=True)
    with pytest.raises(DataError, match="bar BNBUSDT 2024-01-01 00:30:00.00:00 is not on the 1h grid"):
        to_panel(shifted)
    with pytest.raises(DataError, match="no bars between"):
        to_panel(long, start="2025-01-01")
    with pytest.raises(DataError, match="timezone-naive"):
        to_panel(long.assign(timestamp=long["timestamp"].dt.tz_localize(None)))
    with pytest.raises(DataError, match="lacks column"):
        to_panel(long.drop(columns="volume"))
    with pytest.raises(DataError, match=r"\['BTCUSDT'\] requested more than once"):
        to_panel(long, symbols=["BTCUSDT", "ETHUSDT", "BTCUSDT"])
    with pytest.raises(DataError, match="missing symbol at row 3"):
        to_panel(long.assign(symbol=long["symbol"].where(long.index != 3)))


def test_to_panel_bounds_and_units_beyond_the_nanosecond_range():
    long = pd.concat([bars(n=10), bars("ETHUSDT", n=10)], ignore_index=True)
    ref = to_panel(long)
    for opts in ({"end": "2300-01-01 00:00"}, {"start": "1000-01-01"}, {"start": "1000-01-01", "end": "2300-01-01"}):
        pd.testing.assert_frame_equal(to_panel(long, **opts).close, ref.close)
    with pytest.raises(DataError, match="no bars between"):
        to_panel(long, start="2300-01-01 00:00")
    far = long.assign(timestamp=long["timestamp"].dt.as_unit("s") + pd.Timedelta(days=365 * 900))  # year 2923
    panel = to_panel(far, end="2999-12-31")
    assert panel.index[0] == far["timestamp"].min() and panel.index.unit == "s"
    np.testing.assert_array_equal(panel.close.to_numpy(), ref.close.to_numpy())


# ---------------------------------------------------------------- files: Binance kline layout


def test_kline_folder_mixed_formats(tmp_path):
    btc = bars("BTCUSDT", n=48)
    eth = bars("ETHUSDT", n=30, start="2024-01-01 10:00")
    root = tmp_path / "klines"
    write_kline(root / "BTCUSDT-1h-2024-01-01.zip", kline_text(btc.iloc[:20]))  # no header, ms
    write_kline(root / "BTCUSDT-1h-2024-01-02.csv", kline_text(btc.iloc[20:40], header=True))  # header
    write_kline(root / "sub" / "BTCUSDT-1h-2024-01-03.csv.gz", kline_text(btc.iloc[40:], unit="us"))  # µs
    write_kline(root / "ETHUSDT-1h-2025-01.zip", kline_text(eth, unit="us", header=True))
    (root / "BTCUSDT-1h-2024-01-01.zip.CHECKSUM").write_text("not data")
    out = read_path(root, interval="1h")
    assert_canonical(out)
    same_bars(out, pd.concat([btc, eth], ignore_index=True))


def test_single_kline_file(tmp_path):
    btc = bars(n=5)
    path = write_kline(tmp_path / "BTCUSDT-1h.csv", kline_text(btc))
    same_bars(read_path(path, interval="1h"), btc)
    same_bars(read_path(str(path)), btc)


def test_kline_problems_name_the_file(tmp_path):
    empty = tmp_path / "BTCUSDT-1h-2024-01.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"BTCUSDT-1h-2024-01.csv: empty file"):
        read_path(empty)

    good = write_kline(tmp_path / "z" / "BTCUSDT-1h-2024-02.zip", kline_text(bars(n=50)))
    truncated = tmp_path / "BTCUSDT-1h-2024-03.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"BTCUSDT-1h-2024-03.zip: truncated or corrupt archive"):
        read_path(truncated)

    lines = kline_text(bars(n=4), header=True).splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # line 3 loses its last field
    short = tmp_path / "BTCUSDT-1h-2024-04.csv"
    short.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"BTCUSDT-1h-2024-04.csv: line 3 has 11 fields, expected 12"):
        read_path(short)

    header_only = tmp_path / "BTCUSDT-1h-2024-05.csv"
    header_only.write_text(KLINE_HEADER + "\n")
    with pytest.raises(DataError, match="BTCUSDT-1h-2024-05.csv: header only, no bars"):
        read_path(header_only)

    nameless = write_kline(tmp_path / "klines.csv", kline_text(bars(n=3)))
    with pytest.raises(DataError, match="klines.csv: cannot tell the symbol from the file name"):
        read_path(nameless)


def test_kline_bad_row_names_file_and_line(tmp_path):
    btc = bars(n=10)
    btc.loc[6, "low"] = 500.0  # line 7 of the second file (with header: data rows start at line 2)
    write_kline(tmp_path / "BTCUSDT-1h-2024-01.zip", kline_text(btc.iloc[:5]))
    write_kline(tmp_path / "BTCUSDT-1h-2024-02.zip", kline_text(btc.iloc[5:], header=True))
    with pytest.raises(
        DataError,
        match=r"1 bad row\(s\); first: BTCUSDT 2024-01-01 06:00:00Z \(BTCUSDT-1h-2024-02.zip line 3\): "
        r"high 108 < low 500",
    ):
        read_path(tmp_path)
    out = read_path(tmp_path, on_bad_rows="drop")
    assert len(out) == 9 and pd.Timestamp("2024-01-01 06:00", tz="UTC") not in set(out["timestamp"])


def test_kline_duplicates_across_files(tmp_path):
    btc = bars(n=6)
    write_kline(tmp_path / "BTCUSDT-1h-a.zip", kline_text(btc.iloc[:4]))
    write_kline(tmp_path / "BTCUSDT-1h-b.csv", kline_text(btc.iloc[2:]))  # exact overlap: repaired
    same_bars(read_path(tmp_path, interval="1h"), btc)
    write_kline(tmp_path / "BTCUSDT-1h-c.csv", kline_text(btc.iloc[[3]].assign(volume=99.0)))
    with pytest.raises(
        DataError,
        match=r"conflicting duplicate bars for BTCUSDT 2024-01-01 03:00:00Z \(BTCUSDT-1h-b.csv line 2\) and "
        r"BTCUSDT 2024-01-01 03:00:00Z \(BTCUSDT-1h-c.csv line 1\)",
    ):
        read_path(tmp_path)


def test_kline_wrong_interval_in_folder(tmp_path):
    write_kline(tmp_path / "BTCUSDT-4h-2024-01.zip", kline_text(bars(n=12, freq="4h")))
    with pytest.raises(DataError, match=f"BTCUSDT in {tmp_path} looks like 4h bars but data.interval=1h"):
        read_path(tmp_path, interval="1h")


def test_paths_that_do_not_hold_data(tmp_path):
    with pytest.raises(DataError, match="no such file or directory: .*nowhere"):
        read_path(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no kline files"):
        read_path(tmp_path)
    with pytest.raises(DataError, match="unsupported file type"):
        read_path(tmp_path / "notes.txt")


# ---------------------------------------------------------------- files: long layout


def test_long_parquet_and_csv_with_z(tmp_path):
    df = pd.concat([bars("ETHUSDT", n=5), bars("BTCUSDT", n=7)], ignore_index=True)
    df["source"] = "test"
    pq = tmp_path / "long.parquet"
    df.assign(symbol=df["symbol"].astype("category")).to_parquet(pq)
    expected = validate_ohlcv(df, "expected")
    same_bars(read_path(pq, interval="1h"), expected)

    csv = tmp_path / "long.csv.gz"
    text = df.assign(timestamp=df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(index=False)
    csv.write_bytes(gzip.compress(text.encode()))
    same_bars(read_path(csv, interval="1h"), expected)

    broken = df.assign(timestamp=df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    broken.loc[3, "high"] = 1.0
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(DataError, match=r"broken.csv: 1 bad row\(s\); first: ETHUSDT 2024-01-01 03:00:00Z \(line 5\)"):
        read_path(tmp_path / "broken.csv")


def test_long_file_problems(tmp_path):
    bars().drop(columns="volume").to_parquet(tmp_path / "novol.parquet")
    with pytest.raises(DataError, match=r"novol.parquet: missing column\(s\) volume"):
        read_path(tmp_path / "novol.parquet")
    bars().drop(columns="symbol").assign(timestamp=lambda d: d.timestamp.astype(str)).to_csv(
        tmp_path / "nosym.csv", index=False
    )
    with pytest.raises(DataError, match=r"nosym.csv: missing column\(s\) symbol"):
        read_path(tmp_path / "nosym.csv")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="bad.parquet: unreadable or corrupt parquet"):
        read_path(tmp_path / "bad.parquet")
    naive = bars().assign(timestamp=lambda d: d.timestamp.dt.strftime("%Y-%m-%d %H:%M:%S"))
    naive.to_csv(tmp_path / "naive.csv", index=False)
    with pytest.raises(DataError, match="naive.csv: timestamps are timezone-naive; set data.naive_timezone=UTC"):
        read_path(tmp_path / "naive.csv")
    same_bars(read_path(tmp_path / "naive.csv", naive_timezone="UTC"), bars())


# ---------------------------------------------------------------- Binance downloader


def make_source(root: Path, symbol: str, months: list[str], interval: str = "1h") -> pd.DataFrame:
    """A file:// mirror in the data.binance.vision layout; returns the bars it holds."""
    frames = []
    for month in months:
        df = bars(symbol, n=5, start=f"{month}-01")
        frames.append(df)
        write_kline(root / symbol / interval / f"{symbol}-{interval}-{month}.zip", kline_text(df))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(params=["file", "http"])
def serve(request):
    """Turn a source folder into a base_url: a file:// URL or a local HTTP server (real 404s)."""
    servers = []

    def start(folder: Path) -> str:
        if request.param == "file":
            return folder.as_uri()
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


OFFLINE_URL = "http://127.0.0.1:9/x"  # nothing listens on the discard port: connection refused


def test_download_klines_and_cache_reuse(tmp_path, serve):
    source = tmp_path / "source"
    btc = make_source(source, "BTCUSDT", ["2024-01", "2024-02", "2024-03"])
    make_source(source, "ETHUSDT", ["2024-02", "2024-03"])  # listed in February
    cache = tmp_path / "cache"
    url = serve(source)
    files = download_klines(["BTCUSDT", "ETHUSDT"], "1h", "2024-01-15", "2024-03-31", cache, base_url=url)
    assert [f.name for f in files] == [
        "BTCUSDT-1h-2024-01.zip", "BTCUSDT-1h-2024-02.zip", "BTCUSDT-1h-2024-03.zip",
        "ETHUSDT-1h-2024-02.zip", "ETHUSDT-1h-2024-03.zip",
    ]
    assert all(f.parent == cache / f.name.split("-")[0] / "1h" for f in files)
    assert (cache / "ETHUSDT" / "1h" / "ETHUSDT-1h-2024-01.missing").exists()
    assert not list(cache.rglob("*.part"))

    # The source disappears and the network is gone: everything must come from the cache.
    shutil.rmtree(source)
    again = download_klines(["BTCUSDT", "ETHUSDT"], "1h", "2024-01-01", "2024-03-01", cache, base_url=OFFLINE_URL)
    assert again == files

    write_kline(cache / "XRPUSDT" / "1h" / "XRPUSDT-1h-2024-01.zip", kline_text(bars("XRPUSDT")))
    out = load_binance(["BTCUSDT"], "1h", "2024-01-01", "2024-03-31", cache, base_url=OFFLINE_URL)
    assert out["symbol"].unique().tolist() == ["BTCUSDT"]
    same_bars(out, btc)
    with pytest.raises(DataError, match="offline"):  # a month not in the cache needs the network
        download_klines(["BTCUSDT"], "1h", "2024-01-01", "2024-04-30", cache, base_url=OFFLINE_URL)


def test_download_unknown_symbol_and_bad_dates(tmp_path):
    source = tmp_path / "source"
    make_source(source, "BTCUSDT", ["2024-01"])
    with pytest.raises(DataError, match="no 1h kline files for NOPEUSDT at .* between 2024-01 and 2024-02"):
        download_klines(["NOPEUSDT"], "1h", "2024-01-01", "2024-02-28", tmp_path / "c", base_url=source.as_uri())
    with pytest.raises(ConfigError, match="data.start=2024-03-01 is after data.end=2024-01-01"):
        download_klines(["BTCUSDT"], "1h", "2024-03-01", "2024-01-01", tmp_path / "c", base_url=source.as_uri())
    with pytest.raises(ConfigError, match="data.cache_dir is required"):
        download_klines(["BTCUSDT"], "1h", "2024-01-01", "2024-01-01", None, base_url=source.as_uri())
    with pytest.raises(ConfigError, match="unsupported data.interval='1M'"):
        download_klines(["BTCUSDT"], "1M", "2024-01-01", "2024-01-01", tmp_path / "c", base_url=source.as_uri())


def test_download_end_none_means_last_complete_month(tmp_path):
    source = tmp_path / "source"
    last = (pd.Timestamp.now(tz="UTC").tz_localize(None).to_period("M") - 1).strftime("%Y-%m")
    make_source(source, "BTCUSDT", [last])
    files = download_klines(["BTCUSDT"], "1h", f"{last}-01", None, tmp_path / "c", base_url=source.as_uri())
    assert [f.name for f in files] == [f"BTCUSDT-1h-{last}.zip"]


def test_download_offline_fails_fast(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"cannot reach http://127.0.0.1:9/x \(offline\?\).*data=files data.path="):
        download_klines(["BTCUSDT"], "1h", "2024-01-01", "2024-06-30", tmp_path, base_url=OFFLINE_URL, timeout_s=2)
    assert time.monotonic() - t0 < 5
    assert not list(tmp_path.rglob("*.zip")) and not list(tmp_path.rglob("*.part"))


# ---------------------------------------------------------------- sentiment


def write_fear_greed(path: Path, days: list[str], values: list[float]) -> Path:
    unix = [int(pd.Timestamp(d, tz="UTC").timestamp()) for d in days]
    pd.DataFrame({"date": days, "value": values, "classification": "Fear", "unix": unix}).to_csv(path, index=False)
    return path


def test_load_fear_greed(tmp_path):
    path = write_fear_greed(tmp_path / "fg.csv", ["2024-01-02", "2024-01-01", "2024-01-03"], [20, 10, 30])
    fg = load_fear_greed(path)
    assert fg.name == "fear_greed" and fg.dtype == np.float64
    assert list(fg.index) == list(pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC"))
    assert fg.tolist() == [10.0, 20.0, 30.0]
    pd.DataFrame({"date": ["2024-01-01"], "classification": ["Fear"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) value"):
        load_fear_greed(tmp_path / "bad.csv")
    write_fear_greed(tmp_path / "range.csv", ["2024-01-01", "2024-01-02"], [10, 120])
    with pytest.raises(DataError, match="range.csv: line 3: value '120' is outside 0..100"):
        load_fear_greed(tmp_path / "range.csv")
    with pytest.raises(DataError, match="no such file or directory"):
        load_fear_greed(tmp_path / "none.csv")


def test_align_causal_uses_only_published_values():
    daily = pd.Series(
        [10.0, 20.0, 30.0], index=pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC"), name="fear_greed"
    )
    grid = pd.date_range("2024-01-01", "2024-01-08", freq="1h", tz="UTC")
    out = align_causal(daily, grid, max_age="3D")
    assert out.name == "fear_greed" and out.index.equals(grid)
    at = lambda s: out[pd.Timestamp(s, tz="UTC")]  # noqa: E731
    assert np.isnan(at("2024-01-01 23:00"))  # day 1's value is not known during day 1
    assert at("2024-01-02 00:00") == 10.0
    assert at("2024-01-02 23:00") == 10.0  # bar on D 23:00 gets day D-1
    assert at("2024-01-03 00:00") == 20.0  # D+1 00:00 gets day D
    assert at("2024-01-04 00:00") == 30.0
    assert at("2024-01-07 00:00") == 30.0  # 3 days after availability: still fresh
    assert np.isnan(at("2024-01-07 01:00"))  # stale
    # Changing a later day's value does not change any earlier bar.
    changed = align_causal(daily.where(daily.index < "2024-01-03", 99.0), grid)
    before = grid < pd.Timestamp("2024-01-04", tz="UTC")
    pd.testing.assert_series_equal(changed[before], out[before])


def test_align_causal_carries_over_missing_days_until_stale():
    days = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-06"]).tz_localize("UTC")
    daily = pd.Series([1.0, np.nan, 6.0], index=days, name="fg")
    grid = pd.date_range("2024-01-01", "2024-01-08", freq="1D", tz="UTC")
    out = align_causal(daily, grid, max_age="36h")
    np.testing.assert_array_equal(out.to_numpy(), [np.nan, 1.0, 1.0, np.nan, np.nan, np.nan, 6.0, 6.0])
    with pytest.raises(DataError, match="timezone-naive"):
        align_causal(daily, grid.tz_localize(None))
    with pytest.raises(ConfigError, match="max_age='soon' is not a duration"):
        align_causal(daily, grid, max_age="soon")


# ---------------------------------------------------------------- real data (skipped when absent)


@pytest.mark.realdata
def test_real_files_load():
    """The shipped real data passes every rule (located by conftest: ../shared/data/real or
    $MARKET_REGIMES_REAL_DATA; skipped when absent)."""
    parquet = real_file("binance_spot_1h_36sym_2017_2024.parquet")
    csv = real_file("binance_spot_1h_btc_eth_bnb_2017_2024.csv.gz")
    fear_greed = real_file("crypto_fear_greed_index_daily_2018_2024.csv")
    long = read_path(parquet, interval="1h")
    assert_canonical(long)
    assert len(long) == 1_551_490
    assert long["symbol"].nunique() == 36
    three = read_path(csv, interval="1h")
    assert sorted(three["symbol"].unique()) == ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
    same_bars(three, long[long["symbol"].isin(["BNBUSDT", "BTCUSDT", "ETHUSDT"])])
    fg = load_fear_greed(fear_greed)
    assert fg.index[0] == pd.Timestamp("2018-02-01", tz="UTC") and fg.between(0, 100).all()
