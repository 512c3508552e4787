import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.experts import scripted_expert
from envs.metaworld_env import TASKS


@pytest.mark.parametrize("env_id", envs.registered_ids())
def test_every_id_passes_gymnasium_and_sb3_checkers(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure too
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", ["embodied/reach-v3", "embodied/drawer-block-stow-v0", "embodied/point-hold-v0"])
def test_every_family_refuses_a_nan_action_and_a_wrong_shape(env_id):
    """Meta-World's refused them; point-hold moved its hand to NaN and drawer-block made MuJoCo unstable."""
    env = gym.make(env_id)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.step(np.zeros(2, np.float32))
    obs, *_ = env.step(np.full(4, 5.0, np.float32))  # out of range is clipped, as before
    assert np.all(np.isfinite(obs))


@pytest.mark.parametrize(
    "env_id, copy_env",
    [
        ("embodied/pick-place-v3", copy.deepcopy),  # its reward reads pad positions that are views of the simulator
        ("embodied/button-press-pixels-v3", lambda env: pickle.loads(pickle.dumps(env))),
        ("embodied/reach-distractor-v3", copy.deepcopy),
        ("embodied/drawer-block-stow-v0", copy.deepcopy),
        ("embodied/point-hold-v0", copy.deepcopy),
    ],
)
def test_a_copied_or_pickled_env_after_rendering_steps_exactly_as_the_original(env_id, copy_env):
    """What planners and MPC do. A Meta-World copy lost its mocap target, controls and model edits (it rebuilt
    the model from the XML) and moved elsewhere; any env that had rendered could not be copied at all."""
    env = gym.make(env_id, render_mode="rgb_array", render_width=64, render_height=64)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, 4))
    env.render()
    twin = copy_env(env)
    for _ in range(10):
        action = rng.uniform(-1, 1, 4)
        obs, reward, terminated, truncated, info = env.step(action)
        twin_obs, twin_reward, twin_terminated, twin_truncated, twin_info = twin.step(action)
        for key in obs if isinstance(obs, dict) else [None]:
            assert np.array_equal(obs if key is None else obs[key], twin_obs if key is None else twin_obs[key])
        assert (reward, terminated, truncated, info) == (twin_reward, twin_terminated, twin_truncated, twin_info)
    assert np.array_equal(env.render(), twin.render())
    assert np.array_equal(env.reset(seed=5)[0], twin.reset(seed=5)[0])


@pytest.mark.parametrize("env_id", ["embodied/reach-v3", "embodied/drawer-block-stow-v0", "embodied/point-hold-v0"])
def test_every_family_used_directly_refuses_a_step_before_reset(env_id):
    """gym.make's order check refuses it; the classes themselves failed with an AttributeError (point-hold), a bare
    AssertionError (Meta-World) or stepped from an unset state (drawer-block)."""
    env = gym.make(env_id).unwrapped
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        env.step(np.zeros(4, np.float32))
    env.reset(seed=0)
    env.step(np.zeros(4, np.float32))


def test_all_fifty_tasks_in_three_variants():
    assert len(TASKS) == 50
    assert len(envs.metaworld_ids()) == 150
    assert set(envs.registered_ids()) == set(envs.metaworld_ids()) | set(envs.drawer_block_ids()) | set(
        envs.point_hold_ids()
    )
    assert gym.spec("embodied/reach-v3").max_episode_steps == 500


def test_point_hold_pays_for_the_goal_and_only_the_first_two_action_dimensions_move_the_hand():
    env = gym.make("embodied/point-hold-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (12,) and gym.make("embodied/point-hold-clean-v0").observation_space.shape == (2,)
    features = obs[2:].copy()
    obs, _, *_ = env.step(np.array([0, 0, 1, -1], np.float32))  # the idle dimensions do nothing
    assert np.allclose(obs[2:], features) and np.allclose(obs[:2], env.unwrapped.hand)
    rewards, successes, expert = [], [], scripted_expert(env)
    for _ in range(8):  # straight to the goal, then stay
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        rewards.append(reward)
        successes.append(info["success"])
    assert np.all(np.diff(rewards) >= -1e-6) and rewards[-1] == 0.0 and successes[-1] == 1.0
    assert np.allclose(obs[2:], features)  # constant within the episode
    frame = gym.make("embodied/point-hold-v0", render_mode="rgb_array", render_width=40, render_height=40)
    frame.reset(seed=0)
    image = frame.render()  # the hand starts near (-0.5, -0.5): red in the lower-left quarter, none elsewhere
    red = (image[..., 0] > 200) & (image[..., 1] < 100)
    assert image.shape == (40, 40, 3) and red[20:, :20].any() and not red[:20].any() and not red[:, 20:].any()
    assert env.render() is None  # made without a render mode, as Gymnasium's envs and ours
    # its one view is named like the others' cameras, so `embodied video --camera` says what it has
    assert gym.make("embodied/point-hold-v0", camera="top").unwrapped.camera == "top"
    with pytest.raises(ValueError, match="unknown camera 'corner'; choose one of top"):
        gym.make("embodied/point-hold-v0", camera="corner")


def test_the_reward_optimal_path_on_point_hold_follows_the_reward():
    from envs.point_hold import reward_optimal_path

    def true_reward(obs, act):  # the env's reward, of the state after the step
        return -np.maximum(np.linalg.norm(np.clip(obs[:, :2] + 0.2 * act[:, :2], -1, 1) - 0.5, axis=1) - 0.1, 0)

    distance = np.linalg.norm(reward_optimal_path(true_reward) - 0.5, axis=1)
    assert distance[4] < 0.15 and distance.max(initial=0, where=np.arange(30) >= 4) < 0.15  # there in 5 steps, stays
    pushed = reward_optimal_path(lambda obs, act: act[:, 0] - np.abs(act[:, 1]))  # pays for moving right only
    assert np.allclose(pushed[-1], [1.0, -0.5])


def test_module_prefix_make_works():
    env = gym.make("envs:embodied/reach-v3")
    assert env.observation_space.shape == (39,)


def test_seeded_reset_is_reproducible_and_seeds_differ():
    env = gym.make("embodied/pick-place-v3")
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[36:], c[36:]), "goal should be re-sampled with another seed"


def test_truncates_at_max_episode_steps_and_reports_success():
    env = gym.make("embodied/reach-v3")
    expert = scripted_expert(env)
    obs, info = env.reset(seed=0)
    assert info["success"] is False
    successes, steps, truncated = [], 0, False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        assert not terminated
        successes.append(info["success"])
        assert info["is_success"] == info["success"]
        steps += 1
    assert steps == 500
    assert any(successes), "the scripted expert solves reach"


def test_terminate_on_success_option():
    env = gym.make("embodied/reach-v3", terminate_on_success=True)
    expert = scripted_expert(env)
    obs, _ = env.reset(seed=0)
    for t in range(500):
        obs, _, terminated, truncated, info = env.step(expert(obs))
        if terminated:
            break
    assert terminated and info["success"] and t < 499


def test_pixel_observation_shape_size_and_camera():
    env = gym.make("embodied/reach-pixels-v3", width=32, height=48, camera="topview")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (48, 32, 3) and obs.dtype == np.uint8
    assert obs.std() > 10, "frame is not blank"
    other = gym.make("embodied/reach-pixels-v3", width=32, height=48, camera="corner2")
    assert not np.array_equal(other.reset(seed=0)[0], obs)


def test_pixels_with_state_dict_observation():
    env = gym.make("embodied/reach-pixels-v3", obs_type="pixels+state")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"pixels", "state"} and obs["state"].shape == (39,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(width=0), "width"),
        (dict(height=-3), "height"),
        (dict(width=100_000, height=100_000), r"width must be an integer in \[1, 4096\]"),  # was a 28 GiB MemoryError
        (dict(camera="ceiling"), "unknown camera"),
        (dict(obs_type="depth"), "unknown obs_type"),
    ],
)
def test_bad_kwargs_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("embodied/reach-pixels-v3", **kwargs)


@pytest.mark.parametrize(
    "env_id, kwargs, message",
    [
        (
            "embodied/drawer-block-stow-v0",
            dict(render_width=100_000),
            r"render_width must be an integer in \[1, 4096\]",
        ),
        ("embodied/drawer-block-stow-v0", dict(camera="ceiling"), "unknown camera 'ceiling'"),  # both at render()
        ("embodied/point-hold-v0", dict(render_width=2.5), "render_width must be an integer"),  # drew 2 pixels
        ("embodied/point-hold-v0", dict(nuisance=10**12), r"nuisance must be an integer in \[0, 10000\]"),  # 931 GiB
        ("embodied/point-hold-v0", dict(nuisance=2.5), "nuisance must be an integer"),  # gymnasium's TypeError
        ("embodied/reach-pixels-v3", dict(width=True), "width must be an integer"),  # a 1-pixel-wide frame
    ],
)
def test_bad_frame_sizes_cameras_and_feature_counts_are_refused_when_the_env_is_made(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):  # the large frame was EGL's FatalError at the first render()
        gym.make(env_id, render_mode="rgb_array", **kwargs)


def test_distractor_moves_changes_per_episode_is_seeded_and_keeps_reward():
    clean = gym.make("embodied/button-press-pixels-v3")
    dist = gym.make("embodied/button-press-distractor-v3")
    f0, _ = dist.reset(seed=1)
    c0, _ = clean.reset(seed=1)
    actions = [dist.action_space.sample() for _ in range(5)]
    frames, rewards_d, rewards_c = [f0], [], []
    for a in actions:
        f, rd, *_ = dist.step(a)
        _, rc, *_ = clean.step(a)
        frames.append(f)
        rewards_d.append(rd)
        rewards_c.append(rc)
    assert rewards_d == rewards_c, "the distractor must not change the task"
    assert (frames[0] != c0).mean() > 0.3, "most of the background is replaced"
    assert (frames[1] != frames[0]).mean() > 0.2, "the background moves over time"
    again, _ = dist.reset(seed=1)
    np.testing.assert_array_equal(again, f0)
    other, _ = dist.reset(seed=2)
    assert (other != f0).mean() > 0.3, "a new episode gets a new background"


def test_clean_pixels_pair_a_distracted_frame_with_the_clean_variant_of_the_same_state():
    clean = gym.make("embodied/reach-pixels-v3")
    dist = gym.make("embodied/reach-distractor-v3")
    c, _ = clean.reset(seed=3)
    d, _ = dist.reset(seed=3)
    for a in [dist.action_space.sample() for _ in range(3)]:
        c, *_ = clean.step(a)
        d, *_ = dist.step(a)
    paired = dist.unwrapped.clean_pixels()
    np.testing.assert_array_equal(paired, c)
    assert (paired != d).mean() > 0.3, "the pair differs by its background"
    with pytest.raises(ValueError, match="pixel obs_type"):
        gym.make("embodied/reach-v3").unwrapped.clean_pixels()


def _goal_pixels(env, seed: int) -> int:
    """Pixels of the first frame that change when the goal marker is hidden."""
    inner = env.unwrapped
    model = inner.unwrapped_metaworld.model
    shown, _ = inner.reset(seed=seed)
    site = model.site("goal").id
    alpha = model.site_rgba[site][3]
    model.site_rgba[site][3] = 0.0
    hidden = inner._pixels()
    model.site_rgba[site][3] = alpha
    return int((shown != hidden).any(-1).sum())


@pytest.mark.parametrize("variant", ["pixels", "distractor"])
def test_goal_marker_is_visible_in_64x64_frames(variant):
    # Meta-World's 0.02 m red goal covers 1-3 pixels; a pixel agent must see where to reach
    env = gym.make(f"embodied/reach-{variant}-v3")
    assert min(_goal_pixels(env, seed) for seed in range(5)) >= 10, "the distractor must not paint over the goal"


def test_expert_works_on_pixel_variant():
    env = gym.make("embodied/reach-pixels-v3", width=16, height=16)
    expert = scripted_expert(env)
    obs, _ = env.reset(seed=0)
    for _ in range(150):
        obs, _, _, _, info = env.step(expert(obs))
    assert info["success"]


@pytest.mark.parametrize(
    "env_id",
    [
        "embodied/reach-v3",
        "embodied/door-open-v3",
        "embodied/reach-distractor-v3",
        "embodied/reach-v3-pixels",  # a deprecated id: the env it stands for
        "embodied/point-hold-v0",
        "embodied/point-hold-clean-v0",
        "embodied/drawer-block-stow-v0",
    ],
)
def test_which_ids_have_a_scripted_expert_is_read_from_the_registration_without_building(env_id):
    """PEARL refuses a task without an expert before its run directory exists; the answer must be the expert's."""
    from envs.experts import has_scripted_expert

    env = gym.make(env_id, width=16, height=16) if "pixels" in env_id or "distractor" in env_id else gym.make(env_id)
    try:
        scripted_expert(env)
        works = True
    except ValueError:
        works = False
    assert has_scripted_expert(env_id) == works


def test_render_rgb_array_for_video():
    env = gym.make("embodied/reach-v3", render_mode="rgb_array", render_width=96, render_height=80)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (80, 96, 3) and frame.std() > 10


@pytest.mark.parametrize("closed", [False, True])
def test_a_process_forked_after_rendering_refuses_to_render_instead_of_hanging(closed):
    """Mesa's EGL hangs in a context made by a child forked after its parent made one (an AsyncVectorEnv of pixel
    envs, forked by default, after a pixel env in the parent), even one the parent has closed again (a sync
    vector env closed before the async one): the child says so at once and names 'spawn'."""
    import gc
    import os
    import time

    parent = gym.make("embodied/reach-pixels-v3", width=16, height=16)
    parent.reset(seed=0)  # a context in this process
    if closed:
        parent.close()
        gc.collect()
    pid = os.fork()
    if pid == 0:  # the child: 3 for the clear error, 4 for anything else; a hang is killed below
        code = 4
        try:
            gym.make("embodied/reach-pixels-v3", width=16, height=16).reset(seed=0)
        except RuntimeError as err:
            code = 3 if "'spawn'" in str(err) else 4
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung making an EGL context")
    assert os.waitstatus_to_exitcode(done[1]) == 3
    if not closed:
        assert parent.reset(seed=1)[0].shape == (16, 16, 3)  # the parent renders on


@pytest.mark.parametrize("variant", ["distractor", "pixels"])
def test_action_repeat_skips_dropped_renders_but_returns_the_same_observations(variant):
    """ActionRepeat renders only the observation it returns; the observations, rewards and ends are those of
    rendering every step, also when the episode ends on a dropped step (13 steps at repeat 2)."""
    from embodied.make import make_env
    from envs.wrappers import ActionRepeat

    def rollout(env):
        obs, _ = env.reset(seed=3)
        out, rng, done = [obs], np.random.default_rng(0), False
        while not done:
            action = env.unwrapped.unwrapped_metaworld._target_pos - env.unwrapped.last_state[:3]
            action = np.append(np.clip(action * 10 + rng.normal(0, 0.3, 3), -1, 1), 0).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            out.append((obs, reward, terminated, truncated))
            done = terminated or truncated
        return out

    kwargs = dict(max_episode_steps=13)
    fast = ActionRepeat(make_env(f"embodied/reach-{variant}-v3", **kwargs), 2)
    every = ActionRepeat(
        gym.wrappers.TransformObservation(make_env(f"embodied/reach-{variant}-v3", **kwargs), lambda o: o, None), 2
    )  # an observation wrapper: no skipping
    assert fast._deferrable_env() is fast.unwrapped and every._deferrable_env() is None
    renders = []
    original = fast.unwrapped._pixels
    fast.unwrapped._pixels = lambda: renders.append(1) or original()
    a, b = rollout(fast), rollout(every)
    assert len(a) == len(b) and len(renders) == len(a)  # one render per returned observation
    np.testing.assert_array_equal(a[0], b[0])
    for (obs, *rest), (obs_b, *rest_b) in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(obs, obs_b)
        assert rest == rest_b
    assert a[-1][3] and len(a) == 8  # truncated after 7 actions, the last one's second step dropped


def test_success_any_and_final_are_both_reported_and_sticky_success_matches_metaworlds_definition():
    """door-open with Meta-World's own policy succeeds during the episode and not at its end: embodied eval
    reports both numbers; sticky_success=True makes is_success (what SB3's Monitor reads at the end) stick."""
    from embodied.evaluation import evaluate
    from envs.experts import scripted_expert

    env = gym.make("embodied/door-open-v3")
    result = evaluate(env, scripted_expert(env), 2, seed=0)
    assert result["success_any"] == result["success_rate"] == 1.0 and result["success_final"] == 0.0
    assert result["episode_steps"] == 500.0
    for sticky in (False, True):
        env = gym.make("embodied/door-open-v3", sticky_success=sticky)
        policy = scripted_expert(env)
        obs, info = env.reset(seed=0)
        seen = False
        while True:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            seen = seen or info["success"]
            if terminated or truncated:
                break
        assert seen and not info["success"] and info["is_success"] == sticky


def test_evaluation_holds_one_episode_at_a_time(monkeypatch):
    """embodied eval --episodes N kept all N episodes (every frame of a pixel env) until it summed them."""
    import gc
    import weakref

    import embodied.evaluation
    from embodied.data.collect import rollout

    alive: list = []

    def tracked_rollout(*args, **kwargs):
        gc.collect()
        assert sum(ref() is not None for ref in alive) <= 1  # the one being summarised, at most
        episode = rollout(*args, **kwargs)
        alive.append(weakref.ref(episode))
        return episode

    monkeypatch.setattr(embodied.evaluation, "rollout", tracked_rollout)
    env = gym.make("embodied/reach-v3")
    result = embodied.evaluation.evaluate(env, lambda obs: env.action_space.sample(), 4, max_steps=5)
    assert result["episodes"] == 4 and result["episode_steps"] == 5.0 and len(alive) == 4
