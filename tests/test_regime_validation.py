"""Forecast validation of regime models: held-out split, choice of K and of the jump penalty."""

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from market_regimes.regimes import JumpRegimes, KMeansRegimes, select_n_regimes
from market_regimes.regimes.clusterers import AUTO_PENALTY_FACTOR, PENALTY_FACTORS
from market_regimes.regimes.validation import choose_by_forecast, forecast_targets, holdout_split


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(1):
        yield


def persistent(k=3, d=4, n_seq=3, length=1500, p_stay=0.99, sep=4.0, seed=0):
    """Sequences of a sticky k-state chain around well separated centres, unit noise."""
    rng = np.random.default_rng(seed)
    centres = sep * rng.normal(size=(k, d)) / np.sqrt(2)
    states = []
    for _ in range(n_seq):
        s = [int(rng.integers(k))]
        for _ in range(length - 1):
            s.append(s[-1] if rng.random() < p_stay else int(rng.integers(k)))
        states.append(s)
    states = np.concatenate(states)
    return centres[states] + rng.normal(size=(len(states), d)), states, np.full(n_seq, length)


def test_holdout_is_the_tail_of_every_sequence_and_targets_stay_inside():
    lengths = np.array([10, 20])
    held, heads = holdout_split(lengths, 0.3)
    assert heads.tolist() == [7, 14]
    assert held.tolist() == [False] * 7 + [True] * 3 + [False] * 14 + [True] * 6
    rows = forecast_targets(lengths, held, 2)
    assert rows.tolist() == [7, 24, 25, 26, 27]  # row 8 + 2 would leave the first sequence


def test_forecast_choice_finds_the_planted_number_of_regimes():
    X, _, lengths = persistent(p_stay=0.998)  # regimes of ~500 rows: predictable 64 rows ahead
    k, table = choose_by_forecast([2, 3, 4, 5, 6], lambda n: KMeansRegimes(n, n_init=3, random_state=0), X, lengths)
    assert k == 3 and len(table) == 5
    errors = {r["candidate"]: r["forecast_error"] for r in table}
    assert errors[2] > errors[3]  # merging two regimes forecasts worse


def test_too_little_held_out_data_keeps_the_fallback():
    X, _, _ = persistent(n_seq=1, length=300)
    with pytest.warns(UserWarning, match="forecast validation"):
        k, table = choose_by_forecast([2, 3], lambda n: KMeansRegimes(n, random_state=0), X, np.array([300]),
                                      horizon=64, fallback=3)
    assert k == 3 and table == []


def test_validated_jump_penalty_is_a_grid_multiple_and_scales_with_the_data():
    X, truth, lengths = persistent(k=2, p_stay=0.995, sep=2.5, seed=2)
    jm = JumpRegimes(2, jump_penalty="forecast", n_init=2, random_state=0).fit(X, lengths)
    ratios = [jm.jump_penalty_ / (f * 1.0) for f in PENALTY_FACTORS]
    sigma2 = JumpRegimes(2, n_init=2, random_state=0).fit(X, lengths).jump_penalty_ / AUTO_PENALTY_FACTOR
    assert any(r == pytest.approx(sigma2, rel=1e-6) for r in ratios)
    assert len(jm.penalty_validation_) == len(PENALTY_FACTORS)
    scaled = JumpRegimes(2, jump_penalty="forecast", n_init=2, random_state=0).fit(3.0 * X, lengths)
    assert scaled.jump_penalty_ == pytest.approx(9.0 * jm.jump_penalty_)


def test_forecast_selection_in_select_n_regimes():
    X, _, lengths = persistent(seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = select_n_regimes(X, lengths, lambda k: JumpRegimes(k, n_init=2, random_state=0), k_range=(2, 5),
                               criterion="forecast", random_state=0)
    assert res.best_k == 3 and res.criterion == "forecast"
    assert {"forecast_error", "forecast_excess_se"} <= set(res.table.columns)
