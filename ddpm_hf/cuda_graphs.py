"""The reverse process with every step replayed from one CUDA graph: DDPM's ancestral step and DDIM's step.

Each step of the chain runs the same kernels on the same shapes. For DDPM (Algorithm 2 of Ho et al. 2020),

    ε = ε_θ(x_t, t),   x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t  (eq. 15),   x_{t'} = μ̃_t(x_t, x̂_0) + σ_t z   (eq. 7);

for DDIM (Song et al. 2021, eq. 12), with σ_t = η √((1 − ᾱ_{t'}) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_{t'})) (eq. 16),

    x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) ε̂ + σ_t z.

So `GraphedReverseProcess` records one step once and replays it for every t. The step reads everything from fixed
device buffers: x_t, the noise z, and a step index i from which t and the step's coefficients are looked up in tables
on the GPU. Per step the host only writes i and z into their buffers and launches the graph: no kernel-launch
overhead for the UNet's hundreds of kernels, and no host synchronisation (diffusers' loop copies t from the host at
every step). z is drawn exactly as the scheduler's `step` draws it, from the same generators in the same order.

The arithmetic is the schedulers' own: for DDPM the methods of `DDPMScheduler.step` (x̂_0, μ̃_t, σ_t) on the same
float32 coefficients; for DDIM the operations of `diffusers.DDIMScheduler.step`, in its order, on the float32 scalars
it computes from its ᾱ table. Given the same network outputs, the graph and the eager step give the same x_{t'} bit
for bit; what can still differ is the network itself (a captured or compiled UNet, or, on the CPU, an input in
another memory layout rounds differently).

Without `capture` (on the CPU), the same buffered step runs eagerly; the tests check it against each scheduler's
`step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from .scheduler import Coefficients, DDPMScheduler, StepCoefficients, original_sample, predicted_noise, sqrt_alphas

__all__ = ["GraphedReverseProcess", "Denoiser", "can_graph"]

# (x_t, t) → the network's output for x_t, in x_t's dtype; t a 1-element long tensor on x_t's device.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def can_graph(scheduler: SchedulerMixin) -> bool:
    """Whether the scheduler's step can be captured: DDPM's with a fixed σ_t (a learned one depends on the output),
    or DDIM's; neither with dynamic thresholding (its quantile is not capturable)."""
    config = scheduler.config
    if isinstance(scheduler, DDPMScheduler):
        return config.variance_type not in ("learned", "learned_range") and not config.thresholding
    ddim_prediction = config.get("prediction_type") in ("epsilon", "sample", "v_prediction")
    return isinstance(scheduler, DDIMScheduler) and ddim_prediction and not config.thresholding


class _DDPMStep:
    """x_{t'} = μ_θ(x_t, t) + σ_t z (Algorithm 2, line 4), with `DDPMScheduler.step`'s coefficients and methods."""

    def __init__(self, scheduler: DDPMScheduler):
        self.scheduler = scheduler

    def tables(self) -> tuple[StepCoefficients, torch.Tensor]:
        """Each step's coefficients of the current chain (float32, as `step` computes them) and its σ_t."""
        timesteps = self.scheduler.timesteps.tolist()
        return StepCoefficients.stack(
            [self.scheduler.step_coefficients(t) for t in timesteps]
        ), self.scheduler.noise_scales()

    def draws_noise(self, timestep: int) -> bool:
        return timestep > 0  # as `DDPMScheduler.step`: no draw for the step to x_0

    def __call__(self, c: StepCoefficients, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:  # fmt: skip
        mean, _ = self.scheduler.reverse_mean(c, model_output, x, clip=True)
        return mean + sigma * noise  # z = 0 at the step to x_0, which adds no noise there


@dataclass
class DDIMCoefficients(Coefficients):
    """The float32 scalars of a DDIM step t → t' as `diffusers.DDIMScheduler.step` computes them.

    Attributes:
        sqrt_alpha_prod: √ᾱ_t.
        sqrt_beta_prod: √(1 − ᾱ_t).
        sqrt_alpha_prod_prev: √ᾱ_{t'}.
        direction_coeff: √(1 − ᾱ_{t'} − σ_t²), the factor of ε̂ ("the direction pointing to x_t").
        std_dev: σ_t = η √(β̃ of the step) (eq. 16 of Song et al.).
    """

    sqrt_alpha_prod: torch.Tensor
    sqrt_beta_prod: torch.Tensor
    sqrt_alpha_prod_prev: torch.Tensor
    direction_coeff: torch.Tensor
    std_dev: torch.Tensor


class _DDIMStep:
    """x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) ε̂ + σ_t z (Song et al. 2021, eq. 12), as `DDIMScheduler.step`."""

    def __init__(self, scheduler: DDIMScheduler, eta: float):
        self.scheduler, self.eta = scheduler, eta

    def _coefficients(self, timestep: int) -> DDIMCoefficients:
        scheduler = self.scheduler
        prev_timestep = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        alpha_prod_t = scheduler.alphas_cumprod[timestep]
        alpha_prod_t_prev = (
            scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
        )
        sqrt_alpha_prod, sqrt_beta_prod = sqrt_alphas(alpha_prod_t)
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)  # its `_get_variance`
        std_dev_t = self.eta * variance ** (0.5)
        return DDIMCoefficients(
            sqrt_alpha_prod=sqrt_alpha_prod,
            sqrt_beta_prod=sqrt_beta_prod,
            sqrt_alpha_prod_prev=alpha_prod_t_prev ** (0.5),
            direction_coeff=(1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5),
            std_dev=std_dev_t,
        )

    def tables(self) -> tuple[DDIMCoefficients, torch.Tensor]:
        coefficients = DDIMCoefficients.stack([self._coefficients(t) for t in self.scheduler.timesteps.tolist()])
        return coefficients, coefficients.std_dev

    def draws_noise(self, timestep: int) -> bool:
        return self.eta > 0  # as `DDIMScheduler.step`: a draw at every step when η > 0, none when η = 0

    def __call__(self, c: DDIMCoefficients, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:  # fmt: skip
        config = self.scheduler.config
        pred_original_sample = original_sample(config.prediction_type, c, model_output, x)
        pred_epsilon = predicted_noise(config.prediction_type, c, model_output, x, pred_original_sample)
        if config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-config.clip_sample_range, config.clip_sample_range)
        prev_sample = c.sqrt_alpha_prod_prev * pred_original_sample + c.direction_coeff * pred_epsilon
        return prev_sample + sigma * noise if self.eta > 0 else prev_sample


class GraphedReverseProcess:
    """The reverse process for one batch shape and chain length, one step captured as a CUDA graph.

    Args:
        denoise: the network, `(x_t, t) -> ε_θ(x_t, t)` (or x̂_0, v, μ̃ by the scheduler's `prediction_type`).
        scheduler: the scheduler whose chain is sampled, DDPM's or DDIM's (see `can_graph`), its `set_timesteps`
            already called.
        shape: (N, C, H, W) of x_t.
        dtype: x_t's dtype.
        device: where x_t lives; a CUDA device to capture.
        capture: record the step as a CUDA graph (False: run the same buffered step eagerly).
        warmup_steps: eager steps run on a side stream before capturing (for lazy initialisation and compilation).
        eta: DDIM's η (default 0, as `DDIMScheduler.step`'s); DDIM only.
    """

    def __init__(
        self,
        denoise: Denoiser,
        scheduler: SchedulerMixin,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        capture: bool = True,
        warmup_steps: int = 3,
        eta: float | None = None,
    ):
        if not can_graph(scheduler):
            raise ValueError(
                f"GraphedReverseProcess needs DDPM's step with a fixed variance or DDIM's, without thresholding, "
                f"not the {type(scheduler).__name__} with this configuration (see can_graph)."
            )
        if eta is not None and not isinstance(scheduler, DDIMScheduler):
            raise ValueError(f"eta is DDIM's noise scale; the {type(scheduler).__name__} takes none.")
        if capture and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}.")
        self.denoise, self.scheduler, self.shape, self.device = denoise, scheduler, tuple(shape), device
        self.rule = _DDPMStep(scheduler) if isinstance(scheduler, DDPMScheduler) else _DDIMStep(scheduler, eta or 0.0)
        self.num_steps = len(scheduler.timesteps)
        self.x = torch.zeros(shape, dtype=dtype, device=device)  # x_t, overwritten in place by x_{t'}
        self.noise = torch.zeros(shape, dtype=dtype, device=device)  # z of the current step (0 where none is drawn)
        self.index = torch.zeros(1, dtype=torch.long, device=device)  # i: the step, t = timesteps[i]
        # the tables the step reads, indexed by i; `_load_chain` refills them in place for each run
        timesteps, coefficients, noise_scales = self._chain_tables()
        self.timesteps, self.coefficients = timesteps.to(device), coefficients.to(device)
        self.noise_scales = noise_scales.to(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture(warmup_steps)

    def _chain_tables(self) -> tuple[torch.Tensor, Coefficients, torch.Tensor]:
        """The scheduler's current chain on the host: its timesteps, each step's coefficients, and σ_t."""
        timesteps = self.scheduler.timesteps.tolist()
        if len(timesteps) != self.num_steps:
            raise ValueError(
                f"this graph samples chains of {self.num_steps} steps, the scheduler has {len(timesteps)}."
            )
        return torch.tensor(timesteps), *self.rule.tables()

    def _load_chain(self) -> None:
        """Copy the scheduler's current chain into the step's tables, in place (the graph reads their memory)."""
        timesteps, coefficients, noise_scales = self._chain_tables()
        self.timesteps.copy_(timesteps)
        self.coefficients.copy_(coefficients)
        self.noise_scales.copy_(noise_scales)

    def _step(self) -> None:
        """x ← the step from x for the step `self.index`, all on the device: the scheduler's arithmetic on its
        float32 coefficients made 0-dim, so that every operation is the eager step's."""
        t = self.timesteps.index_select(0, self.index)
        model_output = self.denoise(self.x, t)
        sigma = self.noise_scales.index_select(0, self.index)[0]
        self.x.copy_(self.rule(self.coefficients.select(self.index), sigma, model_output, self.x, self.noise))

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
            generator: the source of every z, drawn as the scheduler's `step` draws it (one draw of x_t's shape per
                step that adds noise).
            progress: wraps the steps (a progress bar).
        """
        if tuple(image.shape) != self.shape:
            raise ValueError(f"this graph samples batches of shape {self.shape}, got {tuple(image.shape)}.")
        self._load_chain()
        self.x.copy_(image)
        for i, t in enumerate(progress(self.scheduler.timesteps.tolist())):
            if self.rule.draws_noise(t):
                self.noise.copy_(randn_tensor(self.shape, generator=generator, device=self.device, dtype=self.x.dtype))
            else:
                self.noise.zero_()
            self.index.fill_(i)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        return self.x.clone()
