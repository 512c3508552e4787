"""CPA's solver and orientation: the factored GW matches dense solvers, the arm term breaks the
mirror ambiguity that fools plain GW, and few-shot labels never make the transfer worse."""

import numpy as np
import ot
import pytest
import torch

from agents.pearl.cpa import (
    GWConfig,
    agreement,
    calibrate,
    cost_matrix,
    cross_task_transfer,
    factored,
    gw_coupling,
    label_accuracy,
    segment_features,
    transfer_labels,
)
from agents.pearl.few_shot import fit_few_shot, orientation_probability, stacking_weight, transfer_share
from agents.pearl.gw import FactoredCost, fused_gw, gw_loss, sinkhorn
from agents.pearl.mirror import mirror_pair
from embodied.reward_models import RewardModel, RewardTrainConfig, preference_accuracy, train_reward_model
from embodied.teacher import Preferences, ScriptedTeacher, sample_pairs


def test_sinkhorn_matches_pot(rng):
    cost = torch.as_tensor(rng.random((40, 30)))
    p, q = torch.full((40,), 1 / 40, dtype=torch.float64), torch.full((30,), 1 / 30, dtype=torch.float64)
    ours, state = sinkhorn(cost, p, q, 0.05)
    ref = ot.sinkhorn(p, q, cost, 0.05, numItermax=10_000, stopThr=1e-12)
    assert float((ours.double() - ref).abs().sum()) < 1e-4
    warm, _ = sinkhorn(cost + 0.01 * torch.as_tensor(rng.random((40, 30))), p, q, 0.05, state)  # warm start, new cost
    np.testing.assert_allclose(warm.sum(0).double().numpy(), q.numpy(), rtol=1e-3)


def test_factored_gw_matches_pot_dense_solver(rng):
    x, y = torch.as_tensor(rng.normal(size=(50, 3))), torch.as_tensor(rng.normal(size=(45, 2)))
    raw1, raw2 = FactoredCost.squared_euclidean(x), FactoredCost.squared_euclidean(y)
    c1, c2 = raw1.scaled(1 / raw1.mean()), raw2.scaled(1 / raw2.mean())
    d1, d2 = c1.dense(), c2.dense()
    np.testing.assert_allclose(d1.numpy(), (torch.cdist(x, x) ** 2 / raw1.mean()).numpy(), atol=1e-9)
    p, q = torch.full((50,), 1 / 50, dtype=torch.float64), torch.full((45,), 1 / 45, dtype=torch.float64)
    ours = fused_gw(c1, c2, eps=0.05, tol=1e-7, max_iter=300)
    ref = ot.gromov.entropic_gromov_wasserstein(
        d1, d2, p, q, "square_loss", epsilon=0.05, solver="PGD", max_iter=300, tol=1e-10
    )
    assert float((ours.plan - ref).abs().sum()) < 1e-2
    assert ours.gw_loss == pytest.approx(
        float(ot.gromov.gwloss(*ot.gromov.init_matrix(d1, d2, p, q), ours.plan)), rel=1e-4
    )
    assert gw_loss(c1, c2, ref) == pytest.approx(
        float(ot.gromov.gwloss(*ot.gromov.init_matrix(d1, d2, p, q), ref)), rel=1e-6
    )


def test_svd_factors_of_a_distance_matrix_give_the_dense_labels(rng):
    """Rank-32 factors of Euclidean segment costs: the same transferred labels as the dense POT solve."""
    src, tgt = mirror_pair(rng, n=150)
    c_src, c_tgt = cost_matrix(segment_features(src)), cost_matrix(segment_features(tgt))
    dense = gw_coupling(c_src, c_tgt, GWConfig(method="entropic", epsilon=5e-3))
    fast = fused_gw(factored(c_src, 32), factored(c_tgt, 32), 5e-3).plan
    first, second = sample_pairs(150, 500, rng)
    prefs = ScriptedTeacher().label(src.rewards, *sample_pairs(150, 800, rng))
    assert (
        agreement(transfer_labels(dense, prefs, first, second)[0], transfer_labels(fast, prefs, first, second)[0])
        > 0.95
    )


def test_a_plan_that_failed_is_one_error_line_not_uninformative_labels(rng):
    """With too small an epsilon POT's solver returns a plan of zeros (every transferred label 0.5, a silent
    accuracy of 0.5) and ours NaN (a FloatingPointError traceback): both are one EmbodiedError naming --gw.epsilon."""
    from agents.pearl.gw import GWDiverged
    from embodied.errors import EmbodiedError

    src, tgt = mirror_pair(rng, n=40)
    c_src, c_tgt = cost_matrix(segment_features(src)), cost_matrix(segment_features(tgt))
    with pytest.warns(UserWarning), pytest.raises(EmbodiedError, match="at --gw.epsilon 1e-12; raise it"):
        gw_coupling(c_src, c_tgt, GWConfig(method="entropic", epsilon=1e-12))
    with pytest.raises(GWDiverged):
        fused_gw(factored(c_src, 8), factored(c_tgt, 8), 1e-12)
    assert issubclass(GWDiverged, FloatingPointError)
    assert float(gw_coupling(c_src, c_tgt, GWConfig(method="entropic", epsilon=5e-3)).sum()) == pytest.approx(
        1, abs=1e-2
    )


@pytest.fixture
def mirrored(rng):
    src, tgt = mirror_pair(rng)
    teacher = ScriptedTeacher()
    source = teacher.label(src.rewards, *sample_pairs(len(src), 2000, rng))
    first, second = sample_pairs(len(tgt), 1000, rng)
    return src, tgt, source, first, second, teacher.label(tgt.rewards, first, second).label


def test_plain_gw_mirrors_the_constructed_pair_and_the_arm_term_orients_it(mirrored):
    src, tgt, source, first, second, truth = mirrored
    old = cross_task_transfer(src, source, tgt, first, second, GWConfig(method="entropic"))  # the previous default
    plain = cross_task_transfer(src, source, tgt, first, second, GWConfig(alpha=1.0))
    fused = cross_task_transfer(src, source, tgt, first, second)  # the default: fused GW, several starts
    assert label_accuracy(old.labels, truth) < 0.25
    assert label_accuracy(plain.labels, truth) < 0.25
    assert label_accuracy(fused.labels, truth) > 0.75
    assert fused.confidence["structure_agreement"] < 0.5  # reported: plain GW would have mirrored it


def test_calibration_flips_only_a_transfer_the_shots_show_mirrored(rng):
    truth = rng.integers(0, 2, 500).astype(float)
    shots = Preferences(np.arange(40), np.arange(40) + 1, truth[:40])
    right, a = calibrate(truth.copy(), truth[:40], shots)
    assert a > 0.9 and label_accuracy(right, truth) == 1.0
    flipped, a = calibrate(1 - truth, 1 - truth[:40], shots)
    assert a < 0.1 and label_accuracy(flipped, truth) == 1.0  # a mirrored transfer is turned round
    five = Preferences(np.arange(5), np.arange(5) + 1, truth[:5])
    two_of_five = truth[:5].copy()
    two_of_five[2:] = 1 - two_of_five[2:]  # 2 of 5 shots agree: weak evidence, the orientation stays
    kept, a = calibrate(truth.copy(), two_of_five, five)
    assert a < 0.5 and label_accuracy(kept, truth) == 1.0
    assert np.all(np.abs(kept - 0.5) <= abs(2 * a - 1) / 2 + 1e-12)  # a near-chance transfer carries little weight
    none_of_five, a = calibrate(1 - truth, 1 - truth[:5], five)  # 0 of 5 agree: P(mirrored) = 0.98
    assert label_accuracy(none_of_five, truth) == 1.0


@pytest.mark.parametrize("rule", ["stacking", "stacking-oriented"])
@pytest.mark.parametrize("alpha", [1.0, 0.9], ids=["mirrored-transfer", "good-transfer"])
def test_few_shot_never_worse_than_its_labels_alone(mirrored, rng, alpha, rule):
    src, tgt, source, first, second, truth = mirrored
    teacher = ScriptedTeacher()
    shots = teacher.label(tgt.rewards, *sample_pairs(len(tgt), 10, rng))
    held_first, held_second = sample_pairs(len(tgt), 1000, np.random.default_rng(7))
    held = teacher.label(tgt.rewards, held_first, held_second)

    def reward_accuracy(prefs):
        torch.manual_seed(0)
        model = RewardModel(39, 4, hidden=32)
        train_reward_model(model, tgt.observations, tgt.actions, prefs, RewardTrainConfig(epochs=30))
        return preference_accuracy(model, tgt.observations, tgt.actions, held)

    result = cross_task_transfer(src, source, tgt, first, second, GWConfig(alpha=alpha), shots=shots)
    model, choice = fit_few_shot(
        lambda: RewardModel(39, 4, hidden=32),
        tgt.observations,
        tgt.actions,
        Preferences(first, second, result.labels),
        shots,
        RewardTrainConfig(epochs=10),
        shot_epochs=30,
        rule=rule,
    )
    alone = reward_accuracy(shots)
    assert preference_accuracy(model, tgt.observations, tgt.actions, held) >= alone - 0.02, (alone, choice)


@pytest.mark.parametrize("rule", ["stacking", "stacking-oriented"])
def test_few_shot_weights_turn_off_an_inverted_transfer_and_keep_a_right_one(mirrored, rng, rule):
    """The weighting itself: shots expose a transfer model trained on mirrored labels."""
    src, tgt, source, first, second, truth = mirrored
    shots = ScriptedTeacher().label(tgt.rewards, *sample_pairs(len(tgt), 20, rng))
    held = ScriptedTeacher().label(tgt.rewards, *sample_pairs(len(tgt), 1000, np.random.default_rng(7)))

    def fit(labels):
        return fit_few_shot(
            lambda: RewardModel(39, 4, hidden=32),
            tgt.observations,
            tgt.actions,
            Preferences(first, second, labels),
            shots,
            RewardTrainConfig(epochs=10),
            shot_epochs=30,
            rule=rule,
        )

    model, inverted = fit(1.0 - truth)
    assert inverted["accuracy_transfer"] < 0.2, inverted
    assert inverted["weight_transfer"] == 0.0 if rule == "stacking" else inverted["weight_transfer"] < 1e-3, inverted
    assert preference_accuracy(model, tgt.observations, tgt.actions, held) > 0.7, "the shots alone decide"
    model, right = fit(truth)
    assert right["accuracy_transfer"] > 0.8 and right["weight_transfer"] > right["weight_shots"] - 0.2, right
    assert preference_accuracy(model, tgt.observations, tgt.actions, held) > 0.9


def test_stacking_weight_moves_to_the_member_that_predicts_the_shots_and_stays_even_on_few():
    rng = np.random.default_rng(0)
    good, noise = rng.normal(0, 3, 200), rng.normal(0, 3, 200)
    labels = (good + rng.normal(0, 1, 200) > 0).astype(float)  # the shots follow the first member, with noise
    assert stacking_weight(good, noise, labels) > 0.8
    assert stacking_weight(noise, good, labels) < 0.2
    few = stacking_weight(good[:3], noise[:3], labels[:3])
    assert 0.35 < few < 0.75, few  # three shots say little: near an even mix
    half = 0.5 * (good + noise)
    mixed = (half + rng.normal(0, 0.5, 200) > 0).astype(float)  # the truth is the mix itself
    assert abs(stacking_weight(good, noise, mixed) - 0.5) < 0.15


def test_transfer_share_rules_switch_an_unoriented_transfer_off_hard_or_by_its_probability():
    labels = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    shots_diff = np.array([1.0, -1.0, 1.0, 1.0, -1.0])  # the shots model orders every shot right
    two_of_five = np.array([2.0, -2.0, -2.0, -2.0, 2.0])  # the transfer orders 2 of the 5 right
    assert orientation_probability(two_of_five, labels) == pytest.approx(0.34375)  # P(accuracy > 1/2 | 2 of 5)
    assert orientation_probability(-shots_diff, labels) == pytest.approx(1 / 64)
    assert transfer_share(two_of_five, shots_diff, labels, "stacking") == 0.0
    pure = transfer_share(two_of_five, shots_diff, labels, "stacking-pure")
    assert pure == stacking_weight(two_of_five, shots_diff, labels) > 0.0
    assert transfer_share(two_of_five, shots_diff, labels, "stacking-oriented") == pytest.approx(0.34375 * pure)
    assert transfer_share(shots_diff, shots_diff, labels, "stacking-oriented") == pytest.approx(
        transfer_share(shots_diff, shots_diff, labels, "stacking") * 63 / 64
    )
    with pytest.raises(ValueError, match="unknown few-shot weighting rule"):
        transfer_share(shots_diff, shots_diff, labels, "best")
