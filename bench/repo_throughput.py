"""RePo training throughput: gradient updates/s (world model + actor-critic) and env steps/s.

    python bench/repo_throughput.py [--batch 50 --seq-len 50] [--device auto] [--amp] [--compile] [--cuda-graph]
    python bench/repo_throughput.py --batch 16 --seq-len 32 --against a2efaf1   # side by side with a revision

Every row trains on the same fixed random batch from the same seed, so its loss columns (the world
model's KL, the actor's and the critic's loss after the timed updates) must agree between rows of
one mode: a speed-up that changes them changed the maths. ``--against REV`` runs this benchmark's
counterpart in a temporary git worktree of REV, in a separate process, right after this code's rows
(eager: ``--cuda-graph`` rows are then checked against REV's eager update).

Each row also gives the update's arithmetic, counted by ``torch.utils.flop_counter`` on one eager
update (matrix products and convolutions, forward and backward; the optimizers' elementwise work is
not counted), the rate it reaches, and its share of the device's peak: NVIDIA's datasheet figure
(dense; fp32 without tensor cores, TF32 with ``--tf32``, bf16 with ``--amp``) for the GPUs in
``PEAK_TFLOPS``, else the rate of a large matrix product measured here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The packages measured: this checkout's, or with --code-root (set by --against) another revision's.
CODE = Path(sys.argv[sys.argv.index("--code-root") + 1]) if "--code-root" in sys.argv else ROOT
sys.path.insert(0, str(CODE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.repo.agent import RePoAgent, run_episode  # noqa: E402
from agents.repo.world_model import WorldModelConfig  # noqa: E402
from embodied.device import resolve_device  # noqa: E402
from embodied.make import make_env  # noqa: E402
from embodied.runs import set_threads  # noqa: E402
from envs.wrappers import ActionRepeat  # noqa: E402

try:  # training calls it (start_run); revisions before it existed did not
    from embodied.allocator import keep_freed_memory  # noqa: E402
except ImportError:
    keep_freed_memory = None

HEADER = (
    "| code | device | threads | mode | precision | batch x seq | updates/s | GFLOP/update | TFLOP/s "
    "| share of peak | losses: kl / actor / critic | env steps/s (acting, 64x64 pixels, repeat 2) |\n"
    "| --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"
)
# Dense peak TFLOP/s from NVIDIA's datasheets: fp32 on the CUDA cores, tf32 and bf16 on the tensor cores.
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},  # SXM
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}


def precision(args) -> str:
    return "bf16" if args.amp else "tf32" if args.tf32 else "fp32"


def peak_tflops(device, args) -> tuple[float, str]:
    """The device's peak for this row's precision, and where the figure comes from."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_TFLOPS.items():
            if all(part in name for part in key.split()):
                return peaks[precision(args)], f"{key} datasheet"
    n = 2048  # no datasheet figure: what a large matrix product reaches here
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16 if args.amp else torch.float32)
    a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12, "measured matmul"


def update_flops(mode: str, args, device, obs, act, rew) -> float | None:
    """FLOPs of one eager update of a fresh agent (None where this torch has no flop counter)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    agent = RePoAgent(4, WorldModelConfig(mode=mode, amp=args.amp), device=device)
    agent.train_step(obs, act, rew)  # lazy optimizer states first: the counted update is a steady one
    with FlopCounterMode(display=False) as counter:
        agent.train_step(obs, act, rew)
    return float(counter.get_total_flops())


def measure(args, device, label: str) -> None:
    rng = np.random.default_rng(0)
    peak, source = peak_tflops(device, args)  # once: both modes are judged against the same figure
    for mode in ("repo", "dreamer"):
        torch.manual_seed(0)
        # cuda_graph= only when asked: the older revisions that --against measures have no such argument
        agent = RePoAgent(
            4,
            WorldModelConfig(mode=mode, amp=args.amp),
            device=device,
            **({"cuda_graph": True} if args.cuda_graph else {}),
        )
        if args.compile:
            agent.model.encoder = torch.compile(agent.model.encoder)
        obs = rng.integers(0, 255, (args.batch, args.seq_len + 1, 64, 64, 3), dtype=np.uint8)
        act = rng.uniform(-1, 1, (args.batch, args.seq_len, 4)).astype(np.float32)
        rew = rng.normal(size=(args.batch, args.seq_len)).astype(np.float32)
        agent.train_step(obs, act, rew)  # warm-up (and compilation, or the graph's capture)
        times = []
        for _ in range(args.updates):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            metrics = agent.train_step(obs, act, rew)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        ups = 1 / float(np.median(times))
        flops = update_flops(mode, args, device, obs, act, rew)
        rate = "" if flops is None else f"{flops * ups / 1e12:.3f}"
        share = "" if flops is None else f"{100 * flops * ups / 1e12 / peak:.2f} % of {peak:.3g} ({source})"
        gflop = "" if flops is None else f"{flops / 1e9:.1f}"
        losses = " / ".join(f"{metrics[k]:.4f}" for k in ("model/kl", "behavior/actor_loss", "behavior/critic_loss"))
        sps = ""
        if not args.no_env:
            env = ActionRepeat(make_env("embodied/reach-pixels-v3", max_episode_steps=200), 2)
            start = time.perf_counter()
            obs_ep, _, _, _ = run_episode(env, agent, seed=0, explore=True)
            sps = f"{(len(obs_ep) - 1) * 2 / (time.perf_counter() - start):.0f}"
        code = f"{label}, CUDA graph" if args.cuda_graph else label
        print(
            f"| {code} | {device} | {torch.get_num_threads()} | {mode} | {precision(args)} "
            f"| {args.batch} x {args.seq_len} | {ups:.2f} | {gflop} | {rate} | {share} | {losses} | {sps} |",
            flush=True,
        )


def run_against(rev: str, args) -> None:
    """This benchmark, unchanged, on the packages of revision ``rev`` (a detached worktree, removed after)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            cmd = [
                sys.executable,
                str(ROOT / "bench" / "repo_throughput.py"),
                "--code-root",
                str(tree),
                "--label",
                rev,
                "--no-header",
                "--batch",
                str(args.batch),
                "--seq-len",
                str(args.seq_len),
                "--updates",
                str(args.updates),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
            ]
            cmd += (
                ["--amp"] * args.amp
                + ["--tf32"] * args.tf32
                + ["--compile"] * args.compile
                + ["--no-env"] * args.no_env
            )
            subprocess.run(cmd, check=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--updates", type=int, default=5, help="timed updates; the median is reported")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: one per core)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--tf32", action="store_true", help="TF32 matrix products (GPU tensor cores)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graph", action="store_true", help="replay each update as a captured CUDA graph (GPU)")
    parser.add_argument("--no-env", action="store_true", help="skip the env-steps/s column")
    parser.add_argument("--against", metavar="REV", help="also run the same benchmark on git revision REV")
    parser.add_argument("--code-root", help=argparse.SUPPRESS)  # set by --against: measure that tree's packages
    parser.add_argument("--label", default="this checkout", help=argparse.SUPPRESS)
    parser.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    if keep_freed_memory is not None:
        keep_freed_memory()
    if not args.no_header:
        print(HEADER)
    measure(args, resolve_device(args.device), args.label)
    if args.against:
        run_against(args.against, args)


if __name__ == "__main__":
    main()
