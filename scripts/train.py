"""Train the regime model and write a bundle (Hydra).

    python scripts/train.py
    python scripts/train.py data=files data.path=../shared/data/real/binance_spot_1h_36sym_2017_2024.parquet data.symbols=[BTCUSDT,ETHUSDT,BNBUSDT]
    python scripts/train.py -m model=conv,gru cluster=kmeans,jump
"""

import hydra
from omegaconf import DictConfig

from market_regimes.cli import user_errors_exit
from market_regimes.training import objective_value, print_summary, run_training


@hydra.main(version_base="1.3", config_path="../config", config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    result = run_training(cfg)
    print_summary(result)
    return objective_value(result, cfg.objective)


if __name__ == "__main__":
    main()
