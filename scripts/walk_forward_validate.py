"""Walk-forward validation (Hydra): per fold refit on the past, label the future causally.

    python scripts/walk_forward_validate.py
    python scripts/walk_forward_validate.py experiment=real_btc_eth_bnb walk_forward.first_train_end=2022-12-31
"""

import hydra
from omegaconf import DictConfig

from market_regimes.cli import user_errors_exit
from market_regimes.walk_forward import print_walk_forward, run_walk_forward


@hydra.main(version_base="1.3", config_path="../config", config_name="walk_forward")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    print_walk_forward(run_walk_forward(cfg))


if __name__ == "__main__":
    main()
