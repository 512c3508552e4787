"""The ``embodied`` command: envs, collect, video, train <agent>, eval."""

from __future__ import annotations

import importlib
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from embodied.atomic import WRITE_FAILURES, check_writable_dir
from embodied.config import DistractionOptions, distraction_options, parse_config
from embodied.errors import EmbodiedError
from embodied.safe_io import json_text

AGENTS: dict[str, tuple[str, str]] = {  # name -> (training module with main(argv), its config dataclass)
    "pearl": ("agents.pearl.train", "PearlConfig"),
    "parl": ("agents.parl.train", "ParlConfig"),
    "repo": ("agents.repo.train", "RePoConfig"),
    "walle": ("agents.walle.train", "WalleConfig"),
}


@dataclass
class CollectConfig(DistractionOptions):
    """Collect trajectories with a (noisy) policy into a dataset file."""

    env: str = "embodied/reach-v3"  # environment id (embodied envs lists them)
    episodes: int = 10  # number of episodes
    out: Path | None = field(
        default=None,
        metadata={
            "help": "where to write: a folder (Minari's layout) or a path "
            "ending in .hdf5 (our single-file format); default: MINARI_ROOT/DATASET_ID, where "
            "minari.load_dataset(DATASET_ID) finds it"
        },
    )
    dataset_id: str | None = field(
        default=None,
        metadata={
            "help": "Minari's namespace/name-vN, e.g. embodied/reach-v3/expert-v0 (default: from --env and --policy)"
        },
    )
    minari_root: Path | None = field(
        default=None,
        metadata={"help": "Minari's datasets folder (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)"},
    )
    overwrite: bool = False  # replace a dataset already at --out (else it is refused: collected data is not lost)
    policy: str = field(
        default="scripted", metadata={"help": "scripted, random, or a policy file (or the run directory that holds it)"}
    )
    noise: tuple[float, ...] = field(
        default=(0.0,), metadata={"help": "Gaussian action-noise stds, cycled over episodes"}
    )
    epsilon: tuple[float, ...] = field(
        default=(0.0,), metadata={"help": "random-action probabilities, cycled over episodes"}
    )
    max_steps: int | None = field(default=None, metadata={"help": "cut episodes at this many steps"})
    seed: int = 0  # seed of the first episode (episode i uses seed + i)


@dataclass
class VideoConfig(DistractionOptions):
    """Record episodes of a policy to an H.264 mp4."""

    env: str = "embodied/reach-v3"  # environment id (embodied envs lists them)
    policy: str = field(
        default="scripted", metadata={"help": "scripted, random, or a policy file (or the run directory that holds it)"}
    )
    episodes: int = 1  # number of episodes
    out: Path = Path("videos/rollout.mp4")  # output file
    size: int = 256  # frame width and height in pixels (rounded up to a multiple of 16)
    camera: str | None = None  # camera name (None: the env's own default; embodied envs lists each env's cameras)
    fps: int = 30  # frames per second of the video
    grid: bool = field(default=True, metadata={"help": "tile episodes side by side (else one after another)"})
    captions: bool = True  # write return and success on each frame
    max_steps: int | None = None  # cut episodes at this many steps (default: the env's limit)
    seed: int = 0  # seed of the first episode (episode i uses seed + i)


@dataclass
class EvalConfig(DistractionOptions):
    """Evaluate a policy: success rate and return over seeded episodes."""

    env: str = "embodied/reach-v3"  # environment id (embodied envs lists them)
    policy: str = "scripted"  # scripted, random, or a policy file saved by an agent (or its run directory)
    episodes: int = 10  # number of episodes
    max_steps: int | None = None  # cut episodes at this many steps (default: the env's limit)
    seed: int = 1000  # seed of the first episode (episode i uses seed + i)


def cmd_envs(argv: list[str]) -> int:
    from envs.drawer_block import ASSET, DrawerBlockEnv
    from envs.metaworld_env import action_space, observation_space
    from envs.point_hold import PointHoldEnv
    from envs.registry import registered_ids
    from envs.rendering import CAMERAS

    import gymnasium as gym

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: embodied envs [PATTERN]\n\nList the registered environments (those whose id contains PATTERN) "
            "with their spaces, policies and cameras."
        )
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):  # `embodied envs reach wall` listed 'reach' alone
        raise EmbodiedError(f"embodied envs takes one PATTERN, got {' '.join(argv)!r} (see embodied envs --help)")
    drawer_cameras = re.findall(r'<camera name="([^"]+)"', Path(ASSET).read_text())
    pattern = argv[0] if argv else ""
    if not any(pattern in env_id for env_id in registered_ids()):  # a typo: say so, and what is close
        from embodied.make import close_tasks

        close = close_tasks(pattern, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `embodied envs` lists them all"
        raise EmbodiedError(f"no environment id contains {pattern!r}{hint}")
    print(f"{'id':50s} {'observation':20s} {'action':12s} {'steps':>5s}  {'policies':26s} cameras (first: default)")
    shown = 0
    for env_id in registered_ids():
        if pattern not in env_id:
            continue
        spec = gym.spec(env_id)
        act = action_space()
        if spec.entry_point.endswith("DrawerBlockEnv"):
            obs = DrawerBlockEnv(**spec.kwargs).observation_space
            policies, cameras = "scripted (skill plan), random", drawer_cameras
        elif spec.entry_point.endswith("PointHoldEnv"):
            env = PointHoldEnv(**spec.kwargs)
            obs, act, policies, cameras = env.observation_space, env.action_space, "scripted (expert), random", ["top"]
        else:
            obs = observation_space(spec.kwargs.get("obs_type", "state"))
            policies, cameras = "scripted (expert), random", ["corner2"] + [c for c in CAMERAS if c != "corner2"]
        shape = {k: v.shape for k, v in obs.spaces.items()} if hasattr(obs, "spaces") else obs.shape
        dtype = "" if hasattr(obs, "spaces") else str(obs.dtype)
        print(
            f"{env_id:50s} {f'{dtype}{list(shape)}':20s} {f'{list(act.shape)}':12s} "
            f"{spec.max_episode_steps:>5d}  {policies:26s} {','.join(cameras)}"
        )
        shown += 1
    print(f"{shown} environments; every one also takes --policy FILE (a policy saved by an agent)")
    if any("-distractor-" in env_id and pattern in env_id for env_id in registered_ids()):
        from envs.distractions import AXES, BACKGROUNDS

        print(
            f"distractor ids take --axes (comma-separated from {','.join(AXES)}; default background), "
            f"--difficulty (0 to 1; default 1) and --background ({' or '.join(BACKGROUNDS)}; default noise) in "
            "embodied video/eval/collect, the same as gym.make keyword arguments"
        )
    return 0


def check_max_steps(cfg) -> None:
    """``--max-steps`` of collect, video and eval: unset (the env's limit) or positive."""
    if cfg.max_steps is not None and cfg.max_steps <= 0:
        raise EmbodiedError(f"--max-steps must be positive, got {cfg.max_steps}")


def check_collection_fits(env, episodes: int, max_steps: int | None) -> None:
    """``collect`` holds its episodes until it writes them (and copies them then): refuse, before any step, a
    collection that cannot fit in memory (``--episodes 100000`` of 64x64 frames asked for ~600 GiB)."""
    from embodied.data.collect import collection_bytes, episode_limit
    from embodied.device import memory_bytes

    steps = episode_limit(env, max_steps)
    need = collection_bytes(env, episodes, max_steps)
    have = memory_bytes("cpu")
    if need > have:
        raise EmbodiedError(
            f"--episodes {episodes} of up to {steps} steps of {env.observation_space.shape or 'dict'} observations "
            f"need about {need / 2**30:.0f} GiB while collected and written, more than the {have / 2**30:.0f} GiB "
            "here; collect fewer episodes per --out"
        )


def cmd_collect(argv: list[str]) -> int:
    from embodied.data import NoiseSchedule, collect, write_dataset
    from embodied.data.minari_format import write_minari
    from embodied.make import make_env
    from embodied.policies import make_policy
    from embodied.runs import progress

    cfg = parse_config(CollectConfig, argv, prog="embodied collect")
    if cfg.episodes <= 0:
        raise EmbodiedError(f"--episodes must be positive, got {cfg.episodes}")
    check_max_steps(cfg)
    try:
        noise = NoiseSchedule(cfg.noise, cfg.epsilon)
    except ValueError as err:
        raise EmbodiedError(str(err)) from err
    from embodied.data.minari_format import dataset_path, default_dataset_id

    dataset_id = cfg.dataset_id or default_dataset_id(cfg.env, cfg.policy)
    out = Path(cfg.out) if cfg.out is not None else dataset_path(dataset_id, cfg.minari_root)
    if Path(out).exists() and not cfg.overwrite:
        raise EmbodiedError(
            f"{out} already exists; pass --overwrite to replace it, or choose another --out or --dataset-id"
        )
    check_writable_dir(out)  # fail before the work, not after it
    env = make_env(cfg.env, **distraction_options(cfg))
    check_collection_fits(env, cfg.episodes, cfg.max_steps)
    policy = make_policy(cfg.policy, env)
    bar = progress(total=cfg.episodes, desc=f"collect {cfg.env}")
    episodes = collect(
        env, policy, cfg.episodes, noise, seed=cfg.seed, max_steps=cfg.max_steps, progress=lambda ep: bar.update(1)
    )
    bar.close()
    metadata = {"policy": cfg.policy, "noise": list(cfg.noise), "epsilon": list(cfg.epsilon), "seed": cfg.seed}
    if out.suffix == ".hdf5":
        write_dataset(out, episodes, cfg.env, env.observation_space, env.action_space, metadata=metadata)
    else:
        write_minari(out, episodes, env, metadata, dataset_id=dataset_id)
    rate = sum(e.success for e in episodes) / len(episodes)
    print(
        f"wrote {out} ({dataset_id}): {len(episodes)} episodes, {sum(len(e) for e in episodes)} steps, "
        f"success rate {rate:.2f}"
    )
    return 0


MAX_GRID_BYTES = 4 * 2**30  # frames a --grid video holds in memory (episodes side by side need them all)


def cmd_video(argv: list[str]) -> int:
    from embodied.data.collect import episode_limit
    from embodied.make import make_env
    from embodied.policies import make_policy
    from embodied.video import record_episode, tiles, write_mp4
    from envs.rendering import MAX_FRAME_SIZE

    cfg = parse_config(VideoConfig, argv, prog="embodied video")
    if cfg.episodes <= 0 or cfg.size <= 0 or cfg.fps <= 0:
        raise EmbodiedError("--episodes, --size and --fps must be positive")
    if cfg.size > MAX_FRAME_SIZE:  # the offscreen EGL buffer fails past this with a driver traceback
        raise EmbodiedError(f"--size {cfg.size}: at most {MAX_FRAME_SIZE} pixels")
    check_max_steps(cfg)
    if Path(cfg.out).suffix.lower() != ".mp4":  # ffmpeg picks the container from the suffix
        raise EmbodiedError(f"--out {cfg.out}: the video is an H.264 mp4; give a path ending in .mp4")
    check_writable_dir(cfg.out)
    size = -(-cfg.size // 16) * 16
    camera = {} if cfg.camera is None else {"camera": cfg.camera}
    env = make_env(
        cfg.env, render_mode="rgb_array", render_width=size, render_height=size, **camera, **distraction_options(cfg)
    )
    policy = make_policy(cfg.policy, env)
    steps = episode_limit(env, cfg.max_steps)
    held = cfg.episodes * (steps + 1) * size * size * 3  # a grid lays out every episode's frames at once
    if cfg.grid and held > MAX_GRID_BYTES:
        raise EmbodiedError(
            f"--grid of {cfg.episodes} episodes of up to {steps + 1} {size}x{size} frames holds "
            f"{held / 2**30:.1f} GiB (at most {MAX_GRID_BYTES / 2**30:.0f}); give fewer --episodes, a smaller "
            "--size or --max-steps, or no --grid"
        )

    lengths = []

    def episodes():
        for i in range(cfg.episodes):
            frames, ret, success = record_episode(env, policy, cfg.seed + i, cfg.max_steps, annotate=cfg.captions)
            print(f"episode {i}: return {ret:.1f} success {success}")
            lengths.append(len(frames))
            yield frames

    frames = tiles(list(episodes())) if cfg.grid else (f for ep in episodes() for f in ep)  # one episode at a time
    write_mp4(cfg.out, frames, fps=cfg.fps)
    print(f"wrote {cfg.out}: {max(lengths) if cfg.grid else sum(lengths)} frames")
    return 0


def cmd_eval(argv: list[str]) -> int:
    from embodied.evaluation import evaluate
    from embodied.make import make_env
    from embodied.policies import make_policy

    cfg = parse_config(EvalConfig, argv, prog="embodied eval")
    if cfg.episodes <= 0:
        raise EmbodiedError(f"--episodes must be positive, got {cfg.episodes}")
    check_max_steps(cfg)
    env = make_env(cfg.env, **distraction_options(cfg))
    result = evaluate(env, make_policy(cfg.policy, env), cfg.episodes, seed=cfg.seed, max_steps=cfg.max_steps)
    print(json_text({"env": cfg.env, "policy": cfg.policy, **result}))
    return 0


AGENT_SUMMARIES = {
    "pearl": "zero-shot cross-task preference transfer (Gromov-Wasserstein), Gaussian reward model, IQL",
    "parl": "bilevel preference alignment on the current policy's behaviour, SAC lower level (PEBBLE, SAC baselines)",
    "repo": "pixel world model without reconstruction, KL budget by dual ascent, actor-critic in imagination",
    "walle": "LLM agent planning with a learned neurosymbolic world model (rules as sandboxed code)",
}
COMMAND_SUMMARIES = {
    "envs": "list the registered environments with their spaces, policies and cameras",
    "collect": "collect episodes of a (noisy) policy into a Minari dataset",
    "video": "record episodes of a policy to an H.264 mp4",
    "eval": "success rate and return of a policy over seeded episodes",
    "train": "train an agent (embodied train --help lists them)",
    "sweep": "run seeds x grid values of an agent as Ray tasks",
    "report": "tables and curves with confidence intervals from run directories",
    "study": "run a study file (agent, seeds, grid, options, report) with sweep, then report",
    "adapt": "adapt a trained RePo agent's encoder to a new variant (distractors) without rewards",
}


def usage_train() -> str:
    lines = ["usage: embodied train <agent> [options]   (embodied train <agent> --help for its options)", "", "agents:"]
    lines += [f"  {name:8s} {AGENT_SUMMARIES[name]}" for name in sorted(AGENTS)]
    return "\n".join(lines)


def cmd_train(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(usage_train())
        return 0
    if not argv or argv[0] not in AGENTS:
        known = ", ".join(sorted(AGENTS))
        raise EmbodiedError(
            f"{'unknown agent ' + repr(argv[0]) if argv else 'no agent given'}; agents: {known} (embodied train --help)"
        )
    return importlib.import_module(AGENTS[argv[0]][0]).main(argv[1:]) or 0


def cmd_sweep(argv: list[str]) -> int:
    from embodied.sweep import main as sweep_main

    return sweep_main(argv)


def cmd_report(argv: list[str]) -> int:
    from embodied.report import main as report_main

    return report_main(argv)


def cmd_adapt(argv: list[str]) -> int:
    from agents.repo.adapt import main as adapt_main

    return adapt_main(argv)


def cmd_study(argv: list[str]) -> int:
    from embodied.study import main as study_main

    return study_main(argv)


COMMANDS = {
    "envs": cmd_envs,
    "collect": cmd_collect,
    "video": cmd_video,
    "eval": cmd_eval,
    "train": cmd_train,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "study": cmd_study,
    "adapt": cmd_adapt,
}


def out_of_memory(err: RuntimeError) -> str | None:
    """One line for torch's failure to allocate (a size option larger than the machine holds, e.g. ``--sac.hidden
    100000`` asks for a 40 GB layer); None for any other error."""
    text = str(err)
    if type(err).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text:
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    size = f" of {int(asked.group(1)) / 2**30:.1f} GiB" if asked else ""
    return f"out of memory: an allocation{size} failed; a size option (a width, batch or count) is too large here"


MAX_MESSAGE_CHARS = 2000  # an error line that echoes a value (a 60 KB --tasks) keeps its start and its end


def shortened(text: str) -> str:
    """``text``, or its head and tail around a note of how much was left out when it is longer than a line
    should be."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    head, tail = MAX_MESSAGE_CHARS * 3 // 4, MAX_MESSAGE_CHARS // 4
    return f"{text[:head]} ... ({len(text) - head - tail} characters left out) ... {text[-tail:]}"


def quiet_write_failures_in_threads() -> None:
    """A write the machine refuses in a helper thread (TensorBoard's writer) is not printed as that thread's
    traceback: the thread keeps the error and the main thread meets it at its next write or at close, where it is
    the run's one ``error: could not write`` line. Every other exception in a thread is printed as before."""
    if getattr(threading.excepthook, "quiet_write_failures", False):
        return
    default = threading.excepthook

    def hook(args) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in WRITE_FAILURES):
            default(args)

    hook.quiet_write_failures = True
    threading.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        from embodied import __version__

        print(f"embodied {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        text = "usage: embodied <command> [options]   (embodied <command> --help for its options; embodied --version)"
        text += "\n\ncommands:\n"
        text += "\n".join(f"  {name:8s} {COMMAND_SUMMARIES[name]}" for name in COMMANDS)
        helped = bool(argv) and argv[0] in ("-h", "--help")
        if argv and not helped:
            text = f"error: unknown command {argv[0]!r}\n" + text
        print(text, file=sys.stdout if helped else sys.stderr)
        return 0 if helped else 2
    from embodied.runs import RunInterrupted, close_open_runs, close_progress_bars

    quiet_write_failures_in_threads()

    def say(text: str) -> None:  # on a line of its own, not after a progress bar's
        close_progress_bars()
        print(shortened(text), file=sys.stderr)

    try:
        return COMMANDS[argv[0]](argv[1:])
    except EmbodiedError as err:
        say(f"error: {err}")
        return 2
    except RunInterrupted as err:
        say(str(err))
        return 130
    except (RecursionError, MemoryError) as err:  # a hostile input that got past the caps: still one line
        what = "nested too deeply" if isinstance(err, RecursionError) else "needed more memory than there is"
        say(f"error: the input {what} ({type(err).__name__})")
        return 2
    except RuntimeError as err:
        if (said := out_of_memory(err)) is None:
            raise
        say(f"error: {said}")
        return 2
    except BrokenPipeError:  # `embodied envs | head`
        sys.stderr.close()
        return 0
    except OSError as err:
        if err.errno not in WRITE_FAILURES:
            raise
        where = f" {err.filename}" if err.filename else ""  # a run keeps its last complete checkpoint: --resume
        say(f"error: could not write{where}: {err.strerror}")
        return 2
    finally:
        close_open_runs()  # a run that ended in an error (a finished one closed itself)


if __name__ == "__main__":
    sys.exit(main())
