"""Samplers: the diffusers schedulers `DDPMPipeline` samples with, by name, and what each costs.

A DDPM's network predicts ε (or x_0, v) at the timesteps it was trained on, so any diffusers scheduler built from the
training scheduler's configuration samples from it, with fewer network evaluations than DDPM's 1000 ancestral steps:

    scheduler = scheduler_from_name("ddim", pipeline.scheduler.config)   # or "dpm-solver++", "euler", "DDIMScheduler"
    pipeline.scheduler = scheduler
    images = pipeline(num_inference_steps=50, eta=0.0).images             # eta: DDIM only

`DDPMPipeline` follows each scheduler's contract (see its `__call__`). What is DDPM's own stays with
`ddpm_hf.DDPMScheduler`: the respaced chain (`respace=True`), the variational bound, and the figures that diffuse
an image with q(x_t | x_0) (Fig. 7 and 8).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any

import diffusers
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .scheduler import DDPMScheduler

__all__ = [
    "SCHEDULER_NAMES",
    "add_scheduler_arguments",
    "check_eta",
    "check_progressive_generation",
    "check_respace",
    "network_evaluations",
    "predicts_original_sample",
    "sampler_record",
    "scheduler_from_name",
    "step_arguments",
    "training_scheduler",
]

# name → (diffusers class name, configuration overrides). "ddpm" is this package's DDPMScheduler (diffusers' own,
# plus the paper's bound and respacing).
_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm-solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}
SCHEDULER_NAMES = tuple(_SCHEDULERS)


def _known_names() -> str:
    return f"{', '.join(SCHEDULER_NAMES)}, or a diffusers scheduler class name such as DDIMScheduler"


def _scheduler_class(name: str) -> tuple[type[SchedulerMixin], dict[str, Any]]:
    """The class and configuration overrides of a scheduler `name` (see `scheduler_from_name`)."""
    if name in _SCHEDULERS:
        class_name, overrides = _SCHEDULERS[name]
        return (DDPMScheduler if name == "ddpm" else getattr(diffusers, class_name)), overrides
    try:  # diffusers resolves its classes lazily: a name it lacks, or one whose backend is missing, raises here
        found = getattr(diffusers, name) if name.isidentifier() and name.endswith("Scheduler") else None
    except (AttributeError, ImportError, RuntimeError):
        found = None
    if not (isinstance(found, type) and issubclass(found, SchedulerMixin)):
        raise ValueError(f"unknown scheduler {name!r}: use {_known_names()}.")
    return (DDPMScheduler if found is diffusers.DDPMScheduler else found), {}


def check_eta(scheduler: SchedulerMixin, eta: float | None) -> None:
    """Refuse an `eta` (DDIM's η, the noise scale of its step) for a scheduler whose step has no such argument,
    and a negative or non-finite one.

    Raises:
        ValueError: naming the scheduler or the value.
    """
    if eta is None:
        return
    if "eta" not in inspect.signature(scheduler.step).parameters:
        raise ValueError(f"eta (--eta) is DDIM's noise scale; the {type(scheduler).__name__} takes none.")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta (--eta) must be a finite number ≥ 0, got {eta!r}.")


def training_scheduler(scheduler: SchedulerMixin) -> DDPMScheduler:
    """The DDPM of a sampler's configuration (which keeps the training scheduler's fields, σ_t² included): what the
    variational bound and the figures that diffuse with q(x_t | x_0) need, whatever the pipeline samples with."""
    return scheduler if isinstance(scheduler, DDPMScheduler) else DDPMScheduler.from_config(scheduler.config)


def check_progressive_generation(scheduler: SchedulerMixin) -> None:
    """Refuse Fig. 6 (x̂_0 along the chain) for a scheduler whose step does not return x̂_0."""
    if not predicts_original_sample(scheduler):
        raise ValueError(
            f"progressive generation (Fig. 6) shows the prediction x̂_0 of each step, which the "
            f"{type(scheduler).__name__} does not return: use ddpm, ddim, euler, euler-ancestral or heun."
        )


def check_respace(scheduler: SchedulerMixin, respace: bool) -> None:
    """Refuse `respace` (DDPM's respaced chain, `DDPMScheduler.set_timesteps(respace=True)`) for other schedulers."""
    if respace and not isinstance(scheduler, DDPMScheduler):
        raise ValueError(
            f"respace=True (--respace) samples DDPM's respaced chain, but the scheduler is the "
            f"{type(scheduler).__name__}: drop it (this scheduler spaces its own steps)."
        )


def scheduler_from_name(name: str, config: Mapping[str, Any], eta: float | None = None) -> SchedulerMixin:
    """The scheduler `name` built from `config` (the training scheduler's configuration), as diffusers' users do
    with `DDIMScheduler.from_config(pipeline.scheduler.config)`.

    Args:
        name: one of `SCHEDULER_NAMES` (ddpm, ddim, dpm-solver++, unipc, euler, euler-ancestral, heun, pndm) or a
            diffusers scheduler class name ("DDIMScheduler"; "DDPMScheduler" gives `ddpm_hf.DDPMScheduler`).
        config: the configuration to build it from (T, the β schedule, the prediction type, ...).
        eta: DDIM's η, checked here (`check_eta`) and passed to the pipeline's call, not stored in the scheduler.

    Raises:
        ValueError: an unknown name (the known ones are listed), or an eta the scheduler does not take.
    """
    cls, overrides = _scheduler_class(name)
    # Without diffusers' private keys: `_use_default_values` would drop the training fields the new class lacks
    # (σ_t² ...), which the bound and the samples manifest need, from a scheduler built in memory but not from a file.
    public = {key: value for key, value in config.items() if not key.startswith("_")}
    scheduler = cls.from_config(public, **overrides)
    check_eta(scheduler, eta)
    return scheduler


def step_arguments(
    scheduler: SchedulerMixin, generator: torch.Generator | list[torch.Generator] | None, eta: float | None
) -> dict[str, Any]:
    """The keyword arguments of `scheduler.step` beyond (model_output, t, x_t): the generator for schedulers that
    draw noise (all of diffusers' draw it with `randn_tensor`, which takes one generator per image too), and η."""
    parameters = inspect.signature(scheduler.step).parameters
    arguments: dict[str, Any] = {"generator": generator} if "generator" in parameters else {}
    if eta is not None:
        arguments["eta"] = eta
    return arguments


def network_evaluations(scheduler: SchedulerMixin, num_inference_steps: int, **set_timesteps: Any) -> int:
    """NFE: the network evaluations of one sample with `num_inference_steps` steps, one per entry of the
    scheduler's timesteps (Heun's list repeats each inner timestep: 2 per step; PNDM adds its Runge-Kutta warm-up)."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps, **set_timesteps)
    return len(scheduler.timesteps)


def predicts_original_sample(scheduler: SchedulerMixin) -> bool:
    """Whether the scheduler's step returns x̂_0 (`pred_original_sample`), found by one step on zeros of a copy."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)  # few steps break some (PNDM's warm-up needs more)
    zeros = torch.zeros(1, 1, 2, 2)
    output = scheduler.step(zeros, scheduler.timesteps[0], zeros)
    return getattr(output, "pred_original_sample", None) is not None


def sampler_record(scheduler: SchedulerMixin, num_inference_steps: int, eta: float | None = None) -> dict[str, Any]:
    """What a report or model card says of a sampler: the scheduler class, the steps, η and the NFE."""
    return {
        "scheduler": type(scheduler).__name__,
        "num_inference_steps": num_inference_steps,
        "eta": eta,
        "nfe": network_evaluations(scheduler, num_inference_steps),  # DDPM's respaced chain has as many steps
    }


def scheduler_name(text: str) -> str:
    """An argparse type: a known scheduler name (a usage error lists them)."""
    try:
        _scheduler_class(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removesuffix(".")) from None
    return text


def add_scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    """`--scheduler NAME` and `--eta`, for `ddpm-hf sample`, `evaluate` and `figures`."""
    parser.add_argument(
        "--scheduler",
        type=scheduler_name,
        default=None,
        metavar="NAME",
        help=f"sample with this scheduler, built from the pipeline's configuration: {_known_names()} "
        "(default: the pipeline's own)",
    )
    parser.add_argument(
        "--eta", type=float, default=None, help="DDIM's η, 0 (deterministic) to 1 (DDPM-like); DDIM only (default: 0)"
    )
