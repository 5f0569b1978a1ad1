"""Asset groups and a market map: cluster assets by behaviour and by their partial-correlation graph (Hydra).

    python scripts/cluster_assets.py                     # synthetic market with planted asset groups
    python scripts/cluster_assets.py data=files data.path=../shared/data/real/binance_spot_1h_36sym_2017_2024.parquet
"""

import hydra
from omegaconf import DictConfig

from market_regimes.analysis.assets import run_cluster_assets
from market_regimes.cli import user_errors_exit


@hydra.main(version_base="1.3", config_path="../config", config_name="cluster_assets")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    written, summary = run_cluster_assets(cfg)
    print(summary)
    for name, path in written.items():
        print(f"{name} written to {path}")


if __name__ == "__main__":
    main()
