"""Drift: how far recent data has moved from what a model was fitted on.

A :class:`DriftSample` holds what the tests compare, drawn from a set of bars: scaled feature rows,
latents, reconstruction errors and regime occupancy. The training-period sample is the model's
reference (stored in its bundle); ``assess(reference, recent, thresholds)`` runs every test:

- per-feature PSI (deciles of the reference) and two-sample Kolmogorov-Smirnov statistic;
- MMD between reference and recent latents, RBF kernel with the median-distance bandwidth of the
  pooled sample, and a block-permutation test: the null distribution is the MMD between a random
  contiguous stretch of the reference period, as long as the recent period, and the rest of the
  reference. Windows of a market are neither independent nor identically distributed (volatility
  clusters, regimes persist), so shuffling single windows would flag every recent stretch; moving
  whole blocks of time asks the right question: is the recent period further from the training
  distribution than a stretch of the training period itself typically is? Threshold = the
  (1 - alpha) quantile of that null, so neither width nor cut-off is fixed. (Plain row
  permutation is used when the reference carries no times.);
- reconstruction-error drift: median recent error over median reference error (autoencoders);
- regime-occupancy shift: total-variation distance between the two occupancy vectors.

Each test reports its value, its threshold and whether it tripped; ``drift`` is True when any did.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

EPS = 1e-4


@dataclass
class DriftThresholds:
    psi: float = 0.25            # a feature has drifted when its PSI exceeds this (0.25: "major shift")
    psi_share: float = 0.25      # feature drift when more than this share of features drifted
    mmd_alpha: float = 0.01      # significance level of the MMD permutation test
    mmd_samples: int = 500       # rows drawn from each side for the MMD test
    mmd_permutations: int = 200
    mmd_min_samples: int = 20    # a stretch of the reference is used in the null with this many latents
    stride: int = 8              # latents: every stride-th end bar
    recon_ratio: float = 1.5     # median reconstruction error, recent / reference
    occupancy_tv: float = 0.3    # total-variation distance between regime occupancies

    @classmethod
    def from_dict(cls, values) -> "DriftThresholds":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in names})


@dataclass
class DriftSample:
    """features: (n, F) scaled rows; latents: (m, D) with their regime ``latent_labels`` (m,);
    recon_error: (m,) or None; occupancy: (K,) share of each regime over all selected windows."""

    features: np.ndarray
    latents: np.ndarray
    occupancy: np.ndarray
    recon_error: np.ndarray | None = None
    latent_labels: np.ndarray | None = None
    latent_time: np.ndarray | None = None  # (m,) int64 ns end-bar times
    meta: dict = field(default_factory=dict)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"features": self.features, "latents": self.latents, "occupancy": self.occupancy}
        for name in ("recon_error", "latent_labels", "latent_time"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "DriftSample":
        opt = {k: np.asarray(arrays[k]) for k in ("recon_error", "latent_labels", "latent_time") if k in arrays}
        return cls(np.asarray(arrays["features"]), np.asarray(arrays["latents"]), np.asarray(arrays["occupancy"]), **opt)


def occupancy(labels: np.ndarray, n_regimes: int) -> np.ndarray:
    lab = np.asarray(labels)
    lab = lab[lab >= 0]
    counts = np.bincount(lab, minlength=n_regimes).astype(np.float64)[:n_regimes]
    return counts / max(counts.sum(), 1.0)


@torch.no_grad()
def reconstruction_errors(model: torch.nn.Module, x: np.ndarray, batch_size: int = 2048) -> np.ndarray | None:
    """Mean squared reconstruction error per window (B,), or None for a model without a decoder."""
    if not hasattr(model, "reconstruct"):
        return None
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
        flat = model._flat(xb)
        out.append(((model.reconstruct(xb) - flat) ** 2).mean(dim=(1, 2)).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def draw_sample(model, windows, latents, labels: np.ndarray, rows: np.ndarray, n_regimes: int, mode: str = "asset",
                max_rows: int = 5000, max_windows: int = 20000, seed: int = 0, stride: int = 8) -> DriftSample:
    """Sample of the windows selected by ``rows`` (bool over latent rows) and of their end-bar
    features; latents only from end bars on the ``stride`` grid."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(rows)
    occ = occupancy(labels[idx], n_regimes)
    thin = idx[latents.end_idx[idx] % max(int(stride), 1) == 0]
    feats = windows.X[latents.asset_idx[idx], latents.end_idx[idx]]
    if len(feats) > max_rows:
        feats = feats[np.sort(rng.choice(len(feats), max_rows, replace=False))]
    pick = thin if len(thin) <= max_windows else np.sort(rng.choice(thin, max_windows, replace=False))
    z = latents.z[pick]
    times = np.asarray(windows.index[latents.end_idx[pick]].as_unit("ns").asi8, dtype=np.int64)
    if mode == "market":
        x = windows.gather_market(latents.end_idx[pick])
    else:
        x = windows.gather(latents.asset_idx[pick], latents.end_idx[pick])
    return DriftSample(feats.astype(np.float32), z.astype(np.float32), occ, reconstruction_errors(model, x),
                       labels[pick].astype(np.int64), times, {"n_windows": int(len(idx))})


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> np.ndarray:
    """Population stability index per column, on the reference's quantile bins."""
    ref, cur = np.atleast_2d(reference.T).T, np.atleast_2d(recent.T).T
    out = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        edges = np.unique(np.quantile(ref[:, j], np.linspace(0, 1, bins + 1)[1:-1]))
        p = np.bincount(np.searchsorted(edges, ref[:, j], side="right"), minlength=len(edges) + 1) / len(ref)
        q = np.bincount(np.searchsorted(edges, cur[:, j], side="right"), minlength=len(edges) + 1) / max(len(cur), 1)
        p, q = np.maximum(p, EPS), np.maximum(q, EPS)
        out[j] = float(np.sum((q - p) * np.log(q / p)))
    return out


def ks_statistic(reference: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic per column (largest gap between the two ECDFs)."""
    out = np.empty(reference.shape[1])
    for j in range(reference.shape[1]):
        a, b = np.sort(reference[:, j]), np.sort(recent[:, j])
        grid = np.concatenate([a, b])
        out[j] = float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))
    return out


def _mmd2_from_kernel(K: np.ndarray, in_x: np.ndarray) -> float:
    """Unbiased MMD^2 for a pooled kernel matrix and a membership mask (True: first sample)."""
    n, m = int(in_x.sum()), int((~in_x).sum())
    kxx = K[np.ix_(in_x, in_x)]
    kyy = K[np.ix_(~in_x, ~in_x)]
    kxy = K[np.ix_(in_x, ~in_x)]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def mmd_test(x: np.ndarray, y: np.ndarray, alpha: float = 0.01, max_samples: int = 500, n_permutations: int = 200,
             seed: int = 0) -> dict:
    """RBF-kernel MMD^2 between two samples with a permutation-test threshold and p-value."""
    rng = np.random.default_rng(seed)
    x = x if len(x) <= max_samples else x[rng.choice(len(x), max_samples, replace=False)]
    y = y if len(y) <= max_samples else y[rng.choice(len(y), max_samples, replace=False)]
    if len(x) < 2 or len(y) < 2:
        return {"mmd2": None, "threshold": None, "p_value": None, "drift": False, "n": [len(x), len(y)]}
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2.0 * z @ z.T, 0.0)
    off = sq[np.triu_indices(len(z), 1)]
    bandwidth2 = float(np.median(off[off > 0])) if (off > 0).any() else 1.0
    K = np.exp(-sq / bandwidth2)
    in_x = np.zeros(len(z), dtype=bool)
    in_x[: len(x)] = True
    stat = _mmd2_from_kernel(K, in_x)
    null = np.array([_mmd2_from_kernel(K, rng.permutation(in_x)) for _ in range(n_permutations)])
    threshold = float(np.quantile(null, 1.0 - alpha))
    p_value = float((1 + np.sum(null >= stat)) / (1 + n_permutations))
    return {"mmd2": stat, "threshold": threshold, "p_value": p_value, "drift": bool(stat > threshold),
            "bandwidth": float(np.sqrt(bandwidth2)), "n": [int(len(x)), int(len(y))]}


def _rbf_mmd2(x: np.ndarray, y: np.ndarray, bandwidth2: float) -> float:
    """Unbiased MMD^2 of two samples under exp(-|a - b|^2 / bandwidth2)."""
    z = np.concatenate([x, y])
    in_x = np.zeros(len(z), dtype=bool)
    in_x[: len(x)] = True
    sq = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2.0 * z @ z.T, 0.0)
    return _mmd2_from_kernel(np.exp(-sq / bandwidth2), in_x)


def mmd_block_test(ref: np.ndarray, ref_time: np.ndarray, recent: np.ndarray, span: int, alpha: float = 0.01,
                   max_samples: int = 500, n_blocks: int = 200, min_samples: int = 20, seed: int = 0) -> dict:
    """MMD^2 of recent vs reference latents against a block-permutation null (module docstring).

    ref_time: (n,) int64 times of the reference latents; span: length of the recent period in
    the same unit. Returns the statistic, threshold, p-value, bandwidth and the null's size.
    """
    rng = np.random.default_rng(seed)

    def sub(a):
        return a if len(a) <= max_samples else a[rng.choice(len(a), max_samples, replace=False)]

    x, y = sub(ref).astype(np.float64), sub(recent).astype(np.float64)
    if len(x) < 2 or len(y) < 2:
        return {"mmd2": None, "threshold": None, "p_value": None, "drift": False, "n": [len(x), len(y)]}
    z = np.concatenate([x, y])
    sq = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2.0 * z @ z.T, 0.0)
    off = sq[np.triu_indices(len(z), 1)]
    bandwidth2 = float(np.median(off[off > 0])) if (off > 0).any() else 1.0
    stat = _rbf_mmd2(x, y, bandwidth2)
    t0, t1 = int(ref_time.min()), int(ref_time.max())
    null = []
    if t1 - t0 > span:
        for s in rng.integers(t0, t1 - span, size=n_blocks):
            seg = (ref_time >= s) & (ref_time < s + span)
            if seg.sum() >= min_samples and (~seg).sum() >= min_samples:
                null.append(_rbf_mmd2(sub(ref[~seg]).astype(np.float64), sub(ref[seg]).astype(np.float64), bandwidth2))
    if len(null) < 20:  # too short a reference for blocks of this span: say so rather than guess
        return {"mmd2": stat, "threshold": None, "p_value": None, "drift": False, "bandwidth": float(np.sqrt(bandwidth2)),
                "n": [int(len(x)), int(len(y))], "n_null": len(null), "note": "reference too short for the block null"}
    null = np.asarray(null)
    threshold = float(np.quantile(null, 1.0 - alpha))
    return {"mmd2": stat, "threshold": threshold, "p_value": float((1 + np.sum(null >= stat)) / (1 + len(null))),
            "drift": bool(stat > threshold), "bandwidth": float(np.sqrt(bandwidth2)), "n": [int(len(x)), int(len(y))],
            "n_null": int(len(null)), "null": "block"}


def latent_mmd(reference: DriftSample, recent: DriftSample, th: DriftThresholds, seed: int = 0) -> dict:
    """The latent MMD test: block null when both samples carry times, else row permutation."""
    if reference.latent_time is not None and recent.latent_time is not None and len(recent.latent_time):
        span = int(recent.latent_time.max() - recent.latent_time.min()) + 1
        res = mmd_block_test(reference.latents, reference.latent_time, recent.latents, span, th.mmd_alpha,
                             th.mmd_samples, th.mmd_permutations, th.mmd_min_samples, seed)
    else:
        res = mmd_test(reference.latents, recent.latents, th.mmd_alpha, th.mmd_samples, th.mmd_permutations, seed)
        res["null"] = "row permutation"
    return {**res, "alpha": th.mmd_alpha}


def assess(reference: DriftSample, recent: DriftSample, thresholds: DriftThresholds | None = None,
           feature_names: list[str] | None = None, seed: int = 0) -> dict:
    """Every drift test of ``recent`` against ``reference``; JSON-able, with ``drift`` and ``reasons``."""
    th = thresholds or DriftThresholds()
    names = feature_names or [f"f{j}" for j in range(reference.features.shape[1])]
    report: dict = {"n_reference_rows": int(len(reference.features)), "n_recent_rows": int(len(recent.features))}
    reasons = []
    if len(recent.features) >= 2:
        p, ks = psi(reference.features, recent.features), ks_statistic(reference.features, recent.features)
        share = float(np.mean(p > th.psi))
        report["features"] = {"psi": dict(zip(names, p.round(4).tolist())), "ks": dict(zip(names, ks.round(4).tolist())),
                              "share_drifted": share, "threshold_psi": th.psi, "threshold_share": th.psi_share,
                              "drift": bool(share > th.psi_share)}
        if report["features"]["drift"]:
            worst = [names[j] for j in np.argsort(-p)[:3]]
            reasons.append(f"{share:.0%} of features have PSI > {th.psi} (worst: {', '.join(worst)})")
    mmd = latent_mmd(reference, recent, th, seed)
    report["latent_mmd"] = mmd
    if mmd["drift"]:
        reasons.append(f"latent MMD^2 {mmd['mmd2']:.4f} above its {mmd['null']}-permutation threshold "
                       f"{mmd['threshold']:.4f} (p = {mmd['p_value']:.3f})")
    if reference.recon_error is not None and recent.recon_error is not None and len(recent.recon_error):
        ratio = float(np.median(recent.recon_error) / max(np.median(reference.recon_error), 1e-12))
        report["reconstruction"] = {"ratio_of_medians": ratio, "threshold": th.recon_ratio,
                                    "reference_median": float(np.median(reference.recon_error)),
                                    "recent_median": float(np.median(recent.recon_error)),
                                    "drift": bool(ratio > th.recon_ratio)}
        if ratio > th.recon_ratio:
            reasons.append(f"reconstruction error {ratio:.2f}x the training level (threshold {th.recon_ratio})")
    k = max(len(reference.occupancy), len(recent.occupancy))
    ref_occ = np.pad(reference.occupancy, (0, k - len(reference.occupancy)))
    cur_occ = np.pad(recent.occupancy, (0, k - len(recent.occupancy)))
    tv = float(0.5 * np.abs(ref_occ - cur_occ).sum())
    report["occupancy"] = {"reference": ref_occ.round(4).tolist(), "recent": cur_occ.round(4).tolist(),
                           "total_variation": tv, "threshold": th.occupancy_tv, "drift": bool(tv > th.occupancy_tv)}
    if tv > th.occupancy_tv:
        reasons.append(f"regime occupancy moved by {tv:.2f} in total variation (threshold {th.occupancy_tv})")
    report["drift"] = bool(reasons)
    report["reasons"] = reasons
    return report
