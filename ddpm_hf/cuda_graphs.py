"""Ancestral sampling (Algorithm 2 of Ho et al. 2020) with every step replayed from one CUDA graph.

Each step of the reverse process runs the same kernels on the same shapes,

    ε = ε_θ(x_t, t),   x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t  (eq. 15),   x_{t'} = μ̃_t(x_t, x̂_0) + σ_t z   (eq. 7),

so `GraphedReverseProcess` records one step once and replays it for every t. The step reads everything from fixed
device buffers: x_t, the noise z, and a step index i from which t and the step's coefficients are looked up in tables
on the GPU (`DDPMScheduler.step_coefficients`, `DDPMScheduler.noise_scales`). Per step the host only writes i and z
into their buffers and launches the graph: no kernel-launch overhead for the UNet's hundreds of kernels, and no host
synchronisation (diffusers' loop copies t from the host at every step). z is drawn exactly as `DDPMScheduler.step`
draws it, from the same generators in the same order.

The step's arithmetic is `DDPMScheduler.step`'s own: the same methods for x̂_0, μ̃_t and σ_t, on the same float32
coefficients (computed on the host, as the eager step computes them, then copied to the device). Given the same
network outputs, the two give the same x_{t'} bit for bit; what can still differ is the network itself (a captured
or compiled UNet, or, on the CPU, an input in another memory layout rounds differently).

Without `capture` (on the CPU), the same buffered step runs eagerly; the tests check it against
`DDPMScheduler.step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from diffusers.utils.torch_utils import randn_tensor

from .scheduler import DDPMScheduler, StepCoefficients

__all__ = ["GraphedReverseProcess", "Denoiser", "can_graph"]

# (x_t, t) → the network's output for x_t, in x_t's dtype; t a 1-element long tensor on x_t's device.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def can_graph(scheduler: DDPMScheduler) -> bool:
    """Whether the scheduler's step can be captured: a fixed σ_t (a learned one depends on the output), and no
    dynamic thresholding (its quantile is not capturable)."""
    config = scheduler.config
    return config.variance_type not in ("learned", "learned_range") and not config.thresholding


class GraphedReverseProcess:
    """The reverse process for one batch shape and chain length, one step captured as a CUDA graph.

    Args:
        denoise: the network, `(x_t, t) -> ε_θ(x_t, t)` (or x̂_0, v, μ̃ by the scheduler's `prediction_type`).
        scheduler: the scheduler whose chain is sampled (its `set_timesteps` already called).
        shape: (N, C, H, W) of x_t.
        dtype: x_t's dtype.
        device: where x_t lives; a CUDA device to capture.
        capture: record the step as a CUDA graph (False: run the same buffered step eagerly).
        warmup_steps: eager steps run on a side stream before capturing (for lazy initialisation and compilation).
    """

    def __init__(
        self,
        denoise: Denoiser,
        scheduler: DDPMScheduler,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        capture: bool = True,
        warmup_steps: int = 3,
    ):
        if not can_graph(scheduler):
            raise ValueError("GraphedReverseProcess needs a fixed variance and no thresholding (see can_graph).")
        if capture and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}.")
        self.denoise, self.scheduler, self.shape, self.device = denoise, scheduler, tuple(shape), device
        self.num_steps = len(scheduler.timesteps)
        self.x = torch.zeros(shape, dtype=dtype, device=device)  # x_t, overwritten in place by x_{t'}
        self.noise = torch.zeros(shape, dtype=dtype, device=device)  # z of the current step (0 at the last)
        self.index = torch.zeros(1, dtype=torch.long, device=device)  # i: the step, t = timesteps[i]
        # the tables the step reads, indexed by i; `_load_chain` refills them in place for each run
        timesteps, coefficients, noise_scales = self._chain_tables()
        self.timesteps, self.coefficients = timesteps.to(device), coefficients.to(device)
        self.noise_scales = noise_scales.to(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture(warmup_steps)

    def _chain_tables(self) -> tuple[torch.Tensor, StepCoefficients, torch.Tensor]:
        """The scheduler's current chain on the host: its timesteps, each step's coefficients, and σ_t."""
        timesteps = self.scheduler.timesteps.tolist()
        if len(timesteps) != self.num_steps:
            raise ValueError(
                f"this graph samples chains of {self.num_steps} steps, the scheduler has {len(timesteps)}."
            )
        coefficients = StepCoefficients.stack([self.scheduler.step_coefficients(t) for t in timesteps])
        return torch.tensor(timesteps), coefficients, self.scheduler.noise_scales()

    def _load_chain(self) -> None:
        """Copy the scheduler's current chain into the step's tables, in place (the graph reads their memory)."""
        timesteps, coefficients, noise_scales = self._chain_tables()
        self.timesteps.copy_(timesteps)
        for name in StepCoefficients.__dataclass_fields__:
            getattr(self.coefficients, name).copy_(getattr(coefficients, name))
        self.noise_scales.copy_(noise_scales)

    def _step(self) -> None:
        """x ← μ_θ(x, t) + σ_t z for the step `self.index`, all on the device: `DDPMScheduler.step`'s x̂_0 and μ̃_t
        (`reverse_mean`) and σ_t (`noise_scales`, from `reverse_variance`), on its float32 coefficients made 0-dim,
        so that every operation is the eager step's (z = 0 at the step to x_0, which adds no noise there)."""
        t = self.timesteps.index_select(0, self.index)
        model_output = self.denoise(self.x, t)
        mean, _ = self.scheduler.reverse_mean(self.coefficients.select(self.index), model_output, self.x, clip=True)
        sigma = self.noise_scales.index_select(0, self.index)[0]
        self.x.copy_(mean + sigma * self.noise)

    def _capture(self, warmup_steps: int) -> None:
        """Record `_step` as a CUDA graph, after warm-up steps on a side stream (as `torch.cuda.graphs` asks)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    def run(
        self,
        image: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        progress: Callable[[Iterable], Iterable] = lambda steps: steps,
    ) -> torch.Tensor:
        """Sample from x_T = `image` down the scheduler's current chain; return x_0 (a new tensor).

        Args:
            image: x_T, of this graph's shape.
            generator: the source of every z, drawn as `DDPMScheduler.step` draws it (one draw of x_t's shape per
                step with t > 0).
            progress: wraps the steps (a progress bar).
        """
        if tuple(image.shape) != self.shape:
            raise ValueError(f"this graph samples batches of shape {self.shape}, got {tuple(image.shape)}.")
        self._load_chain()
        self.x.copy_(image)
        for i, t in enumerate(progress(self.scheduler.timesteps.tolist())):
            if t > 0:
                self.noise.copy_(randn_tensor(self.shape, generator=generator, device=self.device, dtype=self.x.dtype))
            else:
                self.noise.zero_()
            self.index.fill_(i)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        return self.x.clone()
