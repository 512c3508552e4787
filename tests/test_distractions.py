"""Distraction axes: they change what is seen, never the task; seeded; difficulty 0 is the plain env."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from envs.distractions import AXES

SETTINGS = [dict(axes=axis) for axis in AXES] + [
    dict(axes="background", background="shapes"),
    dict(axes=AXES, difficulty=0.5),
]


def _rollout(env, seed: int, steps: int, episodes: int = 1):
    """Frames, states, rewards and clean frames under fixed actions, over ``episodes`` resets (seeded once)."""
    rng = np.random.default_rng(0)
    frames, states, rewards, clean = [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        frames.append(obs)
        states.append(env.unwrapped.last_state.copy())
        for _ in range(steps):
            obs, reward, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            frames.append(obs)
            states.append(env.unwrapped.last_state.copy())
            rewards.append(reward)
            if env.unwrapped.obs_type != "state":
                clean.append(env.unwrapped.clean_pixels())
    return np.stack(frames), np.stack(states), np.array(rewards), clean


@pytest.mark.parametrize(
    "kwargs",
    SETTINGS,
    ids=lambda k: "-".join(
        f"{v}" if isinstance(v, str) else f"{len(v) if isinstance(v, tuple) else v}" for v in k.values()
    ),
)
def test_each_axis_changes_the_frames_and_not_the_task(kwargs):
    plain = gym.make("embodied/push-pixels-v3")
    dist = gym.make("embodied/push-distractor-v3", **kwargs)
    f_plain, s_plain, r_plain, _ = _rollout(plain, seed=4, steps=6, episodes=2)
    f_dist, s_dist, r_dist, clean = _rollout(dist, seed=4, steps=6, episodes=2)
    np.testing.assert_array_equal(s_dist, s_plain)  # the same states over two episodes (one seed): physics untouched
    np.testing.assert_array_equal(r_dist, r_plain)
    changed = (f_dist != f_plain).any(-1).mean()
    assert changed > 0.05, f"the axis must change what is seen ({changed:.3f} of pixels changed)"
    plain_after_steps = f_plain[1:7]
    np.testing.assert_array_equal(np.stack(clean[:6]), plain_after_steps)  # clean_pixels(): the plain frame


def test_difficulty_zero_is_the_plain_pixel_env():
    plain = gym.make("embodied/reach-pixels-v3")
    dist = gym.make("embodied/reach-distractor-v3", axes=AXES, difficulty=0.0)
    f_plain, *_ = _rollout(plain, seed=2, steps=4)
    f_dist, *_ = _rollout(dist, seed=2, steps=4)
    np.testing.assert_array_equal(f_dist, f_plain)
    assert all(not np.any(v) for v in dist.unwrapped.distraction_params().values())


def test_distractions_grow_with_difficulty():
    plain, *_ = _rollout(gym.make("embodied/reach-pixels-v3"), seed=1, steps=3)
    changes = []
    for difficulty in (0.25, 0.5, 1.0):
        frames, *_ = _rollout(gym.make("embodied/reach-distractor-v3", axes=AXES, difficulty=difficulty), 1, 3)
        changes.append(np.abs(frames.astype(int) - plain).mean())
    assert changes[0] < changes[1] < changes[2]


def test_seeding_reproduces_the_distractions_and_seeds_differ():
    def frames(seed):
        env = gym.make("embodied/reach-distractor-v3", axes="background,color,camera,lighting", background="shapes")
        f, *_ = _rollout(env, seed, steps=3, episodes=2)  # the second episode follows from the first seed
        return f

    a, b, c = frames(7), frames(7), frames(8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any(-1).mean() > 0.3


def test_walking_axes_move_within_an_episode_and_lighting_holds():
    env = gym.make("embodied/reach-distractor-v3", axes=AXES)
    env.reset(seed=0)
    first = env.unwrapped.distraction_params()
    for _ in range(10):
        env.step(np.zeros(4, np.float32))
    later = env.unwrapped.distraction_params()
    assert {k: v.shape for k, v in first.items()} == {
        "background": (12,),
        "color": (9,),
        "camera": (6,),
        "lighting": (4,),
    }
    for axis in ("background", "color", "camera"):
        assert not np.allclose(first[axis], later[axis]), axis
    np.testing.assert_array_equal(first["lighting"], later["lighting"])
    env.reset()
    assert not np.allclose(env.unwrapped.distraction_params()["lighting"], first["lighting"]), "new draw per episode"


def test_today_default_is_the_background_video_and_options_are_checked():
    env = gym.make("embodied/reach-distractor-v3")
    assert env.unwrapped.distractions.axes == ("background",) and env.unwrapped.distractions.difficulty == 1.0
    assert gym.make("embodied/reach-distractor-v3", axes="color, camera").unwrapped.distractions.axes == (
        "color",
        "camera",
    )
    for bad, match in (
        (dict(axes="colour"), "subset of background"),
        (dict(difficulty=1.5), r"in \[0, 1\]"),
        (dict(background="video"), "noise, shapes"),
        (dict(axes=()), "non-empty"),
    ):
        with pytest.raises(ValueError, match=match):
            gym.make("embodied/reach-distractor-v3", **bad)
    with pytest.raises(ValueError, match="options of the distractor envs"):
        gym.make("embodied/reach-pixels-v3", axes="color")


def test_old_ids_still_make_the_same_env_with_a_deprecation_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # as Python's defaults outside __main__: DeprecationWarning hidden
        warnings.simplefilter("ignore", DeprecationWarning)
        old = gym.make("embodied/reach-v3-distractor", axes="color")
    assert any("use embodied/reach-distractor-v3" in str(w.message) for w in caught)
    new = gym.make("embodied/reach-distractor-v3", axes="color")
    np.testing.assert_array_equal(old.reset(seed=0)[0], new.reset(seed=0)[0])
    assert "embodied/reach-v3-distractor" not in envs.registered_ids()


def test_cli_passes_distraction_options_and_refuses_them_for_plain_envs(tmp_path, capsys):
    from embodied.cli import main

    assert (
        main(
            [
                "eval",
                "--env",
                "embodied/reach-distractor-v3",
                "--axes",
                "camera,lighting",
                "--difficulty",
                "0.5",
                "--episodes",
                "1",
                "--max-steps",
                "5",
            ]
        )
        == 0
    )
    assert main(["eval", "--env", "embodied/reach-v3", "--axes", "color", "--episodes", "1"]) != 0
    assert "options of the distractor envs" in capsys.readouterr().err
