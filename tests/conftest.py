import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("MARKET_REGIMES_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def random_long(n_bars: int = 600, symbols=("BTCUSDT", "ETHUSDT", "BNBUSDT"), seed: int = 0,
                interval: str = "1h", start: str = "2023-01-01") -> pd.DataFrame:
    """A small canonical OHLCV table of independent-ish random walks (test input only)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=n_bars, freq=interval, tz="UTC")
    common = rng.standard_normal(n_bars)
    frames = []
    for i, sym in enumerate(symbols):
        r = 0.004 * (0.6 * common + 0.8 * rng.standard_normal(n_bars)) * (1 + 0.3 * i)
        close = 100.0 * (i + 1) * np.exp(np.cumsum(r))
        open_ = np.concatenate([[close[0]], close[:-1]])
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.002, n_bars)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.002, n_bars)))
        volume = rng.lognormal(5 + i, 0.5, n_bars)
        frames.append(pd.DataFrame({"timestamp": idx, "symbol": sym, "open": open_, "high": high,
                                    "low": low, "close": close, "volume": volume}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def long_table():
    return random_long()


def real_file(name: str) -> Path:
    path = REAL_DATA / name
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path
