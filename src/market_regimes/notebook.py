"""What the notebooks in ``notebooks/`` share: composing a job's Hydra config from any working
directory, the choice between the embedded synthetic market and real data, and where outputs go.

Environment variables:

* ``MARKET_REGIMES_NOTEBOOK_DATA=real``: use the real files when the real-data folder exists
  (otherwise, and by default, the synthetic market with small settings);
* ``MARKET_REGIMES_REAL_DATA``: that folder (default ``<repo>/../shared/data/real``);
* ``MARKET_REGIMES_ARTIFACTS``: where runs and bundles go (default ``<repo>/artifacts/notebooks``,
  git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "MARKET_REGIMES_NOTEBOOK_DATA"
REAL_DATA_ENV = "MARKET_REGIMES_REAL_DATA"
ARTIFACTS_ENV = "MARKET_REGIMES_ARTIFACTS"


def repo_root() -> Path:
    """The checkout holding ``config/`` (the package is installed from it with ``pip install -e .``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "config").is_dir():
        raise FileNotFoundError(f"no config/ folder next to the package at {root}; install it with pip install -e .")
    return root


def real_data_dir() -> Path:
    return Path(os.environ.get(REAL_DATA_ENV) or repo_root().parent / "shared" / "data" / "real")


def use_real_data() -> bool:
    """True when ``MARKET_REGIMES_NOTEBOOK_DATA=real`` is set and the real-data folder exists."""
    return os.environ.get(DATA_ENV, "").strip().lower() == "real" and real_data_dir().is_dir()


def real_file(name: str) -> str:
    """Absolute path of one file of the real-data folder (named so configs work from any directory)."""
    path = real_data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; see {real_data_dir() / 'SOURCES.md'}")
    return str(path)


def artifacts_dir() -> Path:
    return Path(os.environ.get(ARTIFACTS_ENV) or repo_root() / "artifacts" / "notebooks").resolve()


def compose_config(config_name: str, overrides=(), run_name: str | None = None):
    """``hydra.compose`` of ``config/<config_name>.yaml`` with ``overrides``; bundles go under
    :func:`artifacts_dir` and the run directory is ``artifacts_dir()/runs/<run_name>``."""
    from hydra import compose, initialize_config_dir

    art = artifacts_dir()
    run_dir = art / "runs" / (run_name or config_name)
    with initialize_config_dir(config_dir=str(repo_root() / "config"), version_base="1.3"):
        return compose(config_name, overrides=[f"paths.artifacts_dir={art}", f"paths.run_dir={run_dir}", *overrides])
