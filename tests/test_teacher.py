import numpy as np
import pytest

from embodied.teacher import ScriptedTeacher, sample_pairs


def test_prefers_larger_return_with_ties_and_myopia():
    rewards = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0], [1.0, 1.0, 1.05]])
    first, second = np.array([0, 1, 0, 3]), np.array([1, 2, 3, 0])
    assert ScriptedTeacher().label(rewards, first, second).label.tolist() == [0.0, 0.5, 0.0, 1.0]
    assert ScriptedTeacher(equal_threshold=0.1).label(rewards, first, second).label.tolist() == [0.0, 0.5, 0.5, 0.5]
    myopic = ScriptedTeacher(gamma=0.5).label(rewards, np.array([1]), np.array([2]))
    assert myopic.label.tolist() == [1.0], "a myopic teacher weighs recent steps more"


def test_flip_noise_rate(rng):
    rewards = rng.normal(size=(200, 10))
    first, second = sample_pairs(200, 4000, rng)
    clean = ScriptedTeacher().label(rewards, first, second).label
    noisy = ScriptedTeacher(flip_prob=0.2).label(rewards, first, second, rng).label
    assert 0.17 < np.mean(clean != noisy) < 0.23


def test_pairs_are_distinct_and_bad_input_rejected(rng):
    first, second = sample_pairs(5, 1000, rng)
    assert np.all(first != second) and first.max() < 5 and second.max() < 5
    with pytest.raises(ValueError, match="at least 2"):
        sample_pairs(1, 3, rng)
    with pytest.raises(ValueError, match="NaN"):
        ScriptedTeacher().label(np.array([[np.nan], [1.0]]), np.array([0]), np.array([1]))
