"""Walk-forward validation: refit on the past, label the future causally, measure.

Folds (``make_folds``) cut the bar grid into training slices and the test slices that follow
them, expanding (training always starts at the first bar) or rolling (fixed-length training).
Between a training slice and its test slice lie ``purge`` bars (at least the window length plus
the forecast horizon), so no test window shares a bar with the training period and no training
target reaches into the test period.

Each fold refits everything on its training slice: the scaler (``build_windows`` with the fold's
``train_end``), the encoder, the clusterer with its automatic number of regimes, and the
statistics that the skill metrics use. Features are computed once on the whole panel: they are
causal (a bar's features depend only on bars up to it, property-tested in tests/test_features),
so slicing them equals recomputing them. The fold's test bars are labelled by its clusterer's
causal filter run forward from the start of the fold's slice; nothing after a test bar
influences that bar's label.

Regime ids are carried from fold to fold: fold k's model and fold k-1's model both label fold k's
test bars; the Hungarian matching of the two labellings maps fold k's ids onto fold k-1's
(``mapping`` in the report), and their ARI is the fold's label stability.

``report.json`` (see ``run_walk_forward``'s docstring for the keys) holds per-fold and pooled
metrics; ``regimes.csv`` the out-of-sample labels and filter probabilities.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from sklearn.metrics import adjusted_rand_score

from market_regimes.data.panel import interval_to_timedelta
from market_regimes.drift import DriftThresholds, assess, draw_sample
from market_regimes.errors import ConfigError
from market_regimes.evaluation import (
    direction_skill,
    in_vs_out_of_sample,
    internal_indices,
    pool_skill,
    regime_process,
    strip_arrays,
    volatility_skill,
)
from market_regimes.serialize import json_default
from market_regimes.windows import WindowConfig, build_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """Inclusive bar positions on the panel grid: train [train_start, train_end], test [test_start, test_end]."""

    fold: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def _bars(value, index: pd.DatetimeIndex, name: str) -> int | None:
    """A size given in bars (int) or as a duration ("90D", "26W") -> bars."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    try:
        step = index[1] - index[0]
        return int(pd.Timedelta(value) / step)
    except (ValueError, TypeError):
        raise ConfigError(f"walk_forward.{name}={value!r}: give bars (an int) or a duration such as 90D") from None


def _position(index: pd.DatetimeIndex, when, name: str) -> int:
    """Last bar position at or before ``when`` (a date means the whole day)."""
    from market_regimes.data.panel import inclusive_end

    ts = inclusive_end(when)
    pos = int(np.count_nonzero(index <= ts)) - 1  # index is sorted; works across time units
    if pos < 0 or pos >= len(index):
        raise ConfigError(f"walk_forward.{name}={when} is outside the data ({index[0]} .. {index[-1]})")
    return pos


def make_folds(index: pd.DatetimeIndex, n_folds: int = 4, mode: str = "expanding", purge: int = 72,
               first_train_end=None, train_size=None, test_size=None, end=None, min_train_fraction: float = 0.4) -> list[Fold]:
    """Folds over ``index``; see the module docstring. Sizes are bars or durations; dates are UTC.

    The first training slice ends at ``first_train_end`` (a date), else after ``train_size`` bars,
    else at ``min_train_fraction`` of the grid. The rest up to ``end`` (default: the last bar) is cut
    into ``n_folds`` test slices of ``test_size`` bars (default: equal parts). Rolling mode keeps
    ``train_size`` bars of training (default: the first slice's length).
    """
    if mode not in ("expanding", "rolling"):
        raise ConfigError(f"walk_forward.mode={mode!r}; use expanding or rolling")
    if n_folds < 1:
        raise ConfigError(f"walk_forward.n_folds={n_folds} must be >= 1")
    T = len(index)
    last = T - 1 if end is None else _position(index, end, "end")
    train_bars = _bars(train_size, index, "train_size")
    if first_train_end is not None:
        e0 = _position(index, first_train_end, "first_train_end")
    elif train_bars is not None:
        e0 = train_bars - 1
    else:
        e0 = int(min_train_fraction * (last + 1)) - 1
    test_bars = _bars(test_size, index, "test_size")
    span = last - e0 - purge
    if test_bars is None:
        test_bars = span // n_folds
    if test_bars < 1 or e0 + (n_folds - 1) * test_bars + purge + test_bars > last:
        raise ConfigError(
            f"walk_forward: {n_folds} folds of {test_bars} test bars plus a purge of {purge} bars do not fit "
            f"after the first training slice (ends at bar {e0} of {last + 1}); use fewer folds, a shorter "
            "test_size or an earlier first_train_end"
        )
    rolling = train_bars if train_bars is not None else e0 + 1
    folds = []
    for k in range(n_folds):
        train_end = e0 + k * test_bars
        train_start = 0 if mode == "expanding" else max(0, train_end - rolling + 1)
        test_start = train_end + purge + 1
        test_end = last if k == n_folds - 1 else test_start + test_bars - 1
        folds.append(Fold(k, train_start, train_end, test_start, test_end))
    return folds


def _slice_features(features, start: int, stop: int):
    """Features of bars [start, stop] (positions on the grid)."""
    sl = slice(start, stop + 1)
    return replace(features, values=features.values[:, sl], valid=features.valid[:, sl], index=features.index[sl])


def _fold_cfg(cfg, train_end: pd.Timestamp):
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    c.window.train_end = str(train_end)
    return c


def _apply(model, clusterer, scaler, features, wcfg: WindowConfig, mode: str):
    """An earlier fold's model applied to another slice: its scaler, encoder and causal filter."""
    from market_regimes.training import encode_windows

    windows, _ = build_windows(features, wcfg, scaler=scaler)
    latents = encode_windows(model, windows, mode)
    return latents, np.asarray(clusterer.predict_online(latents.z, latents.lengths))


def _on_keys(src, values: np.ndarray, dst) -> np.ndarray:
    """``values`` given on ``src`` latent keys, read on ``dst`` keys (-1 where src has none)."""
    series = pd.Series(values, index=pd.MultiIndex.from_arrays([src.asset_idx, src.end_idx]))
    key = pd.MultiIndex.from_arrays([dst.asset_idx, dst.end_idx])
    return series.reindex(key).fillna(-1).to_numpy().astype(np.int64)


def carry_ids(ref_labels: np.ndarray, new_labels: np.ndarray, n_new: int, n_ref: int) -> np.ndarray:
    """Mapping new fold id -> carried id: Hungarian matching of the new fit's labels to the carried
    labels of the same bars; new regimes without a partner get fresh ids (>= n_ref)."""
    from market_regimes.regimes import align_to_reference

    if len(ref_labels) == 0:
        return np.arange(n_ref, n_ref + n_new)
    return align_to_reference(ref_labels, new_labels, n_new, max(n_ref, int(ref_labels.max()) + 1))


def _map_proba(proba: np.ndarray, perm: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(proba), width))
    for old, new in enumerate(perm):
        out[:, new] += proba[:, old]
    return out


@dataclass
class WalkForwardResult:
    report: dict
    run_dir: Path
    files: list[Path]
    fold_states: list[dict] = field(default_factory=list)  # per fold: scaler, clusterer and model state


def config_folds(cfg, index: pd.DatetimeIndex) -> tuple[list[Fold], int]:
    """The folds ``cfg.walk_forward`` gives on the feature grid ``index``, and the purge (checked)."""
    wf = OmegaConf.to_container(cfg.walk_forward, resolve=True)
    h, W = int(wf.get("horizon", 24)), int(cfg.window.length)
    purge = int(wf["purge"]) if wf.get("purge") is not None else W + h
    if purge < W + h:
        raise ConfigError(f"walk_forward.purge={purge} must be at least window.length + horizon = {W + h} bars")
    folds = make_folds(index, int(wf["n_folds"]), wf.get("mode", "expanding"), purge,
                       wf.get("first_train_end"), wf.get("train_size"), wf.get("test_size"), wf.get("end"),
                       float(wf.get("min_train_fraction", 0.4)))
    return folds, purge


def run_walk_forward(cfg) -> WalkForwardResult:
    """Run every fold and write ``report.json``, ``regimes.csv`` and the plots to the run dir.

    report.json keys: ``folds`` (one entry per fold: its dates, ``n_regimes``, ``mapping``
    (fold id -> carried id), ``process`` (entropy rate, switches per 1,000 bars, run lengths,
    occupancy of the out-of-sample labels), ``internal_indices`` (silhouette, Davies-Bouldin,
    Calinski-Harabasz of out-of-sample latents), ``stability_ari`` (vs the previous fold's model on
    the same bars), ``in_vs_out_of_sample`` (per regime P(up) and forward-vol ratio),
    ``volatility_skill`` (R^2 and Spearman of regime / naive / naive+regime forecasts of the next
    ``horizon``-bar log realised volatility), ``direction_skill`` (Brier of P(up | regime) vs the
    base rate), ``truth`` (ARI, NMI, balanced accuracy; synthetic data only), ``drift`` (see
    market_regimes.drift), timings); ``overall`` (the same, pooled over the folds' test bars);
    ``config`` and ``data``.
    """
    import lightning as L

    from market_regimes.pipeline import load_features
    from market_regimes.plots import save_walk_forward_plots
    from market_regimes.training import fit_stack, label_frame, truth_agreement

    t_start = time.perf_counter()
    seed = int(cfg.seed)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    wf = OmegaConf.to_container(cfg.walk_forward, resolve=True)
    market, features = load_features(cfg)
    close, interval = market.panel.close, market.panel.interval
    mode = cfg.window.mode
    h = int(wf.get("horizon", 24))
    folds, purge = config_folds(cfg, features.index)
    thresholds = DriftThresholds.from_dict(cfg.get("drift"))
    vol_name = next(n for n in features.names if n.startswith("log_rv_"))
    current_log_vol = features.values[:, :, features.names.index(vol_name)].T.astype(np.float64)  # (T, A)
    current_log_vol = np.where(features.valid.T, current_log_vol, np.nan)

    fold_reports, test_frames, csv_parts, fold_states = [], [], [], []
    vol_parts, dir_parts, truth_frames = [], [], []
    prev = None  # (model, clusterer, scaler, perm, width) of the previous fold
    width = 0  # number of carried regime ids so far
    for fold in folds:
        t0 = time.perf_counter()
        L.seed_everything(seed + fold.fold, workers=True, verbose=False)
        ts = features.index
        train_end = ts[fold.train_end]
        log.info("fold %d: train %s .. %s, test %s .. %s", fold.fold, ts[fold.train_start], train_end,
                 ts[fold.test_start], ts[fold.test_end])
        fcfg = _fold_cfg(cfg, train_end)
        sub = _slice_features(features, fold.train_start, fold.test_end)
        wcfg = WindowConfig.from_dict(OmegaConf.to_container(fcfg.window, resolve=True))
        windows, scaler = build_windows(sub, wcfg)
        fitted = fit_stack(fcfg, sub, windows, scaler, run_dir / f"fold_{fold.fold}", loggers=False)
        if fitted is None:  # non-zero DDP rank
            return WalkForwardResult({}, run_dir, [])
        K = int(fitted.clusterer.n_regimes)
        lat = fitted.latents
        end_pos = lat.end_idx + fold.train_start  # positions on the full grid
        is_test = (end_pos >= fold.test_start) & (end_pos <= fold.test_end)
        is_train = end_pos <= fold.train_end
        if not is_test.any():
            raise ConfigError(f"fold {fold.fold} has no valid test window; use fewer folds or more data")

        stability = None
        if prev is None:
            perm = np.arange(K)
        else:
            p_model, p_clusterer, p_scaler, p_perm, p_train_end = prev
            p_lat, p_labels = _apply(p_model, p_clusterer, p_scaler, sub, wcfg, mode)
            ref = _on_keys(p_lat, p_perm[p_labels], lat)
            # ids are carried on bars both models label and fold k has seen: (previous train_end,
            # this train_end], so a test bar's id never depends on later bars
            recent = (end_pos > p_train_end) & (end_pos <= fold.train_end) & (ref >= 0)
            perm = carry_ids(ref[recent], fitted.labels[recent], K, width)
            both = is_test & (ref >= 0)
            stability = float(adjusted_rand_score(ref[both], fitted.labels[both])) if both.any() else None
        width = max(width, int(perm.max()) + 1)
        labels = perm[fitted.labels]
        proba = _map_proba(np.asarray(fitted.clusterer.predict_proba_online(lat.z, lat.lengths)), perm, width)

        # (T, A) frames on the full grid
        full = label_frame(features.index, features.symbols,
                           replace(lat, end_idx=end_pos), np.where(is_test, labels, -1))
        test_rows = np.zeros(len(features.index), dtype=bool)
        test_rows[fold.test_start : fold.test_end + 1] = True
        train_rows = np.zeros(len(features.index), dtype=bool)
        train_rows[fold.train_start : fold.train_end + 1] = True
        all_labels = label_frame(features.index, features.symbols, replace(lat, end_idx=end_pos), labels)
        test_frame = full.iloc[fold.test_start : fold.test_end + 1]
        test_frames.append(test_frame)
        vol = volatility_skill(close, all_labels, current_log_vol, train_rows, test_rows, width, h)
        dire = direction_skill(close, all_labels, train_rows, test_rows, width, h)
        vol_parts.append(vol)
        dir_parts.append(dire)
        ref_sample = draw_sample(fitted.model, windows, lat, labels, is_train, width, mode, seed=seed)
        rec_sample = draw_sample(fitted.model, windows, lat, labels, is_test, width, mode, seed=seed,
                                 stride=thresholds.stride)
        report = {
            "fold": fold.fold,
            "train_start": str(ts[fold.train_start]), "train_end": str(train_end),
            "test_start": str(ts[fold.test_start]), "test_end": str(ts[fold.test_end]),
            "n_regimes": K, "mapping": {int(i): int(j) for i, j in enumerate(perm)},
            "selection": fitted.selection.table.reset_index().to_dict(orient="records") if fitted.selection else None,
            "process": regime_process([test_frame], width, interval),
            "internal_indices": internal_indices(lat.z[is_test], labels[is_test], seed=seed),
            "stability_ari": stability,
            "in_vs_out_of_sample": in_vs_out_of_sample(close, all_labels, train_rows, test_rows, width, interval, h),
            "volatility_skill": strip_arrays(vol),
            "direction_skill": strip_arrays(dire),
            "drift": assess(ref_sample, rec_sample, thresholds, windows.names, seed),
        }
        if market.truth is not None:
            report["truth"] = truth_agreement(market.truth, full)
            truth_frames.append(full)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        fold_reports.append(report)
        a_sym = np.asarray(features.symbols)[lat.asset_idx[is_test]]
        part = pd.DataFrame({"timestamp": features.index[end_pos[is_test]], "asset": a_sym, "fold": fold.fold,
                             "regime": labels[is_test]})
        csv_parts.append((part, proba[is_test]))
        fold_states.append({"scaler": fitted.scaler.to_state(), "clusterer": fitted.clusterer.to_state(),
                            "model": {k: v.detach().clone() for k, v in fitted.model.state_dict().items()}})
        prev = (fitted.model, fitted.clusterer, fitted.scaler, perm, fold.train_end)
        log.info("fold %d done in %.1f s: %d regimes, stability %s", fold.fold, report["seconds"], K, stability)

    overall = {
        "n_regime_ids": width,
        "process": regime_process(test_frames, width, interval),
        "stability_ari_mean": _mean([r["stability_ari"] for r in fold_reports]),
        "volatility_skill": strip_arrays(pool_skill(vol_parts)),
        "direction_skill": strip_arrays(pool_skill(dir_parts)),
        "drift_share_of_folds": float(np.mean([r["drift"]["drift"] for r in fold_reports])),
    }
    if truth_frames:
        pooled = pd.concat(truth_frames).groupby(level=0).max()  # test slices do not overlap
        overall["truth"] = truth_agreement(market.truth, pooled.reindex(features.index, fill_value=-1))
    overall["seconds"] = round(time.perf_counter() - t_start, 2)
    result = {"folds": fold_reports, "overall": overall, "horizon": h, "purge": purge,
              "fold_bounds": [asdict(f) for f in folds], "data": market.source,
              "config": OmegaConf.to_container(cfg, resolve=True)}
    files = [run_dir / "report.json", run_dir / "regimes.csv"]
    files[0].write_text(json.dumps(result, indent=2, default=json_default))
    _write_regimes_csv(files[1], csv_parts, width)
    if cfg.get("plots", True):
        files += save_walk_forward_plots(run_dir, close, test_frames, fold_reports, width)
    return WalkForwardResult(result, run_dir, files, fold_states)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _write_regimes_csv(path: Path, parts, width: int) -> None:
    frames = []
    for part, proba in parts:
        cols = {f"p_{k}": np.round(proba[:, k] if k < proba.shape[1] else 0.0, 5) for k in range(width)}
        frames.append(part.assign(**cols))
    pd.concat(frames).sort_values(["timestamp", "asset"]).to_csv(path, index=False)


def print_walk_forward(result: WalkForwardResult) -> None:
    o = result.report.get("overall")
    if not o:
        return
    print(f"{len(result.report['folds'])} folds; regimes per fold: {[f['n_regimes'] for f in result.report['folds']]}")
    p = o["process"]
    print(f"out of sample: entropy rate {p['entropy_rate_nats']:.4f} nats/bar, {p['switches_per_1000_bars']:.1f} "
          f"switches per 1,000 bars, mean run {p['mean_run_length_bars']:.1f} bars ({p['mean_run_length_hours']:.1f} h)")
    print(f"label stability (ARI vs previous fold's model): {o['stability_ari_mean']}")
    vs = o["volatility_skill"]
    print(f"next-{vs['horizon']}-bar log volatility, out-of-sample R^2 / Spearman: regime "
          f"{_fmt(vs['regime']['r2'])} / {_fmt(vs['regime']['spearman'])}, naive (current vol) "
          f"{_fmt(vs['naive']['r2'])} / {_fmt(vs['naive']['spearman'])}, naive + regime "
          f"{_fmt(vs['naive_plus_regime']['r2'])} / {_fmt(vs['naive_plus_regime']['spearman'])}")
    ds = o["direction_skill"]
    print(f"P(up over {ds['horizon']} bars): Brier regime {_fmt(ds['brier_regime'])} vs base rate "
          f"{_fmt(ds['brier_base_rate'])} (skill {_fmt(ds['skill'])})")
    if "truth" in o:
        t = o["truth"]
        print(f"planted regimes: ARI {t['ari']:.3f}, NMI {t['nmi']:.3f}, balanced accuracy {t['balanced_accuracy']:.3f}")
    print(f"drift flagged in {o['drift_share_of_folds']:.0%} of folds")
    for f in result.files:
        print(f"wrote {f}")
    print(f"total {o['seconds']} s")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
