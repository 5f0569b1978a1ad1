"""Where benchmark reports go: the run directory (JSON and markdown) and, when asked, a committed
copy in the checkout (``docs/PERFORMANCE.md``, ``docs/BENCHMARKS.md``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from market_regimes.serialize import json_default


def repo_root() -> Path:
    """The checkout holding ``config/`` and ``scripts/`` (Hydra's config source when running)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.path.startswith("file://"):
                return Path(source.path.removeprefix("file://")).resolve().parent
    except ValueError:  # no Hydra run (called from Python)
        pass
    return Path(__file__).resolve().parents[3]


def command_line(default: str) -> str:
    """The command as typed (Hydra's overrides), or the suite's documented command."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra run (called from Python)
        return default
    return "python scripts/benchmark.py " + " ".join(overrides) if overrides else default


def write_report(run_dir: Path, report: dict, markdown_name: str, render: Callable[[dict], str],
                 indent: int = 2) -> Path:
    """``report.json`` and the rendered markdown in ``run_dir``; returns the markdown path.
    Called after every section too, so partial results survive a failure later on."""
    (run_dir / "report.json").write_text(json.dumps(report, indent=indent, default=json_default))
    md = run_dir / markdown_name
    md.write_text(render(report))
    return md


def publish(src: Path, dest: str | None) -> Path | None:
    """Copy ``src`` to ``dest`` (relative paths: from the checkout's root); None when unset."""
    if not dest:
        return None
    path = Path(dest)
    path = path if path.is_absolute() else repo_root() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, path)
    print(f"copied to {path}")
    return path
