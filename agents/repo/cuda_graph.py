"""A training update captured once as a CUDA graph and replayed for every batch.

Why: RePo's update at small batch is bound by launching kernels from Python, not by the GPU
(bench/results/gpu_check.md: ~6,800 launches, 35 ms of kernel time in 106 ms of wall time at 50 x 50;
the RSSM scan and the imagination rollout are many steps of small matrix products). A replayed graph
launches all of them at once. This is PyTorch's "whole-network capture" recipe, with the warm-up
undone, so the first replay continues from exactly the state the eager update would have.

The update ``fn(*inputs) -> dict of 0-d tensors`` must take tensors of fixed shapes, never wait for
the device (no ``.item()``, no branches on device values, no tensors made from host data), and step
only the ``optimizers`` given (they are switched to ``capturable``). Random draws are graph-safe: a
replay draws what the eager update would have drawn from the same generator state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def set_capturable(optimizers: Sequence[torch.optim.Optimizer], capturable: bool) -> None:
    """Switch optimizers to (or from) capturable mode: their step counters live on the parameters' device."""
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" in group:
                group["capturable"] = capturable
        for param, state in opt.state.items():
            if torch.is_tensor(state.get("step")):
                device = param.device if capturable else torch.device("cpu")
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


class _TrainingState:
    """A copy of modules' parameters and buffers and optimizers' states, to be put back in place
    (the tensors a captured graph refers to must stay the same objects)."""

    def __init__(self, modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer]):
        self.tensors = [(t, t.detach().clone()) for m in modules for t in (*m.parameters(), *m.buffers())]
        self.opt_states = [
            (opt, {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for p, s in opt.state.items()})
            for opt in optimizers
        ]

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, saved in self.tensors:
            tensor.copy_(saved)
        for opt, saved in self.opt_states:
            for param, state in opt.state.items():
                for key, value in state.items():
                    if not torch.is_tensor(value):
                        continue
                    if param in saved:
                        value.copy_(saved[param][key])
                    else:  # created by the warm-up: a fresh optimizer state is all zeros (step 0)
                        value.zero_()


class GraphedUpdate:
    """Call like ``fn``, with numpy arrays or tensors; returns ``fn``'s outputs (read them before the next call).

    The first call (and any call with new input shapes) warms ``fn`` up on a side stream, restores the
    modules, optimizers and the CUDA generator to their state before the warm-up, captures one update,
    then replays it.
    """

    def __init__(
        self,
        fn: Callable[..., dict[str, torch.Tensor]],
        modules: Sequence[nn.Module],
        optimizers: Sequence[torch.optim.Optimizer],
        device: torch.device,
        warmup: int = 2,
    ):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, got {device}")
        self.fn, self.modules, self.optimizers, self.device, self.warmup = fn, modules, optimizers, device, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor] = []
        self.outputs: dict[str, torch.Tensor] = {}

    def __call__(self, *inputs: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        tensors = [torch.as_tensor(x) for x in inputs]
        if self.graph is None or [t.shape for t in tensors] != [t.shape for t in self.inputs]:
            self._capture(tensors)
        for static, x in zip(self.inputs, tensors):
            static.copy_(x)
        self.graph.replay()
        return self.outputs

    def _capture(self, tensors: list[torch.Tensor]) -> None:
        self.graph = None
        self.inputs = [t.to(self.device).clone() for t in tensors]
        set_capturable(self.optimizers, True)
        saved = _TrainingState(self.modules, self.optimizers)
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # lazy initialisations (optimizer states, cuBLAS, autograd) happen here
                self.fn(*self.inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        saved.restore()
        torch.cuda.set_rng_state(rng, self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs = self.fn(*self.inputs)
        self.graph = graph
