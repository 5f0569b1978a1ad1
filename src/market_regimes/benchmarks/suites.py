"""Benchmark suites by name: ``suite.name`` in config/suite/*.yaml -> the function that runs it.

A suite function takes the composed config and returns the path of its report. Add a suite by
adding its module function here and a config file in config/suite/.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from market_regimes.errors import ConfigError

SUITES: dict[str, str] = {
    "perf": "market_regimes.benchmarks.perf:run_perf",
    "regimes": "market_regimes.benchmarks.regime_suites:run_regimes",
}


def run_suite(cfg) -> Path:
    """Run the suite named by ``cfg.suite.name``."""
    name = cfg.suite.get("name")
    if name not in SUITES:
        raise ConfigError(f"unknown benchmark suite.name={name!r}; known: {', '.join(sorted(SUITES))}")
    module, func = SUITES[name].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
