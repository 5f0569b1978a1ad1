"""Mine pre-move patterns: indicator shapes before big moves, with hit rates vs base rates (Hydra).

    python scripts/mine_patterns.py
    python scripts/mine_patterns.py data=files data.path=../shared/data/real/binance_spot_1h_36sym_2017_2024.parquet
"""

import hydra
from omegaconf import DictConfig

from market_regimes.analysis.pattern_report import run_mine_patterns
from market_regimes.cli import user_errors_exit


@hydra.main(version_base="1.3", config_path="../config", config_name="mine_patterns")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    out = run_mine_patterns(cfg)
    print(f"pattern mining outputs in {out}")


if __name__ == "__main__":
    main()
