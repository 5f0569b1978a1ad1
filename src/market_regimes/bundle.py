"""The artifact bundle: everything inference and monitoring need, as data (no pickle).

Layout of one bundle directory::

    manifest.json       format, package version, symbols, interval, features, training period,
                        data source and fingerprint, sha256 of every other file
    model.safetensors   encoder + decoder weights
    model.json          the model's constructor arguments
    scaler.json         global scaler (centre, scale, clip)
    clusterer.json/.npz regime model parameters
    config.yaml         the resolved run configuration
    metrics.json        training metrics (losses, model selection, agreement with truth)
    regime_stats.json   per-asset regime statistics (in-sample and out-of-sample parts)
    reference.npz       drift reference: a sample of training-period scaled features, latents,
                        reconstruction errors and the regime occupancy (market_regimes.drift)

A bundle is written into a temporary directory and renamed into place, so a crash never leaves a
half bundle; ``<artifacts>/latest`` is then re-pointed atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from market_regimes import __version__
from market_regimes.errors import MarketRegimesError
from market_regimes.regimes import clusterer_from_state
from market_regimes.serialize import json_default
from market_regimes.windows import GlobalScaler

FORMAT = "market-regimes-bundle/1"


class BundleError(MarketRegimesError):
    """A missing, corrupt or incompatible bundle."""


@dataclass
class Bundle:
    """A verified bundle. ``model`` is the full ``RegimeAutoencoder`` (``load_bundle``) or, from
    ``load_bundle(..., encoder_only=True)``, just the encoder ``nn.Module`` (no Lightning import)."""

    path: Path
    manifest: dict
    model: torch.nn.Module
    scaler: GlobalScaler
    clusterer: object
    config: dict
    metrics: dict
    regime_stats: dict
    reference: dict | None = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=json_default))


def _split_state(state: dict) -> tuple[dict, dict]:
    """Separate numpy arrays (-> npz) from JSON-able values."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    plain = {k: v for k, v in state.items() if k not in arrays}
    return plain, arrays


def save_bundle(artifacts_dir: str | Path, *, model, scaler: GlobalScaler, clusterer,
                config: dict, manifest: dict, metrics: dict, regime_stats: dict, name: str | None = None,
                update_latest: bool = True, reference: dict | None = None) -> Path:
    """Write a bundle under ``<artifacts_dir>/bundles/<name>`` atomically; return its path."""
    from omegaconf import OmegaConf  # here, not at the top: loading a bundle does not need it

    root = Path(artifacts_dir)
    bundles = root / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    name = name or time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    final = bundles / name
    tmp = bundles / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        _write_json(tmp / "model.json", dict(model.hparams))
        _write_json(tmp / "scaler.json", scaler.to_state())
        plain, arrays = _split_state(clusterer.to_state())
        _write_json(tmp / "clusterer.json", plain)
        np.savez(tmp / "clusterer.npz", **arrays)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        _write_json(tmp / "metrics.json", metrics)
        _write_json(tmp / "regime_stats.json", regime_stats)
        if reference is not None:
            np.savez(tmp / "reference.npz", **reference)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        _write_json(tmp / "manifest.json", {"format": FORMAT, "package_version": __version__,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            **manifest, "files": files})
        if final.exists():
            raise BundleError(f"bundle {final} already exists")
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if update_latest:
        point_latest(root, final)
    return final


def point_latest(artifacts_dir: str | Path, bundle: str | Path) -> Path:
    """Atomically re-point ``<artifacts_dir>/latest`` (a relative symlink) at ``bundle``."""
    root = Path(artifacts_dir)
    link = root / "latest"
    tmp = root / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(Path(bundle).resolve(), root.resolve()), tmp)
    os.replace(tmp, link)
    return link


def resolve_bundle_path(path: str | Path) -> Path:
    """A bundle directory, or an artifacts directory whose ``latest`` points at one."""
    p = Path(path)
    if (p / "manifest.json").exists():
        return p.resolve()
    if (p / "latest" / "manifest.json").exists():
        return (p / "latest").resolve()
    if not p.exists():
        raise BundleError(f"no bundle at {p}: train one first (python scripts/train.py) or pass --artifacts PATH")
    raise BundleError(f"{p} is not a bundle (no manifest.json) and has no 'latest' bundle; train one first")


def load_bundle(path: str | Path, encoder_only: bool = False) -> Bundle:
    """Load and verify a bundle; any missing, corrupt or incompatible part raises BundleError."""
    root = resolve_bundle_path(path)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise BundleError(f"corrupt bundle {root}: manifest.json unreadable ({err})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"incompatible bundle {root}: format {manifest.get('format')!r}, this version reads {FORMAT}")
    for fname, digest in manifest.get("files", {}).items():
        f = root / fname
        if not f.exists():
            raise BundleError(f"corrupt bundle {root}: {fname} is missing")
        if _sha256(f) != digest:
            raise BundleError(f"corrupt bundle {root}: {fname} does not match its checksum")
    try:
        hparams = json.loads((root / "model.json").read_text())
        weights = load_file(root / "model.safetensors")
        model = _encoder(hparams, weights) if encoder_only else _autoencoder(hparams, weights)
        model.eval()
        scaler = GlobalScaler.from_state(json.loads((root / "scaler.json").read_text()))
        state = json.loads((root / "clusterer.json").read_text())
        with np.load(root / "clusterer.npz") as npz:
            state.update({k: npz[k] for k in npz.files})
        clusterer = clusterer_from_state(state)
        # written by OmegaConf.to_yaml, i.e. plain YAML: read without importing OmegaConf (~0.15 s)
        config = yaml.safe_load((root / "config.yaml").read_text())
        metrics = json.loads((root / "metrics.json").read_text())
        stats = json.loads((root / "regime_stats.json").read_text())
        reference = None
        if (root / "reference.npz").exists():
            with np.load(root / "reference.npz") as npz:
                reference = {k: npz[k] for k in npz.files}
    except MarketRegimesError:
        raise
    except Exception as err:  # any parse/shape mismatch means the bundle cannot be used
        raise BundleError(f"incompatible or corrupt bundle {root}: {type(err).__name__}: {err}") from None
    return Bundle(root, manifest, model, scaler, clusterer, config, metrics, stats, reference)


def _autoencoder(hparams: dict, weights: dict) -> torch.nn.Module:
    if hparams.get("encoder") == "features":
        return _encoder(hparams, weights)
    from market_regimes.model import RegimeAutoencoder

    model = RegimeAutoencoder(**hparams)
    model.load_state_dict(weights)
    return model


def _encoder(hparams: dict, weights: dict) -> torch.nn.Module:
    """The plain encoder of a ``RegimeAutoencoder`` from its constructor arguments and weights."""
    from market_regimes.model.networks import FeatureEmbedding, make_encoder

    if hparams.get("encoder") == "features":
        model = FeatureEmbedding(**hparams)
        model.load_state_dict(weights)
        return model

    encoder = make_encoder(hparams["encoder"], hparams["n_features"], hparams["latent_dim"], hparams["window"],
                           hidden=hparams.get("hidden", 64), n_layers=hparams.get("n_layers", 3),
                           dropout=hparams.get("dropout", 0.1), **(hparams.get("encoder_kwargs") or {}))
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")})
    return encoder
