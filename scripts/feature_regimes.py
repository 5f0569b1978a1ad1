"""Feature-regime baseline: k-means regimes on a few market features, k table, characteristics, plots (Hydra).

    python scripts/feature_regimes.py
    python scripts/feature_regimes.py experiment=feature_baseline_real
"""

import hydra
from omegaconf import DictConfig

from market_regimes.analysis.feature_regimes import format_report, run_feature_regimes
from market_regimes.cli import user_errors_exit


@hydra.main(version_base="1.3", config_path="../config", config_name="feature_regimes")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    result = run_feature_regimes(cfg)
    print(format_report(result))
    for path in result.files:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
