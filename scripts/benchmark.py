"""Run a benchmark suite and write its report (Hydra).

    python scripts/benchmark.py suite=perf          # performance and scale, writes docs/PERFORMANCE.md
    python scripts/benchmark.py suite=perf_quick    # the reduced version CI runs
    python scripts/benchmark.py suite=regimes       # regime recovery and skill vs the anchors, writes docs/BENCHMARKS.md
    python scripts/benchmark.py suite=regimes_quick # its reduced version (CI)
"""

import hydra
from omegaconf import DictConfig

from market_regimes.benchmarks.suites import run_suite
from market_regimes.cli import user_errors_exit


@hydra.main(version_base="1.3", config_path="../config", config_name="benchmark")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    out = run_suite(cfg)
    print(f"report written to {out}")


if __name__ == "__main__":
    main()
