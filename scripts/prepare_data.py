"""Build the data -> features -> windows stage and print a summary (Hydra).

    python scripts/prepare_data.py
    python scripts/prepare_data.py data=files data.path=../shared/data/real/binance_spot_1h_36sym_2017_2024.parquet
"""

import hydra
from omegaconf import DictConfig

from market_regimes.cli import user_errors_exit
from market_regimes.pipeline import run_prepare


@hydra.main(version_base="1.3", config_path="../config", config_name="prepare")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    out = run_prepare(cfg)
    print(f"summary written to {out}")


if __name__ == "__main__":
    main()
