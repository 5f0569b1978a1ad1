"""A straightforward pandas implementation of the features and windows, for comparison only.

It computes the same quantities as :mod:`market_regimes.features` and
:mod:`market_regimes.windows` the way one would first write them: pandas rolling statistics one
asset at a time, exponential averages restarted per gap segment with ``groupby``, a loop over
bars building a correlation matrix per bar for the mean pairwise correlation, and a loop over
(asset, end bar) that finds each window with ``index.get_loc`` and copies it out. The benchmark
times it against the project's path and checks that both give the same numbers; nothing else
uses it.
"""

from __future__ import annotations

import time
from fnmatch import fnmatch

import numpy as np
import pandas as pd

from market_regimes.data.panel import Panel
from market_regimes.features import FeatureConfig
from market_regimes.features.market import TIE


def _log_floor(x: pd.Series, floor: float) -> pd.Series:
    return np.log(x.clip(lower=floor))


def _ewm_by_segment(s: pd.Series, alpha: float) -> pd.Series:
    """pandas EWM (adjust=True) restarted after every missing value."""
    ok = s.notna()
    segment = (~ok).cumsum()[ok]  # one group per run of present values
    return s[ok].groupby(segment).transform(lambda x: x.ewm(alpha=alpha, adjust=True).mean()).reindex(s.index)


def _asset(close, high, low, volume, cfg: FeatureConfig) -> dict[str, pd.Series]:
    ret = np.log(close).diff()
    out = {"log_ret": ret}
    vol = {h: ret.rolling(h, min_periods=h).std() for h in cfg.vol_horizons}
    for h in cfg.vol_horizons:
        out[f"log_rv_{h}"] = _log_floor(vol[h], 1e-12)
    short, long = min(cfg.vol_horizons), max(cfg.vol_horizons)
    if short != long:
        out[f"rv_ratio_{short}_{long}"] = out[f"log_rv_{short}"] - out[f"log_rv_{long}"]
    w = cfg.downside_window
    down = (ret.clip(upper=0.0) ** 2).rolling(w, min_periods=w).mean()
    out[f"log_downside_{w}"] = _log_floor(np.sqrt(down), 1e-6)
    prev = close.shift(1)
    tr = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1, skipna=False)
    w = cfg.atr_window
    out[f"log_atr_pct_{w}"] = _log_floor((tr / close).rolling(w, min_periods=w).mean(), 1e-6)
    n = cfg.rsi_window
    gain = _ewm_by_segment(ret.clip(lower=0.0), 1.0 / n)
    loss = _ewm_by_segment((-ret).clip(lower=0.0), 1.0 / n)
    rsi = (100.0 * gain / (gain + loss)).where(gain + loss > 0, 50.0)
    out[f"rsi_{n}"] = rsi.where(gain.notna() & loss.notna())
    w, k = cfg.bollinger_window, cfg.bollinger_k
    ma, sd = close.rolling(w, min_periods=w).mean(), close.rolling(w, min_periods=w).std(ddof=0)
    band = 2.0 * k * sd
    out[f"bb_pctb_{w}"] = ((close - (ma - k * sd)) / band.where(band > 0)).clip(-2.0, 3.0)
    out[f"log_bb_width_{w}"] = _log_floor(band / ma, 1e-6)
    fast, slow, signal = cfg.macd
    macd = _ewm_by_segment(close, 2.0 / (fast + 1)) - _ewm_by_segment(close, 2.0 / (slow + 1))
    out["macd_hist"] = (macd - _ewm_by_segment(macd, 2.0 / (signal + 1))) / close
    w, rw = cfg.volume_window, cfg.volume_roc_window
    logv = np.log(volume + 1e-3 * volume.rolling(rw, min_periods=rw).mean())
    mu, sd = logv.rolling(w, min_periods=w).mean(), logv.rolling(w, min_periods=w).std()
    out[f"volume_z_{w}"] = ((logv - mu) / sd.where(sd > 0)).clip(-10.0, 10.0)
    vsum = volume.rolling(rw, min_periods=rw).sum()
    prev_sum = vsum.shift(rw)
    out[f"volume_roc_{rw}"] = np.log((vsum + 1e-6 * prev_sum) / (prev_sum + 1e-6 * vsum))
    w = cfg.obv_window
    flow = (np.sign(ret) * volume).rolling(w, min_periods=w).sum()
    vs = volume.rolling(w, min_periods=w).sum()
    out[f"obv_slope_{w}"] = (flow / vs.where(vs > 0)).where(vs > 0, 0.0).where(flow.notna())
    return out


def _mean_pairwise_correlation(ret: pd.DataFrame, window: int) -> pd.Series:
    """One correlation matrix per bar, over the assets with a full window and non-zero variance."""
    out = pd.Series(np.nan, index=ret.index)
    for t in range(window - 1, len(ret)):
        block = ret.iloc[t - window + 1 : t + 1]
        block = block.loc[:, block.notna().all() & (block.var(ddof=0) > 1e-30)]
        n = block.shape[1]
        if n >= 2:
            out.iloc[t] = (block.corr().to_numpy().sum() - n) / (n * (n - 1))
    return out


def reference_features(panel: Panel, cfg: FeatureConfig,
                       timings: dict | None = None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """``{name: (T, A) DataFrame}`` of every feature and the (T, A) validity frame; the time of
    the per-bar correlation loop goes to ``timings["corr_loop_s"]``."""
    per_asset = {s: _asset(panel.close[s], panel.high[s], panel.low[s], panel.volume[s], cfg) for s in panel.symbols}
    names = list(next(iter(per_asset.values())))
    feats = {n: pd.DataFrame({s: per_asset[s][n] for s in panel.symbols}) for n in names}
    ret, short = feats["log_ret"], min(cfg.vol_horizons)
    log_rv = feats[f"log_rv_{short}"]
    if cfg.cross_asset and len(panel.symbols) >= 2:
        ref = ret[cfg.reference_symbol]
        w = cfg.relative_return_window
        feats[f"rel_ret_{w}"] = ret.rolling(w, min_periods=w).sum().sub(ref.rolling(w, min_periods=w).sum(), axis=0)
        w = cfg.corr_window
        feats[f"corr_ref_{w}"] = pd.DataFrame({s: ret[s].rolling(w, min_periods=w).corr(ref) for s in panel.symbols})
        ref_var = ref.rolling(w, min_periods=w).var()
        feats[f"beta_ref_{w}"] = pd.DataFrame(
            {s: ret[s].rolling(w, min_periods=w).cov(ref) / ref_var.where(ref_var > 0) for s in panel.symbols})
        feats[f"vol_spread_{short}"] = log_rv.sub(log_rv[cfg.reference_symbol], axis=0)
    if cfg.market:
        w = cfg.breadth_return_window
        cum = ret.rolling(w, min_periods=w).sum()
        market = {f"breadth_up_{w}": (cum > TIE).where(cum.notna()).mean(axis=1)}
        w = cfg.breadth_ma_window
        ma = panel.close.rolling(w, min_periods=w).mean()
        market[f"breadth_above_ma_{w}"] = (panel.close > ma * (1 + TIE)).where(ma.notna() & panel.close.notna()).mean(axis=1)
        market[f"market_log_rv_{short}"] = log_rv.mean(axis=1)
        market[f"market_ret_{cfg.breadth_return_window}"] = cum.mean(axis=1)
        if len(panel.symbols) >= 2:
            t0 = time.perf_counter()
            market[f"mean_corr_{cfg.market_corr_window}"] = _mean_pairwise_correlation(ret, cfg.market_corr_window)
            if timings is not None:
                timings["corr_loop_s"] = time.perf_counter() - t0
            market["dispersion_ret"] = ret.std(axis=1).where(ret.notna().sum(axis=1) >= 2)
            market["dispersion_vol"] = log_rv.std(axis=1).where(log_rv.notna().sum(axis=1) >= 2)
        for name, series in market.items():
            feats[name] = pd.DataFrame({s: series for s in panel.symbols})
    present = panel.close.notna()
    run = pd.DataFrame({s: present[s].astype(int).groupby((~present[s]).cumsum()).cumsum()
                        for s in panel.symbols})  # consecutive bars present
    finite = pd.DataFrame(True, index=panel.index, columns=panel.symbols)
    for frame in feats.values():
        finite &= np.isfinite(frame.astype("float32"))
    return feats, (run >= cfg.effective_warmup()) & finite


def reference_names(feats: dict[str, pd.DataFrame], exclude: tuple[str, ...] = ()) -> list[str]:
    """The model inputs: every feature not matched by an ``exclude`` pattern, in order."""
    return [n for n in feats if not any(fnmatch(n, p) for p in exclude)]


def iter_reference_windows(feats: dict[str, pd.DataFrame], valid: pd.DataFrame, length: int, train_end,
                           exclude: tuple[str, ...] = (), clip: float = 5.0, chunk: int = 8192):
    """Robust scaling on the training rows, then one (W, F) array per (asset, end bar), found
    with ``index.get_loc`` and copied out; yielded in chunks of at most ``chunk`` windows as
    ``(keys, windows)``: keys a list of (symbol, end time), windows (n, W, F).

    Chunks let a caller check and drop the windows as they come: all 1.4 M windows of the
    36-symbol hourly file would take ~11 GB as float64.
    """
    names = reference_names(feats, exclude)
    rows = {s: pd.DataFrame({n: feats[n][s] for n in names}).astype("float32") for s in valid.columns}
    train = pd.concat([rows[s][valid[s] & (valid.index <= train_end)] for s in valid.columns]).astype("float64")
    q = train.quantile([0.25, 0.5, 0.75])
    center, scale = q.loc[0.5], (q.loc[0.75] - q.loc[0.25]) / 1.349
    scale = scale.where(scale > 1e-12, 1.0)
    for s in valid.columns:
        scaled = ((rows[s] - center) / scale).clip(-clip, clip).where(valid[s], 0.0)
        full = valid[s].astype(int).rolling(length, min_periods=length).sum() == length
        keys, windows = [], []
        for end_time in valid.index[full.to_numpy()]:
            loc = scaled.index.get_loc(end_time)
            keys.append((s, end_time))
            windows.append(scaled.iloc[loc - length + 1 : loc + 1].to_numpy())
            if len(windows) == chunk:
                yield keys, np.stack(windows)
                keys, windows = [], []
        if windows:
            yield keys, np.stack(windows)


def reference_windows(feats: dict[str, pd.DataFrame], valid: pd.DataFrame, length: int, train_end,
                      exclude: tuple[str, ...] = (), clip: float = 5.0):
    """Every window of :func:`iter_reference_windows` at once: ``(keys, windows, names)``."""
    keys, windows = [], []
    for k, w in iter_reference_windows(feats, valid, length, train_end, exclude, clip):
        keys += k
        windows.append(w)
    names = reference_names(feats, exclude)
    return keys, (np.concatenate(windows) if windows else np.zeros((0, length, len(names)))), names
