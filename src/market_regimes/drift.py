"""Drift: how far recent data has moved from what a model was fitted on.

A :class:`DriftSample` holds what the tests compare, drawn from a set of bars: scaled feature rows,
latents, reconstruction errors and regime occupancy. The training-period sample is the model's
reference (stored in its bundle); ``assess(reference, recent, thresholds)`` runs every test:

- per-feature PSI (deciles of the reference) and two-sample Kolmogorov-Smirnov statistic;
- MMD between reference and recent latents, RBF kernel with the median-distance bandwidth of
  the pooled sample, and a permutation test: the threshold is the (1 - alpha) quantile of the
  statistic under random relabelling of the pooled sample, so neither width nor cut-off is fixed;
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
    recon_ratio: float = 1.5     # median reconstruction error, recent / reference
    occupancy_tv: float = 0.3    # total-variation distance between regime occupancies

    @classmethod
    def from_dict(cls, values) -> "DriftThresholds":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in names})


@dataclass
class DriftSample:
    """features: (n, F) scaled rows; latents: (m, D); recon_error: (m,) or None; occupancy: (K,)."""

    features: np.ndarray
    latents: np.ndarray
    occupancy: np.ndarray
    recon_error: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"features": self.features, "latents": self.latents, "occupancy": self.occupancy}
        if self.recon_error is not None:
            out["recon_error"] = self.recon_error
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "DriftSample":
        return cls(np.asarray(arrays["features"]), np.asarray(arrays["latents"]), np.asarray(arrays["occupancy"]),
                   np.asarray(arrays["recon_error"]) if "recon_error" in arrays else None)


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
                max_rows: int = 5000, max_windows: int = 2000, seed: int = 0) -> DriftSample:
    """Sample of the windows selected by ``rows`` (bool over latent rows) and of their end-bar features."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(rows)
    occ = occupancy(labels[idx], n_regimes)
    feats = windows.X[latents.asset_idx[idx], latents.end_idx[idx]]
    if len(feats) > max_rows:
        feats = feats[np.sort(rng.choice(len(feats), max_rows, replace=False))]
    pick = idx if len(idx) <= max_windows else np.sort(rng.choice(idx, max_windows, replace=False))
    z = latents.z[pick]
    if mode == "market":
        x = windows.gather_market(latents.end_idx[pick])
    else:
        x = windows.gather(latents.asset_idx[pick], latents.end_idx[pick])
    return DriftSample(feats.astype(np.float32), z.astype(np.float32), occ, reconstruction_errors(model, x),
                       {"n_windows": int(len(idx))})


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
    mmd = mmd_test(reference.latents, recent.latents, th.mmd_alpha, th.mmd_samples, th.mmd_permutations, seed)
    mmd["alpha"] = th.mmd_alpha
    report["latent_mmd"] = mmd
    if mmd["drift"]:
        reasons.append(f"latent MMD^2 {mmd['mmd2']:.4f} above its permutation threshold {mmd['threshold']:.4f} "
                       f"(p = {mmd['p_value']:.3f})")
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
