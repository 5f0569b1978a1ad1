"""Asset-specific inference: the regime an asset is in at its latest complete bar.

Features are recomputed causally on the data up to the bar (the same code as training, so a
bar's features do not depend on later bars), scaled with the bundle's scaler, and the asset's
most recent windows are encoded and labelled with the bundle's causal filter. With a finite
``online_memory`` (jump model, HMM) a label depends on a bounded number of windows, so inference
encodes only those, and ``infer(..., at=T)`` equals ``label_history(...)`` at T exactly.

Features are recomputed over the tail of history that those windows need (``history_bars``:
the bars that fix a feature row, plus the windows), not the whole history, so a call costs the
same after years of data; the tail gives the full-history features of its last bars (rolling
windows exactly, exponential averages to 1e-16 relative, i.e. within a float32 rounding step).

Statistics on the card (P(up), forward volatility, durations, transitions) come from the
bundle's in-sample regime statistics of the training period.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from market_regimes.bundle import Bundle, BundleError
from market_regimes.data import MarketData, load_market
from market_regimes.data.panel import interval_to_timedelta
from market_regimes.errors import DataError
from market_regimes.features import FeatureConfig, build_features
from market_regimes.features.ops import run_length
from market_regimes.model.networks import encode, flatten_windows
from market_regimes.regimes import sequence_lengths
from market_regimes.windows import WindowConfig, WindowSet, build_windows

DURATION_LOOKBACK = 256  # bars scanned back to count how long the asset has been in its regime


def load_bundle_market(bundle: Bundle, data_path: str | None = None) -> MarketData:
    """The market data the bundle was trained on (its recorded source), or ``data_path`` read
    like ``data=files``, restricted to the bundle's symbols and interval (no date cut)."""
    cfg = dict(bundle.config.get("data") or {})
    if data_path:
        cfg = {"source": "files", "path": data_path, "interval": bundle.manifest["interval"],
               "naive_timezone": cfg.get("naive_timezone"), "on_bad_rows": cfg.get("on_bad_rows", "error"),
               "fear_greed_path": cfg.get("fear_greed_path")}
    cfg.update(symbols=bundle.manifest["symbols"], start=cfg.get("start"), end=None)
    return load_market(cfg)


TAIL_SLACK = 64  # extra tail bars, so an asset a few bars behind the others needs no second pass


def history_bars(bundle: Bundle) -> int | None:
    """Bars of history that fix the label and the duration count of a bar (None: all of it).

    The last ``online_memory + DURATION_LOOKBACK - 1`` windows are labelled; each spans the
    window length, and its first row needs ``FeatureConfig.history()`` bars behind it."""
    memory = _memory(bundle)
    if memory is None:
        return None
    history = FeatureConfig.from_dict(bundle.config["features"]).history()
    return history + int(bundle.manifest["window_length"]) + memory + DURATION_LOOKBACK - 2


def scaled_windows(bundle: Bundle, market: MarketData, at=None, full: bool = False) -> WindowSet:
    """Windows of the data up to ``at``, scaled with the bundle's scaler: over the tail of
    ``history_bars`` (plus slack) bars, or over the whole history with ``full=True``."""
    panel = market.panel if at is None else market.panel.select(end=at)
    if len(panel.index) == 0:
        raise DataError(f"no data at or before {at}")
    need = None if full else history_bars(bundle)
    if need is not None and len(panel.index) > need + TAIL_SLACK:
        panel = panel.select(start=panel.index[-(need + TAIL_SLACK)])
    wcfg = WindowConfig.from_dict(bundle.config["window"])
    try:
        features = build_features(panel, FeatureConfig.from_dict(bundle.config["features"]), market.sentiment)
        windows, _ = build_windows(features, wcfg, scaler=bundle.scaler)
    except DataError as err:
        raise DataError(f"too little history: {err}") from None
    if windows.names != bundle.manifest["features"]:
        raise BundleError("incompatible bundle: its features differ from what this version computes "
                          f"({len(bundle.manifest['features'])} vs {len(windows.names)}); retrain")
    return windows


@torch.no_grad()
def _encode(bundle: Bundle, windows: WindowSet, asset: int, ends: np.ndarray) -> np.ndarray:
    if bundle.manifest.get("mode") == "market":
        x = windows.gather_market(ends)
    else:
        x = windows.gather(np.full(len(ends), asset), ends)
    z = encode(bundle.model, flatten_windows(torch.from_numpy(np.ascontiguousarray(x))))
    return z.numpy().astype(np.float64)


def _memory(bundle: Bundle) -> int | None:
    """Windows a label depends on: 1 for per-row clusterers, the ``online_memory`` of those that
    filter a sequence (jump model, HMM); None when that memory is unbounded."""
    if not getattr(bundle.clusterer, "sequential", False):
        return 1
    mem = getattr(bundle.clusterer, "online_memory", None)
    return int(mem) if mem else None


def _ends_valid(windows: WindowSet, asset: int, mode: str) -> np.ndarray:
    return windows.ends.all(axis=0) if mode == "market" else windows.ends[asset]


def label_tail(bundle: Bundle, windows: WindowSet, asset: int, t: int, n_labels: int = 1):
    """Labels and probabilities of the last ``n_labels`` bars of the run of valid windows ending
    at bar index ``t`` (fewer if the run is shorter); exactly what the causal filter gives there."""
    valid = _ends_valid(windows, asset, bundle.manifest.get("mode", "asset"))
    run = int(run_length(valid[:, None])[t, 0])
    if run == 0:
        return None
    mem = _memory(bundle)
    need = run if mem is None else min(run, mem + n_labels - 1)
    ends = np.arange(t - need + 1, t + 1)
    proba = bundle.clusterer.predict_proba_online(_encode(bundle, windows, asset, ends), [need])
    keep = min(n_labels, need if (mem is None or need == run) else need - mem + 1)
    proba = np.asarray(proba)[-keep:]
    return ends[-keep:], proba.argmax(axis=1), proba


def label_history(bundle: Bundle, market: MarketData) -> pd.DataFrame:
    """(T, A) causal labels of every bar with a valid window (-1 elsewhere), as inference sees them."""
    windows = scaled_windows(bundle, market, full=True)
    out = pd.DataFrame(-1, index=windows.index, columns=pd.Index(windows.symbols, name="symbol"))
    mode = bundle.manifest.get("mode", "asset")
    for a, sym in enumerate(windows.symbols):
        valid = _ends_valid(windows, a, mode)
        ends = np.flatnonzero(valid)
        if len(ends) == 0:
            continue
        lengths = sequence_lengths(np.zeros_like(ends), ends)
        z = np.concatenate([_encode(bundle, windows, a, ends[i : i + 4096]) for i in range(0, len(ends), 4096)])
        out.iloc[ends, a] = np.asarray(bundle.clusterer.predict_online(z, lengths))
    return out


def _latest_bar(market: MarketData, asset: str, windows: WindowSet) -> int | None:
    """Position in ``windows.index`` of the asset's latest bar there, or None."""
    present = np.flatnonzero(market.panel.close[asset].reindex(windows.index).notna().to_numpy())
    return int(present[-1]) if len(present) else None


def _stat_row(bundle: Bundle, asset: str, regime: int) -> dict:
    for row in bundle.regime_stats["in_sample"]["per_asset"]:
        if row["asset"] == asset and int(row["regime"]) == regime:
            return row
    return {}


def _p_up(row: dict, h: int) -> dict:
    return {"p": row.get(f"p_up_{h}"), "lo": row.get(f"p_up_{h}_lo"), "hi": row.get(f"p_up_{h}_hi"),
            "n": row.get(f"n_fwd_{h}"), "n_effective": row.get(f"n_eff_{h}")}


def infer(bundle: Bundle, market: MarketData, asset: str, at=None, now: pd.Timestamp | None = None,
          max_stale_bars: float = 2.0, windows: WindowSet | None = None) -> dict:
    """The card of one asset at its latest complete bar (at or before ``at``), as a JSON-able dict."""
    symbols = bundle.manifest["symbols"]
    if asset not in symbols:
        raise DataError(f"unknown asset {asset}; the bundle knows {', '.join(symbols)}")
    t0 = time.perf_counter()
    windows = windows if windows is not None else scaled_windows(bundle, market, at)
    a = windows.symbols.index(asset)
    t = _latest_bar(market, asset, windows)
    need = history_bars(bundle)
    is_tail = windows.index[0] > market.panel.index[0]
    if is_tail and (t is None or (need is not None and t < need - 1)):
        # the asset's latest bar lies too early in this tail: a tail ending at that bar instead
        last = market.panel.close[asset].loc[: windows.index[-1]].last_valid_index()
        if last is None:
            raise DataError(f"{asset} has no bars at or before {at or 'the end of the data'}")
        windows = scaled_windows(bundle, market, last)
        t = _latest_bar(market, asset, windows)
    if t is None:
        raise DataError(f"{asset} has no bars at or before {at or 'the end of the data'}")
    step = interval_to_timedelta(bundle.manifest["interval"])
    bar = windows.index[t]
    tail = label_tail(bundle, windows, a, t, DURATION_LOOKBACK)
    if tail is None:
        raise DataError(f"too little clean history for {asset} at {bar}: its latest bars are a gap or warm-up; "
                        f"features need {FeatureConfig.from_dict(bundle.config['features']).effective_warmup()} "
                        f"bars and a window {windows.length} more")
    ends, labels, proba = tail
    k = int(labels[-1])
    same = labels[::-1] == k
    in_regime = int(np.argmin(same)) if not same.all() else len(same)
    names = {int(i): n for i, n in (bundle.manifest.get("regime_names") or {}).items()}
    row = _stat_row(bundle, asset, k)
    horizons = sorted(int(h) for h in bundle.config.get("stats", {}).get("horizons", [1, 24]))
    P = np.asarray(bundle.regime_stats["in_sample"]["transition_matrix"]["per_asset"][asset], dtype=float)
    stay = P[k, k] if np.isfinite(P[k, k]) else np.nan
    expected = float(1.0 / (1.0 - stay)) if np.isfinite(stay) and stay < 1 else None
    order = np.argsort(-np.nan_to_num(P[k], nan=-1.0))
    hours = step / pd.Timedelta("1h")
    now = now or pd.Timestamp.now(tz="UTC")
    stale_bars = (now - (bar + step)) / step
    return {
        "asset": asset,
        "bar_time": str(bar),
        "bar_close_time": str(bar + step),
        "stale_bars": float(stale_bars),
        "stale": bool(stale_bars > max_stale_bars),
        "regime": k,
        "regime_name": names.get(k, f"regime {k}"),
        "probability": float(proba[-1, k]),
        "probabilities": [float(p) for p in proba[-1]],
        "bars_in_regime": in_regime,
        "bars_in_regime_at_least": in_regime == len(same),
        "hours_in_regime": in_regime * hours,
        "p_up": {str(h): _p_up(row, h) for h in horizons},
        "expected_remaining_bars": expected,
        "expected_remaining_hours": None if expected is None else expected * hours,
        "median_duration_bars": row.get("median_duration_bars"),
        "forward_vol_ratio": row.get(f"fwd_vol_ratio_{max(horizons)}"),
        "transitions": [{"to": int(j), "name": names.get(int(j), str(j)), "p": float(P[k, j])}
                        for j in order[:3] if np.isfinite(P[k, j])],
        "statistics": f"in-sample, training period {bundle.manifest['train_start']} .. {bundle.manifest['train_end']}",
        "bundle": str(bundle.path),
        "inference_ms": round(1000 * (time.perf_counter() - t0), 1),
    }


def format_card(card: dict) -> str:
    """The human-readable card."""
    def pct(d):
        if d.get("p") is None:
            return "n/a"
        return f"{100 * d['p']:.1f}% (95% CI {100 * d['lo']:.1f}-{100 * d['hi']:.1f}%, n={d['n']})"

    at_least = "at least " if card["bars_in_regime_at_least"] else ""
    lines = [
        f"{card['asset']}  bar {card['bar_time']} (closed {card['bar_close_time']}, "
        f"{card['stale_bars']:.0f} bars ago{', STALE' if card['stale'] else ''})",
        f"regime {card['regime']}: {card['regime_name']}  (probability {card['probability']:.2f}, "
        f"{at_least}{card['bars_in_regime']} bars = {card['hours_in_regime']:.0f} h in it)",
    ]
    for h, d in card["p_up"].items():
        lines.append(f"P(up next {h} bar{'s' if h != '1' else ''}): {pct(d)}")
    if card["expected_remaining_bars"] is not None:
        lines.append(f"expected remaining duration: {card['expected_remaining_bars']:.0f} bars "
                     f"({card['expected_remaining_hours']:.0f} h); median past duration {card['median_duration_bars']} bars")
    if card["forward_vol_ratio"] is not None:
        lines.append(f"forward volatility: {card['forward_vol_ratio']:.2f}x normal")
    lines.append("next: " + ", ".join(f"{t['to']} {t['name']} {t['p']:.3f}" for t in card["transitions"]))
    lines.append(f"({card['statistics']})")
    return "\n".join(lines)
