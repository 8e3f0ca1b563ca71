"""Specification of `ddpm_hf.likelihood`: each term of the bound for each variance type, against its closed form.

The expected values are written from the paper's equations with this file's own float64 schedule (β_t, ᾱ_t and β̃_t
of eq. 4 and 7), not from the package's tables.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_hf import DDPMScheduler, likelihood
from ddpm_hf.scheduler import VARIANCE_TYPES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (2, 3, 4, 4)
LEARNED_OUTPUT = {"learned": 3e-4, "learned_range": -0.4}  # what a network with a learned variance outputs here


def schedule(scheduler: DDPMScheduler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """β_t, ᾱ_t and β̃_t (eq. 7, ᾱ_{−1} = 1) in float64 from the scheduler's betas."""
    beta = scheduler.betas.double()
    alphas_cumprod = torch.cumprod(1 - beta, 0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return beta, alphas_cumprod, beta * (1 - previous) / (1 - alphas_cumprod)


def log_variance(variance_type: str, scheduler: DDPMScheduler, t: int) -> float:
    """log σ_t² as documented; at the decoder step t = 0 β̃_1 stands in for β̃_0 = 0, for "fixed_large" too."""
    beta, _, beta_tilde = schedule(scheduler)
    small = beta_tilde[max(t, 1)].log().item()
    if variance_type.startswith("fixed_small"):
        return small
    if variance_type.startswith("fixed_large"):
        return small if t == 0 else beta[t].log().item()
    if variance_type == "learned":  # the output is σ_t² itself
        return math.log(LEARNED_OUTPUT["learned"])
    f = (LEARNED_OUTPUT["learned_range"] + 1) / 2  # log σ² = f log β_t + (1 − f) log β̃_t
    return f * beta[t].log().item() + (1 - f) * small


def exact_output(variance_type: str, x_0: torch.Tensor, scheduler: DDPMScheduler, t: int):
    """x_t and the output of a network whose ε is exact (ε = 0 here, so x_t = √ᾱ_t x_0 and x̂_0 = x_0)."""
    _, alphas_cumprod, _ = schedule(scheduler)
    x_t = alphas_cumprod[t].sqrt() * x_0
    output = torch.zeros_like(x_0)
    if variance_type in LEARNED_OUTPUT:
        output = torch.cat([output, torch.full_like(x_0, LEARNED_OUTPUT[variance_type])], dim=1)
    return x_t, output


def eight_bit_images() -> torch.Tensor:
    levels = torch.randint(0, 256, SHAPE, generator=torch.Generator().manual_seed(0))
    levels[0, 0, 0, :2] = torch.tensor([0, 255])  # both open end bins
    return levels.double() / 127.5 - 1


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
def test_with_the_exact_mean_each_kl_term_is_the_variance_mismatch(variance_type):
    """μ_θ = μ̃_t, so L_{t−1} = ½ (log(σ_t²/β̃_t) + β̃_t/σ_t² − 1) per dimension (eq. 5), in bits."""
    scheduler = DDPMScheduler(variance_type=variance_type)
    x_0 = eight_bit_images()
    for t in (1, 250, 999):
        x_t, output = exact_output(variance_type, x_0, scheduler, t)
        beta_tilde = schedule(scheduler)[2][t].item()
        ratio = math.exp(log_variance(variance_type, scheduler, t)) / beta_tilde
        expected = 0.5 * (math.log(ratio) + 1 / ratio - 1) / math.log(2)
        got = likelihood.kl_term(scheduler, scheduler.chain_coefficients(t, x_t), output, x_0, x_t)
        torch.testing.assert_close(got, torch.full((2,), expected, dtype=torch.float64), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
def test_with_the_exact_mean_the_decoder_is_the_bin_of_each_pixel_under_its_sigma_1(variance_type):
    """L_0 = −log ∫ N(x; x_0, σ_1²) over the pixel's bin (eq. 13), the end bins open, with each type's σ_1."""
    scheduler = DDPMScheduler(variance_type=variance_type)
    x_0 = eight_bit_images()
    x_1, output = exact_output(variance_type, x_0, scheduler, 0)
    sigma = math.exp(0.5 * log_variance(variance_type, scheduler, 0))
    phi = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    h = 1 / 255
    expected = []
    for image in x_0:
        probabilities = [
            (1.0 if x > 1 - h else phi(h / sigma)) - (0.0 if x < -1 + h else phi(-h / sigma))
            for x in image.flatten().tolist()
        ]
        expected.append(-sum(math.log(p) for p in probabilities) / len(probabilities) / math.log(2))
    got = likelihood.decoder_nll(scheduler, scheduler.chain_coefficients(0, x_1), output, x_0, x_1)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=0)


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_terms_of_one_timestep_are_the_batched_terms(variance_type, dtype):
    """`variational_bound` evaluates one t for the whole batch (the decoder only at t = 0); L_vlb training mixes
    timesteps in a batch (`vlb_terms`). Both give the same term for the same image and t, in either precision."""
    scheduler = DDPMScheduler(num_train_timesteps=100, variance_type=variance_type)
    timesteps = torch.tensor([0, 1, 37, 99])
    x_0 = (torch.randint(0, 256, (4, 3, 4, 4), generator=torch.Generator().manual_seed(1)) / 127.5 - 1).to(dtype)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    x_t = scheduler.add_noise(x_0, noise, timesteps)
    channels = 6 if variance_type in LEARNED_OUTPUT else 3
    output = torch.randn((4, channels, 4, 4), generator=torch.Generator().manual_seed(3), dtype=dtype) * 0.5
    if variance_type == "learned":
        output[:, 3:] = output[:, 3:].abs() * 1e-2
    batched = likelihood.vlb_terms(scheduler, output, x_0, x_t, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        term = likelihood.decoder_nll if t == 0 else likelihood.kl_term
        alone = term(scheduler, scheduler.chain_coefficients(t, x_t), output[i : i + 1], x_0[i : i + 1], x_t[i : i + 1])
        torch.testing.assert_close(alone, batched[i : i + 1], rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    assert batched.dtype == dtype and torch.isfinite(batched).all() and (batched > 0).all()


def test_the_prior_term_is_the_kl_of_q_x_T_given_x_0_to_the_standard_normal():
    scheduler = DDPMScheduler()
    x_0 = eight_bit_images()
    v = 1 - schedule(scheduler)[1][-1]
    expected = (0.5 * (-torch.log(v) + v + (1 - v) * x_0**2 - 1)).flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(likelihood.prior_bpd(scheduler, x_0), expected, rtol=1e-9, atol=0)


def test_the_posterior_at_t_0_has_the_decoder_steps_variance():
    """q(x_{−1} | x_0, x_1) does not exist (β̃_0 = 0): `q_posterior` returns the decoder step's β̃_1 there."""
    scheduler = DDPMScheduler()
    x = torch.zeros(SHAPE, dtype=torch.float64)
    _, variance, log_variance_ = scheduler.q_posterior(x, x, torch.tensor([0, 1]))
    beta_tilde = schedule(scheduler)[2]
    torch.testing.assert_close(variance.flatten(), beta_tilde[[1, 1]], rtol=1e-9, atol=0)
    torch.testing.assert_close(log_variance_.flatten(), beta_tilde[[1, 1]].log(), rtol=1e-9, atol=0)
