import imageio.v3 as iio
import numpy as np
import pytest

from embodied.make import make_env
from embodied.policies import make_policy
from embodied.video import caption, record_episode, tile, write_mp4


def test_recorded_mp4_decodes_to_the_expected_frames(tmp_path):
    env = make_env("embodied/reach-v3", render_mode="rgb_array", render_width=64, render_height=64)
    policy = make_policy("scripted", env)
    episodes = [record_episode(env, policy, seed=s, max_steps=n)[0] for s, n in ((0, 12), (1, 7))]
    assert [len(e) for e in episodes] == [13, 8]
    frames = tile(episodes)
    assert frames[0].shape == (64, 128, 3) and len(frames) == 13
    path = write_mp4(tmp_path / "v.mp4", frames, fps=10)
    video = iio.imread(path)
    assert video.shape == (13, 64, 128, 3)
    assert video.std() > 20, "video is not blank"
    assert np.abs(video[5].astype(int) - frames[5]).mean() < 12, "decoded frames match what was written"


def test_caption_draws_text():
    frame = np.full((64, 64, 3), 128, np.uint8)
    out = caption(frame, "t=3")
    assert (out[:4] == 0).any() and (out[:12] > 200).any()
    assert (out[20:] == 128).all(), "only the top band changes"


def test_write_mp4_encodes_a_generator_as_it_yields(tmp_path, monkeypatch):
    """A long video is never held: frames are encoded as they come (the CLI streams episode after episode)."""
    import embodied.video

    made, made_when_encoded = [], []

    def frames():
        for i in range(5):
            made.append(i)
            yield np.full((16, 16, 3), 40 * i, np.uint8)

    pad = embodied.video.pad_to_16
    monkeypatch.setattr(embodied.video, "pad_to_16", lambda frame: made_when_encoded.append(len(made)) or pad(frame))
    assert iio.imread(write_mp4(tmp_path / "g.mp4", frames(), fps=10)).shape == (5, 16, 16, 3) and len(made) == 5
    assert made_when_encoded == [1, 2, 3, 4, 5]  # each frame encoded before the next is made (a list: all 5 first)


def test_write_mp4_bad_input_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "v.mp4", [], fps=10)
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "v.mp4", iter([]), fps=10)
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "v.mp4", [np.zeros((16, 16, 3), np.uint8)], fps=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("full", [True, False])
def test_ffmpeg_stopping_is_one_error_and_leaves_nothing(tmp_path, monkeypatch, full):
    """imageio-ffmpeg reports any end of ffmpeg (a full disk on a 3 MB tmpfs) as a broken pipe, and closing the
    writer failed again: a traceback, and the directory made for the video stayed. A full disk is now the OSError
    naming the video; any other end of ffmpeg one EmbodiedError."""
    import errno

    import embodied.video
    from embodied.errors import EmbodiedError

    class DyingWriter:
        def append_data(self, frame):
            raise OSError(errno.EPIPE, "Broken pipe")

        def close(self):
            raise OSError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(embodied.video.imageio, "get_writer", lambda *a, **k: DyingWriter())
    monkeypatch.setattr(embodied.video, "disk_full", lambda directory: full)
    out = tmp_path / "new" / "v.mp4"
    with pytest.raises(OSError if full else EmbodiedError) as caught:
        write_mp4(out, [np.zeros((16, 16, 3), np.uint8)], fps=10)
    if full:
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    else:
        assert "ffmpeg stopped before" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # neither the temp file nor the directory made for it
