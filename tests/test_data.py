import h5py
import numpy as np
import pytest

from embodied.data import Dataset, Episode, NoiseSchedule, collect, load_episodes, sample_segments, write_dataset
from embodied.errors import EmbodiedError
from embodied.make import make_env
from envs.experts import scripted_expert


def _episode(T=20, dim=39, seed=0):
    r = np.random.default_rng(seed)
    return Episode(
        r.normal(size=(T + 1, dim)).astype(np.float32),
        r.uniform(-1, 1, (T, 4)).astype(np.float32),
        r.normal(size=T).astype(np.float32),
        np.zeros(T, bool),
        np.eye(1, T, T - 1, dtype=bool)[0],
        {"success": r.random(T) > 0.5},
        seed=seed,
    )


@pytest.fixture(scope="module")
def reach_episodes():
    env = make_env("embodied/reach-v3")
    return collect(env, scripted_expert(env), 4, NoiseSchedule((0.0, 1.0), (0.0, 0.5)), seed=0, max_steps=80)


def test_roundtrip_lazy_and_in_memory(tmp_path, reach_episodes):
    env = make_env("embodied/reach-v3")
    path = write_dataset(
        tmp_path / "d.hdf5", reach_episodes, "embodied/reach-v3", env.observation_space, env.action_space
    )
    with Dataset(path) as ds:
        assert len(ds) == 4 and ds.total_steps == 320 and ds.env_id == "embodied/reach-v3"
        ep = ds[2]
        np.testing.assert_array_equal(ep.observations, reach_episodes[2].observations)
        np.testing.assert_array_equal(ep.infos["success"], reach_episodes[2].infos["success"])
        assert ep.seed == 2
    loaded = load_episodes(path, env_id="embodied/reach-v3")
    assert [len(e) for e in loaded] == [80] * 4


def test_noise_lowers_quality(reach_episodes):
    clean, noisy = reach_episodes[0], reach_episodes[1]
    assert clean.success
    assert clean.episode_return > noisy.episode_return


def test_dict_observations_roundtrip(tmp_path):
    env = make_env("embodied/reach-pixels-v3", obs_type="pixels+state", width=16, height=16)
    eps = collect(env, scripted_expert(env), 1, NoiseSchedule(), max_steps=5)
    path = write_dataset(tmp_path / "p.hdf5", eps, "x", env.observation_space, env.action_space)
    ep = load_episodes(path)[0]
    assert ep.observations["pixels"].shape == (6, 16, 16, 3) and ep.observations["state"].shape == (6, 39)


def test_missing_corrupt_and_mismatched_files_give_clear_errors(tmp_path):
    with pytest.raises(EmbodiedError, match="not found"):
        Dataset(tmp_path / "nope.hdf5")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"definitely not hdf5")
    with pytest.raises(EmbodiedError, match="not a readable HDF5"):
        Dataset(bad)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(EmbodiedError, match="not an embodied dataset"):
        Dataset(other)
    good = write_dataset(tmp_path / "g.hdf5", [_episode()], "embodied/reach-v3", _space(), _space())
    with pytest.raises(EmbodiedError, match="recorded on"):
        Dataset(good, env_id="embodied/door-open-v3")
    truncated = tmp_path / "t.hdf5"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(EmbodiedError):
        load_episodes(truncated)


def _space():
    import gymnasium as gym

    return gym.spaces.Box(-1, 1, (4,), np.float32)


def test_write_is_atomic_and_rejects_bad_episodes(tmp_path):
    bad = _episode()
    bad.rewards[3] = np.nan
    with pytest.raises(EmbodiedError, match="NaN"):
        write_dataset(tmp_path / "x.hdf5", [bad], "e", _space(), _space())
    short = _episode()
    short.actions = short.actions[:-2]
    with pytest.raises(EmbodiedError, match="rows"):
        write_dataset(tmp_path / "x.hdf5", [short], "e", _space(), _space())
    with pytest.raises(EmbodiedError, match="empty"):
        write_dataset(tmp_path / "x.hdf5", [], "e", _space(), _space())
    assert list(tmp_path.iterdir()) == [], "no partial or temp file is left"


def test_a_full_disk_is_one_oserror_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """libhdf5 met a full disk (a 3 MB tmpfs) with an error at every later call and at garbage collection: dozens
    of tracebacks, a segfault, the temp file left. The file is now built in memory and written with one plain
    write, whose OSError is the only failure."""
    import builtins
    import errno

    import embodied.data.dataset

    class FullDisk:
        def __init__(self, real):
            self.real = real

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.real.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embodied.data.dataset, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space left on device") as caught:
        write_dataset(tmp_path / "x.hdf5", [_episode()], "e", _space(), _space())
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.hdf5")
    assert list(tmp_path.iterdir()) == [], "no partial or temp file is left"


def test_a_minari_write_its_file_system_cannot_hold_is_refused_before_it_starts(tmp_path, monkeypatch):
    """Minari writes through libhdf5, which crashed the process on a full disk (a segfault after 120 tracebacks on a
    3 MB tmpfs, the temp folder left): such a write is refused by the space it needs."""
    import embodied.data.minari_format
    from embodied.data.minari_format import write_minari

    env = make_env("embodied/reach-v3")
    episodes = collect(env, scripted_expert(env), 2, NoiseSchedule(), max_steps=20)
    monkeypatch.setattr(embodied.data.minari_format, "free_bytes", lambda directory: 1 << 19)
    with pytest.raises(EmbodiedError, match=r"needs about 1\.\d MiB there, and its file system has 0\.5 MiB free"):
        write_minari(tmp_path / "ds", episodes, env)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(embodied.data.minari_format, "free_bytes", lambda directory: 1 << 30)
    assert write_minari(tmp_path / "ds", episodes, env).is_dir()


def test_segments_are_windows_of_the_episodes(rng):
    eps = [_episode(T=30, seed=0), _episode(T=10, seed=1), _episode(T=3, seed=2)]
    seg = sample_segments(eps, length=5, count=200, rng=rng)
    assert seg.observations.shape == (200, 5, 39) and seg.actions.shape == (200, 5, 4) and seg.rewards.shape == (200, 5)
    assert set(seg.episode) <= {0, 1}, "an episode shorter than the segment is never used"
    for i in range(0, 200, 17):
        e, s = seg.episode[i], seg.start[i]
        np.testing.assert_array_equal(seg.observations[i], eps[e].observations[s : s + 5])
        np.testing.assert_array_equal(seg.rewards[i], eps[e].rewards[s : s + 5])
    assert seg.start[seg.episode == 0].max() <= 25
    # starts are uniform over all valid windows: episode 0 has 26 of the 32
    assert 0.7 < np.mean(seg.episode == 0) < 0.92
    with pytest.raises(ValueError, match="at least 50"):
        sample_segments(eps, length=50, count=3, rng=rng)


@pytest.mark.parametrize("obs_type", ["pixels", "pixels+state"])
def test_pixel_datasets_in_minaris_layout_round_trip_bit_for_bit(tmp_path, obs_type):
    """Minari's default JPEG-encodes image observations (lossy, and object arrays our loader refuses): ours are
    stored raw and gzip-compressed, and come back identical through our loader and through Minari's own."""
    import minari

    from embodied.data import NoiseSchedule, collect, load_episodes, write_dataset
    from embodied.data.minari_format import write_minari
    from embodied.make import make_env
    from envs.experts import scripted_expert

    env = make_env("embodied/reach-pixels-v3", obs_type=obs_type)
    episodes = collect(env, scripted_expert(env), 2, NoiseSchedule((0.0, 0.5), (0.0, 0.2)), max_steps=12)
    write_minari(tmp_path / "ds", episodes, env)
    as_dict = lambda obs: obs if isinstance(obs, dict) else {"pixels": obs}  # noqa: E731
    for ours, theirs, recorded in zip(
        load_episodes(tmp_path / "ds"), minari.MinariDataset(tmp_path / "ds" / "data").iterate_episodes(), episodes
    ):
        for key, frames in as_dict(recorded.observations).items():
            assert np.array_equal(as_dict(ours.observations)[key], frames)
            assert np.array_equal(as_dict(theirs.observations)[key], frames)
        assert np.array_equal(ours.actions, recorded.actions)
    # and in the single-file layout: a 64x64x3 image space's bounds, listed value by value, overflowed the
    # 64 KiB object header that the attributes live in (an OSError from h5py after collecting)
    write_dataset(tmp_path / "ds.hdf5", episodes, "embodied/reach-pixels-v3", env.observation_space, env.action_space)
    for ours, recorded in zip(load_episodes(tmp_path / "ds.hdf5"), episodes):
        for key, frames in as_dict(recorded.observations).items():
            assert np.array_equal(as_dict(ours.observations)[key], frames)


def test_collected_datasets_have_a_minari_id_that_minaris_tools_list_load_and_recover(tmp_path, monkeypatch, capsys):
    import minari

    from embodied.cli import main as cli_main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert cli_main(["collect", "--env", "embodied/reach-v3", "--episodes", "2", "--max-steps", "10"]) == 0
    assert (
        cli_main(
            [
                "collect",
                "--env",
                "embodied/reach-v3",
                "--policy",
                "random",
                "--episodes",
                "1",
                "--max-steps",
                "10",
                "--dataset-id",
                "embodied/reach-v3/noise-v1",
            ]
        )
        == 0
    )
    listed = minari.list_local_datasets()
    assert {"embodied/reach-v3/expert-v0", "embodied/reach-v3/noise-v1"} <= set(listed)
    dataset = minari.load_dataset("embodied/reach-v3/expert-v0")
    assert dataset.total_episodes == 2 and listed["embodied/reach-v3/expert-v0"]["requirements"]
    assert dataset.recover_environment().spec.id == "embodied/reach-v3"
    assert cli_main(["collect", "--env", "embodied/reach-v3", "--episodes", "1", "--dataset-id", "no version"]) == 2
    assert "not Minari's namespace/name-vN" in capsys.readouterr().err


def test_the_documented_offline_rl_conversion_keeps_each_action_with_its_observation(tmp_path):
    """What d3rlpy's get_minari gets wrong (a one-step shift per episode after the first): every converted
    transition must step the environment from its observation with its action to its next observation."""
    from embodied.data import NoiseSchedule, collect, load_episodes, to_transitions
    from embodied.data.minari_format import write_minari
    from embodied.make import make_env
    from envs.experts import scripted_expert

    env = make_env("embodied/reach-v3")
    write_minari(
        tmp_path / "ds", collect(env, scripted_expert(env), 3, NoiseSchedule((0.0, 0.5), (0.0,)), max_steps=15), env
    )
    episodes = load_episodes(tmp_path / "ds")
    arrays = to_transitions(episodes)
    assert len(arrays["observations"]) == len(arrays["actions"]) == 45
    assert arrays["timeouts"].sum() == 3 and arrays["terminals"].sum() == 0
    start = 0
    for episode in episodes:  # replay: the same seed and the converted actions reproduce the converted observations
        obs, _ = env.reset(seed=episode.seed)
        for t in range(len(episode.actions)):
            assert np.allclose(arrays["observations"][start + t], obs, atol=1e-6)
            obs, reward, *_ = env.step(arrays["actions"][start + t])
            assert np.allclose(arrays["next_observations"][start + t], obs, atol=1e-6)
            assert reward == pytest.approx(arrays["rewards"][start + t], rel=1e-5)
        start += len(episode.actions)


def test_a_space_too_large_for_the_single_file_header_is_one_clear_error(tmp_path):
    """Bounds that differ value by value are listed; past the 64 KiB object header h5py said only 'message is too
    large'. The error names the Minari folder, and no file is left."""
    import gymnasium as gym

    from embodied.data import write_dataset
    from embodied.data.episode import Episode
    from embodied.errors import EmbodiedError

    low = -np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    space = gym.spaces.Box(low, -low + 1, dtype=np.float32)
    episode = Episode(
        observations=np.zeros((3, 100, 100), np.float32),
        actions=np.zeros((2, 4), np.float32),
        rewards=np.zeros(2, np.float32),
        terminations=np.zeros(2, bool),
        truncations=np.zeros(2, bool),
    )
    with pytest.raises(EmbodiedError, match="write a Minari folder instead"):
        write_dataset(tmp_path / "d.hdf5", [episode], "embodied/reach-v3", space, gym.spaces.Box(-1, 1, (4,)))
    assert list(tmp_path.iterdir()) == []
