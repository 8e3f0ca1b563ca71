"""DDPM's variational bound term by term (Ho et al. 2020, eq. 5 and 13) and the training losses of its Table 2.

    L = L_T + Σ_{t>1} L_{t−1} + L_0, an upper bound on −log p_θ(x_0):
    L_T     = D_KL(q(x_T | x_0) ‖ N(0, I))                               the prior term          (`prior_bpd`)
    L_{t−1} = D_KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), t > 1     the denoising terms      (`kl_term`)
    L_0     = −log p_θ(x_0 | x_1), the discretized Gaussian of eq. 13    the decoder              (`decoder_nll`)

Indices are diffusers' (paper step t is index t − 1): the KL terms are at t = 1 … T−1 and the decoder at t = 0. Every
term is in bits per dimension per image (nats summed over pixels, divided by their number and by log 2). Rate and
distortion (the paper's Table 4) are L_T + Σ L_{t−1} and L_0.

q(x_{t−1} | x_t, x_0) and p_θ(x_{t−1} | x_t) come from the scheduler (`DDPMScheduler.posterior_mean`,
`DDPMScheduler.reverse_gaussian`), which writes μ̃_t, x̂_0 and σ_t² once for sampling and for this module. The
decoder's σ_1² at t = 0 is the paper's reference code's (see `DDPMScheduler.chain`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from .gaussians import NATS_PER_BIT, discretized_gaussian_log_likelihood, normal_kl

if TYPE_CHECKING:
    from .scheduler import DDPMScheduler, ModelPrediction, StepCoefficients

__all__ = ["LOSS_TYPES", "kl_term", "decoder_nll", "prior_bpd", "vlb_terms", "training_target", "training_loss"]

LOSS_TYPES = ("simple", "vlb")


def _bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Elementwise nats → bits per dimension of each image, shape (B,)."""
    return nats.flatten(1).mean(dim=1) / NATS_PER_BIT


def _kl_nats(
    scheduler: DDPMScheduler, c: StepCoefficients, model: ModelPrediction, x_0: torch.Tensor, x_t: torch.Tensor
) -> torch.Tensor:
    """D_KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) elementwise, in nats (eq. 5)."""
    true_mean = scheduler.posterior_mean(c, x_0, x_t)  # μ̃_t(x_t, x_0)   (eq. 7)
    return normal_kl(true_mean, torch.log(c.posterior_variance), model.mean, model.log_variance)


def _decoder_nats(model: ModelPrediction, x_0: torch.Tensor) -> torch.Tensor:
    """−log p_θ(x_0 | x_1) elementwise, in nats: the bin of x_0 under N(μ_θ(x_1, 1), σ_1²)   (eq. 13)."""
    return -discretized_gaussian_log_likelihood(x_0, means=model.mean, log_scales=0.5 * model.log_variance)


def kl_term(
    scheduler: DDPMScheduler,
    c: StepCoefficients,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    x_t: torch.Tensor,
) -> torch.Tensor:
    """L_{t−1} per image in bits/dim, for t > 0 and `c = scheduler.chain_coefficients(t, x_t)`."""
    model = scheduler.reverse_gaussian(c, model_output, x_t)
    return _bits_per_dim(_kl_nats(scheduler, c, model, x_0, x_t))


def decoder_nll(
    scheduler: DDPMScheduler,
    c: StepCoefficients,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    x_1: torch.Tensor,
) -> torch.Tensor:
    """L_0 per image in bits/dim, for `c = scheduler.chain_coefficients(0, x_1)` and x_0 on the 8-bit grid."""
    return _bits_per_dim(_decoder_nats(scheduler.reverse_gaussian(c, model_output, x_1), x_0))


def prior_bpd(scheduler: DDPMScheduler, x_0: torch.Tensor) -> torch.Tensor:
    """L_T = D_KL(N(√ᾱ_T x_0, (1 − ᾱ_T) I) ‖ N(0, I)) per image in bits/dim (eq. 4, 5)."""
    c = scheduler.chain_coefficients(scheduler.config.num_train_timesteps - 1, x_0)
    zero = torch.zeros((), dtype=x_0.dtype, device=x_0.device)
    kl = normal_kl(c.sqrt_alpha_prod * x_0, 2 * torch.log(c.sqrt_beta_prod), zero, zero)
    return _bits_per_dim(kl)


def vlb_terms(
    scheduler: DDPMScheduler,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """One term of the bound per image, in bits/dim, for a batch of timesteps (as L_vlb training draws them).

    L_{t−1} (a KL) where t > 0 and L_0 (the decoder) where t = 0; `x_0` must lie on the 8-bit grid in [−1, 1] for
    L_0 to be a likelihood. Both are evaluated for the whole batch and one is kept per image, which needs no host
    synchronisation; `ddpm_hf.metrics.variational_bound`, whose t is the same for the batch, evaluates only one.

    Returns:
        A tensor of shape (B,).
    """
    t = scheduler._check_timesteps(timesteps)
    c = scheduler.chain_coefficients(t, x_t)
    model = scheduler.reverse_gaussian(c, model_output, x_t)
    is_decoder = (t == 0).to(x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
    return _bits_per_dim(torch.where(is_decoder, _decoder_nats(model, x_0), _kl_nats(scheduler, c, model, x_0, x_t)))


def training_target(
    scheduler: DDPMScheduler, x_0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the network regresses onto: ε (eq. 14), x_0, v, or μ̃_t(x_t, x_0) (Table 2), by `prediction_type`."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x_0
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x_0, noise, timesteps)
    return scheduler.q_posterior(x_0, scheduler.add_noise(x_0, noise, timesteps), timesteps)[0]


def training_loss(
    scheduler: DDPMScheduler,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    loss_type: Literal["simple", "vlb"] = "simple",
) -> torch.Tensor:
    """The per-image training loss of Table 2, for x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

    * "simple": the unweighted mean squared error between the output and `training_target` — L_simple of eq. 14
      for ε-prediction, the "unweighted MSE" rows of Table 2 for the others. With a learned variance only the mean
      part is regressed.
    * "vlb": the true bound term L_{t−1} of `vlb_terms` in bits/dim (the "L" rows of Table 2); with t uniform over
      T steps, T · E_t[loss] + L_T is the bound.

    Returns:
        A tensor of shape (B,).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; choose one of {list(LOSS_TYPES)}.")
    x_t = scheduler.add_noise(x_0, noise, timesteps)
    if loss_type == "vlb":
        return vlb_terms(scheduler, model_output, x_0, x_t, timesteps)
    mean_output, _ = scheduler._split_variance(model_output, x_t)
    target = training_target(scheduler, x_0, noise, timesteps)
    return (mean_output - target).pow(2).flatten(1).mean(dim=1)
